"""The Hard ASH experiments: quick runs end to end on real MNIST, method names, the z_k
effects."""

import argparse
import json

import numpy as np
import pytest

from experiments import hard_ash, hard_ash_permuted
from jaxcl import checkpoint, cli, engine


@pytest.mark.needs_data("mnist")
def test_quick_run_writes_the_contract_files(tmp_path):
    rows = cli.run_experiment(
        hard_ash.EXPERIMENT,
        ["--quick", "--seeds", "2", "--out", str(tmp_path), "--methods", "hard_ash+adagrad"],
    )
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["experiment"] == "hard_ash" and len(payload["rows"]) == 1
    metric = payload["rows"][0]["metrics"]["pooled_acc"]
    assert len(metric["per_seed"]) == 2 and 0.0 <= metric["mean"] <= 1.0
    assert (tmp_path / "table.md").read_text().count("hard_ash+adagrad") == 1
    assert (tmp_path / "accuracy_after_each_task.png").stat().st_size > 0
    assert rows[0]["diverged_seeds"] == {}


@pytest.mark.needs_data("mnist")
def test_seed_alone_matches_seed_in_a_vmapped_run():
    run = hard_ash.build_run(hard_ash.configure(hard_ash.METHODS["hard_ash+adagrad"], quick=True))
    alone = run(engine.seed_keys([1]))
    together = run(engine.seed_keys([0, 1, 2]))
    np.testing.assert_allclose(alone.pooled_accuracy[0], together.pooled_accuracy[1], atol=5e-4)


def test_unknown_method_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match="valid names: hard_ash\\+adagrad"):
        cli.run_experiment(
            hard_ash.EXPERIMENT, ["--quick", "--out", str(tmp_path), "--methods", "hard_ash+lion"]
        )


@pytest.mark.needs_data("mnist")
def test_rerunning_the_same_command_reuses_finished_methods(tmp_path):
    argv = ["--quick", "--seeds", "2", "--out", str(tmp_path), "--methods", "relu+sgd"]
    first = cli.run_experiment(hard_ash.EXPERIMENT, argv)
    group = tmp_path / "checkpoints" / cli.grid_name(["relu+sgd"]) / "seeds_0-1"  # one cell
    assert (group / "results.npz").exists() and not (group / "steps").exists()
    second = cli.run_experiment(hard_ash.EXPERIMENT, argv)
    assert first[0]["metrics"] == second[0]["metrics"]


def test_config_holds_the_resolved_hyperparameters():
    config = hard_ash.configure(hard_ash.METHODS["topk_subtract+adagrad"], quick=True)
    assert dict(config.optimizer_hparams) == hard_ash.PINNED_OPTIMIZERS["adagrad"]
    assert dict(config.activation_hparams) == {"k": 6, "stop_gradient": False, "clip_max": 2.0}


def test_header_states_the_pinned_values_used():
    quick, full = (argparse.Namespace(seeds=2, quick=q) for q in (True, False))
    assert "Pinned: topk k=64, lwta groups=50." in hard_ash.header([], full)
    assert "Pinned: topk k=6, lwta groups=32." in hard_ash.header([], quick)  # 64 units


@pytest.mark.needs_data("mnist")
def test_runs_merge_and_a_changed_hyperparameter_is_refused(tmp_path, monkeypatch):
    argv = ["--quick", "--seeds", "1", "--out", str(tmp_path), "--methods"]
    cli.run_experiment(hard_ash.EXPERIMENT, [*argv, "relu+sgd"])
    rows = cli.run_experiment(hard_ash.EXPERIMENT, [*argv, "hard_ash+adagrad"])
    assert [r["method"] for r in rows] == ["hard_ash+adagrad", "relu+sgd"]  # the grid's order
    payload = json.loads((tmp_path / "results.json").read_text())
    assert [r["method"] for r in payload["rows"]] == ["hard_ash+adagrad", "relu+sgd"]
    assert payload["rows"][1]["config"]["optimizer_hparams"] == [["learning_rate", 4e-4]]
    table = (tmp_path / "table.md").read_text()
    assert "| hard_ash+adagrad |" in table and "| relu+sgd |" in table
    # The finished relu+sgd read back from its checkpoint after an edit of its learning rate.
    monkeypatch.setitem(hard_ash.PINNED_OPTIMIZERS, "sgd", {"learning_rate": 1e-3})
    with pytest.raises(  # the learning rate is traced: the grid's values changed
        checkpoint.ConfigMismatchError,
        match=r"grid: checkpoint has .*'learning_rate': \[0\.000399.*now .*'learning_rate': "
        r"\[0\.00100",
    ):
        cli.run_experiment(hard_ash.EXPERIMENT, [*argv, "relu+sgd"])


@pytest.mark.needs_data("mnist")
def test_a_grid_of_activations_gives_each_cells_run_alone():
    names = ["hard_ash+sgd", "relu+sgd", "elephant+sgd"]
    configs = {n: hard_ash.configure(hard_ash.METHODS[n], quick=True) for n in names}
    scenario = hard_ash.split_mnist(configs[names[0]])
    run = hard_ash.grid_on(scenario, configs)
    assert dict(run.grid.values)["activation"].tolist() == [0, 1, 2]
    assert sorted(run.grid.values) == ["a", "activation", "alpha", "learning_rate", "z_k"]
    grid = run(engine.seed_keys([0, 1]))
    assert run.num_compiles == 1
    for name, config in configs.items():
        alone = hard_ash.run_on(scenario, config)(engine.seed_keys([0, 1]))
        # Counts equal; the mean training loss may differ in its last bit (6 rows vs 2).
        np.testing.assert_array_equal(grid.cell(name).correct, alone.correct)
        np.testing.assert_allclose(grid.cell(name).train_loss, alone.train_loss, rtol=1e-6)


def test_a_grid_refuses_cells_that_differ_in_a_structural_hyperparameter():
    sgd = hard_ash.Config("relu", "sgd")
    with pytest.raises(ValueError, match="the structural hyperparameters must be the same in"):
        hard_ash.grid_on(None, {"a": sgd, "b": hard_ash.Config("relu", "sgd", hidden=(32,))})
    with pytest.raises(ValueError, match="topk_mask's structural hyperparameters must be the"):
        topk = [hard_ash.Config("topk_mask", "sgd", activation_hparams=(("k", k),)) for k in (6, 7)]
        hard_ash.grid_on(None, {"a": sgd, "b": topk[0], "c": topk[1]})


# ----------------------------------------------------------------- Permuted MNIST (z_k sweep)


@pytest.mark.needs_data("mnist")
def test_permuted_quick_run_writes_the_contract_files(tmp_path):
    methods = "hard_ash_zk0+adagrad,hard_ash+adagrad"
    argv = ["--quick", "--seeds", "2", "--out", str(tmp_path), "--methods", methods]
    rows = cli.run_experiment(hard_ash_permuted.EXPERIMENT, argv)
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["experiment"] == "hard_ash_permuted"
    assert payload["config"]["num_tasks"] == 3
    assert [r["method"] for r in payload["rows"]] == ["hard_ash_zk0+adagrad", "hard_ash+adagrad"]
    for row in payload["rows"]:
        assert np.asarray(row["new_task_acc"]).shape == (2, 3)
        assert np.asarray(row["final_task_acc"]).shape == (2, 3)
        for name in hard_ash_permuted.TABLE_METRICS:
            assert len(row["metrics"][name]["per_seed"]) == 2
        # learning_acc is the mean of the new-task curve, per seed.
        np.testing.assert_allclose(
            row["metrics"]["learning_acc"]["per_seed"], np.mean(row["new_task_acc"], axis=1)
        )
    zk = dict(payload["rows"][0]["config"]["activation_hparams"])
    assert zk == {"alpha": 3.0, "z_k": 0.0}
    table = (tmp_path / "table.md").read_text()
    assert "| hard_ash_zk0+adagrad |" in table and "protocol ours" in table
    assert "- hard_ash+adagrad − hard_ash_zk0+adagrad: plasticity" in table
    assert (tmp_path / "plasticity_and_stability.png").stat().st_size > 0
    assert rows[0]["diverged_seeds"] == {}


@pytest.mark.needs_data("mnist")
def test_permuted_run_applies_permutations_per_batch():
    config = hard_ash_permuted.METHODS["relu+sgd"]
    run = hard_ash_permuted.build_run(hard_ash_permuted.configure(config, quick=True, num_tasks=4))
    scenario = run.scenario
    # One copy of MNIST, one permutation per task: no task is materialised.
    assert scenario.train_x.shape == (60000, 784) and scenario.input_perm.shape == (4, 784)
    assert len({tuple(p) for p in np.asarray(scenario.input_perm)}) == 4


def _row(method, learning_acc, acc):
    stats = {"learning_acc": learning_acc, "acc": acc}
    return {"method": method, "metrics": {k: {"per_seed": v} for k, v in stats.items()}}


def test_zk_effects_are_welch_differences_to_zk0():
    rows = [
        _row("hard_ash_zk0+adagrad", [0.5, 0.5], [0.6, 0.6]),
        _row("hard_ash+adagrad", [0.9, 0.8], [0.7, 0.6]),
        _row("relu+sgd", [0.1, 0.1], [0.1, 0.1]),  # not a z_k row: left out
    ]
    # plasticity: 0.85 − 0.5 = +0.35; Welch: var(a)/2 = 0.0025, var(b) = 0, dof 1,
    # t_{0.975,1} = 12.706, half = 12.706 · 0.05 = 0.635. stability: 0.65 − 0.6 = +0.05,
    # half = 12.706 · 0.05 = 0.635.
    assert hard_ash_permuted.zk_effects(rows) == (
        "\nz_k effect (Welch 95% CI, ours):\n"
        "- hard_ash+adagrad − hard_ash_zk0+adagrad: plasticity +35.0 ± 63.5, "
        "stability +5.0 ± 63.5 points\n"
    )
    assert hard_ash_permuted.zk_effects(rows[1:]) == ""  # no z_k = 0 reference row


@pytest.mark.parametrize("quick", [True, False])
def test_every_grid_cell_builds_a_valid_activation(quick):
    # The --quick grid once failed at its first LWTA cell: 50 groups do not divide 64 units.
    import jax.numpy as jnp

    from jaxcl.activations import get_activation

    for name, spec in hard_ash.METHODS.items():
        config = hard_ash.configure(spec, quick=quick)
        activation = get_activation(config.activation, **dict(config.activation_hparams))
        out = activation(jnp.ones((2, config.hidden[-1])))
        assert out.shape == (2, config.hidden[-1]), name
