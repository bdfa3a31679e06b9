"""The Hard ASH experiment end to end on real MNIST (quick configuration)."""

import json

import numpy as np
import pytest

from experiments import hard_ash
from jaxcl import checkpoint, engine

pytestmark = pytest.mark.needs_data("mnist")


def test_quick_run_writes_the_contract_files(tmp_path):
    rows = hard_ash.main(
        ["--quick", "--seeds", "2", "--out", str(tmp_path), "--methods", "hard_ash+adagrad"]
    )
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["experiment"] == "hard_ash" and len(payload["rows"]) == 1
    metric = payload["rows"][0]["metrics"]["pooled_acc"]
    assert len(metric["per_seed"]) == 2 and 0.0 <= metric["mean"] <= 1.0
    assert (tmp_path / "table.md").read_text().count("hard_ash+adagrad") == 1
    assert (tmp_path / "accuracy_after_each_task.png").stat().st_size > 0
    assert rows[0]["diverged_seeds"] == {}


def test_seed_alone_matches_seed_in_a_vmapped_run():
    run = hard_ash.build_run(hard_ash.config_for("hard_ash+adagrad", quick=True))
    alone = run(engine.seed_keys([1]))
    together = run(engine.seed_keys([0, 1, 2]))
    np.testing.assert_allclose(alone.pooled_accuracy[0], together.pooled_accuracy[1], atol=5e-4)


def test_unknown_method_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match="valid names: hard_ash\\+adagrad"):
        hard_ash.main(["--quick", "--out", str(tmp_path), "--methods", "hard_ash+lion"])


def test_rerunning_the_same_command_reuses_finished_methods(tmp_path):
    argv = ["--quick", "--seeds", "2", "--out", str(tmp_path), "--methods", "relu+sgd"]
    first = hard_ash.main(argv)
    group = tmp_path / "checkpoints" / "relu+sgd" / "seeds_0-1"
    assert (group / "results.npz").exists() and not (group / "steps").exists()
    second = hard_ash.main(argv)
    assert first[0]["metrics"] == second[0]["metrics"]


def test_config_holds_the_resolved_hyperparameters():
    config = hard_ash.config_for("topk_subtract+adagrad", quick=True)
    assert dict(config.optimizer_hparams) == hard_ash.OPTIMIZERS["adagrad"]
    assert dict(config.activation_hparams) == {"k": 6, "stop_gradient": False, "clip_max": 2.0}


def test_runs_merge_and_a_changed_hyperparameter_is_refused(tmp_path, monkeypatch):
    argv = ["--quick", "--seeds", "1", "--out", str(tmp_path), "--methods"]
    hard_ash.main([*argv, "relu+sgd"])
    rows = hard_ash.main([*argv, "hard_ash+adagrad"])
    assert [r["method"] for r in rows] == ["hard_ash+adagrad", "relu+sgd"]  # the grid's order
    payload = json.loads((tmp_path / "results.json").read_text())
    assert [r["method"] for r in payload["rows"]] == ["hard_ash+adagrad", "relu+sgd"]
    assert payload["rows"][1]["config"]["optimizer_hparams"] == [["learning_rate", 4e-4]]
    table = (tmp_path / "table.md").read_text()
    assert "| hard_ash+adagrad |" in table and "| relu+sgd |" in table
    # The finished relu+sgd read back from its checkpoint after an edit of its learning rate.
    monkeypatch.setitem(hard_ash.OPTIMIZERS, "sgd", {"learning_rate": 1e-3})
    with pytest.raises(
        checkpoint.ConfigMismatchError,
        match=r"optimizer_hparams: checkpoint has \[\['learning_rate', 0\.0004\]\], now "
        r"\[\['learning_rate', 0\.001\]\]",
    ):
        hard_ash.main([*argv, "relu+sgd"])
