"""The shared experiment loop on toy experiments: method choice, rows, merging, text, exits."""

import dataclasses
import json
import re

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcl import cli, data, engine, learners, scenarios
from jaxcl.checkpoint import ConfigMismatchError
from jaxcl.experiment import (
    Difference,
    Experiment,
    checklist,
    comparisons,
    difference,
    difference_table,
    differences,
    seed_means,
    seed_timing,
    seed_timing_extras,
)

# ------------------------------------------------------------- a toy without the engine


def measured(methods, args):
    """Each method's "per-seed" values: its spec times the seed index, plus ``--shift``."""
    for name, scale in methods:
        yield name, scale * np.arange(args.seeds) + args.shift


TOY = Experiment(
    name="toy",
    description="a toy",
    methods={"a": 1.0, "b": 2.0, "c": 3.0},
    execute=measured,
    default_methods=("a", "b"),
    quick_methods=("c",),
    method_sets={"odd": ("a", "c")},
    flags=lambda parser: parser.add_argument("--shift", type=cli.finite_float, default=0.0),
    derive=lambda args: {"offset": 10 * args.shift},
    run_config=lambda args: {"seeds": args.seeds, "shift": args.shift},
    row_metrics=lambda values, scale, args: {"value": values, "offset": values + args.offset},
    row_fields=lambda values, scale, args: {"scale": scale},
    metrics=("value",),
    paper={"b": {"value": 0.5}},
    header=lambda rows, args: f"Toy, {args.seeds} seeds.\n\n",
    findings=lambda rows, args: checklist({"a first": rows[0]["method"] == "a"}),
    curves=False,
    checkpoints=False,
    data=False,
)


def run_toy(tmp_path, *argv):
    return cli.run_experiment(TOY, [*map(str, argv), "--out", str(tmp_path)])


@pytest.mark.parametrize(
    ("argv", "chosen"),
    [
        ([], ["a", "b"]),  # default_methods
        (["--quick"], ["c"]),  # quick_methods
        (["--odd"], ["a", "c"]),  # a method set's flag
        (["--quick", "--odd"], ["a", "c"]),  # the set wins over quick_methods
        (["--methods", "c,a"], ["a", "c"]),  # --methods wins, in the table's order
    ],
)
def test_the_chosen_methods(argv, chosen, tmp_path):
    args = cli.experiment_args(TOY, [*argv, "--out", str(tmp_path)])
    assert cli.chosen_methods(TOY, args) == chosen


def test_derived_values_and_flags_reach_every_hook(tmp_path):
    args = cli.experiment_args(TOY, ["--shift", "0.5", "--out", str(tmp_path)])
    assert args.offset == 5.0 and args.shift == 0.5
    assert not hasattr(args, "data_dir")  # data=False
    assert args.no_checkpoint and args.seed_chunk == 0  # checkpoints=False: the defaults


def test_rows_text_and_files(tmp_path, capsys):
    rows = run_toy(tmp_path, "--seeds", "3", "--shift", "1")
    assert [r["method"] for r in rows] == ["a", "b"]
    a = rows[0]
    assert list(a) == ["method", "metrics", "scale", "seconds"]  # no config: a float spec
    assert a["metrics"]["value"]["per_seed"] == [1.0, 2.0, 3.0]
    assert a["metrics"]["offset"]["per_seed"] == [11.0, 12.0, 13.0]
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["experiment"] == "toy" and payload["config"] == {"seeds": 3, "shift": 1.0}
    assert payload["rows"] == json.loads(json.dumps(rows))
    text = (tmp_path / "table.md").read_text()
    assert text.startswith("Toy, 3 seeds.\n\n| method | value (%) | value paper |")
    assert "| b | 300.0 ± 496.8 | 50.0 |" in text  # percent: fractions by default
    assert text.endswith("\n- a first: yes\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json", "table.md"]
    out = capsys.readouterr().out
    assert out.startswith("a: value 2.0000 ± 2.4841 (") and text in out


def test_row_fields_are_written_json_ready_with_null_for_nan(tmp_path):
    toy = dataclasses.replace(
        TOY, row_fields=lambda values, scale, args: {"curve": np.array([scale, np.nan, np.inf])}
    )
    rows = cli.run_experiment(toy, ["--methods", "a", "--out", str(tmp_path)])
    assert rows[0]["curve"] == [1.0, None, None]

    def refuse(constant):
        raise ValueError(f"results.json holds {constant}")

    payload = json.loads((tmp_path / "results.json").read_text(), parse_constant=refuse)
    assert payload["rows"][0]["curve"] == [1.0, None, None]


def test_runs_merge_and_other_configurations_are_refused(tmp_path):
    run_toy(tmp_path, "--methods", "b")
    rows = run_toy(tmp_path, "--methods", "c,a")
    assert [r["method"] for r in rows] == ["a", "b", "c"]
    with pytest.raises(cli.UsageError, match=r"rows \(a, c\) of another run configuration"):
        run_toy(tmp_path, "--methods", "b", "--shift", "1")
    rows = run_toy(tmp_path, "--methods", "a,b,c", "--shift", "1")  # all re-run: fresh
    assert [r["metrics"]["value"]["mean"] for r in rows] == [3.0, 5.0, 7.0]


def test_extras_keep_a_measurement_of_an_earlier_run(tmp_path):
    def timing(previous, args):
        value = previous.get("timing", 0) + 1  # counts the runs of this configuration
        return {"timing": value}, f"\nRuns: {value}\n"

    toy = dataclasses.replace(TOY, extras=timing)
    for runs in (1, 2):
        cli.run_experiment(toy, ["--methods", "a", "--out", str(tmp_path)])
        assert json.loads((tmp_path / "results.json").read_text())["timing"] == runs
    assert (tmp_path / "table.md").read_text().endswith(f"\nRuns: {runs}\n")


def test_a_command_exits_with_status_2_for_usage_and_1_for_failures(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(TOY, ["--shift", "inf", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.endswith("error: --shift must be a finite number, got 'inf'\n")

    def broken(methods, args):
        raise RuntimeError("the toy broke\nsecond line")
        yield

    with pytest.raises(SystemExit) as exit_:
        cli.main(dataclasses.replace(TOY, execute=broken), ["--out", str(tmp_path)])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: RuntimeError: the toy broke (--debug" in err
    assert cli.main(TOY, ["--out", str(tmp_path)]) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"execute": None}, "or execute must be given (exactly one), got 'neither'"),
        ({"build": lambda c, a: None}, "got 'both'"),
        ({"methods": {}}, "methods must be a non-empty mapping"),
        ({"methods": {"a,b": 1}}, "each method name must be a non-empty string without commas"),
        ({"default_methods": ("z",)}, "each name of default_methods must be one of 'a', 'b'"),
        ({"method_sets": {"s": ("z",)}}, "each name of method_sets['s'] must be one of"),
        ({"paper": {"z": {}}}, "each name of paper must be one of"),
        ({"traced": {"z": ("x",)}}, "each name of traced must be one of"),
        ({"default_seeds": 0}, "default_seeds must be a positive integer, got 0"),
    ],
)
def test_an_inconsistent_experiment_is_refused(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        dataclasses.replace(TOY, **change)


# --------------------------------------------------------------------- findings helpers


def _row(method, values):
    return {"method": method, "metrics": {"acc": {"per_seed": values}}}


def test_welch_differences_and_verdicts():
    rows = [_row("a", [0.9, 0.8, None]), _row("b", [0.5, 0.5]), _row("c", [0.85, 0.95])]
    # a − b: 0.85 − 0.5 (the null seed left out); Welch: var(a)/2 = 0.0025, var(b) = 0,
    # dof 1, t_{0.975,1} = 12.706, half = 0.635.
    diff = difference(rows, "a", "b", "acc")
    assert diff.mean == pytest.approx(0.35) and diff.half == pytest.approx(0.6353, abs=1e-4)
    assert (diff.verdict, diff.points()) == ("n.s.", "+35.0 ± 63.5")
    assert difference(rows, "a", "missing", "acc") is None
    assert Difference(-0.2, 0.1).verdict == "lower" and Difference(0.2, float("nan")).verdict == (
        "n.s."
    )
    text = comparisons(rows, [("c", "b"), ("c", "missing")], "acc", title="Claims")
    assert text == "\nClaims:\n\n- c − b: +40.0 ± 63.5 points (n.s.)\n"
    assert comparisons(rows, [("x", "y")], "acc", title="Claims") == ""
    assert Difference(0.01234, 0.005).points(digits=2) == "+1.23 ± 0.50"


def test_seed_means_leave_null_seeds_out():
    rows = [_row("a", [0.9, 0.8, None]), _row("b", [None, None]), {"method": "c", "metrics": {}}]
    means = seed_means(rows, "acc")
    assert list(means) == ["a", "b"]  # c has no acc
    assert means["a"] == pytest.approx(0.85) and np.isnan(means["b"])


def test_differences_of_labelled_pairs_as_a_table():
    rows = [_row("a", [0.9, 0.8]), _row("b", [0.5, 0.5]), _row("c", [0.85, 0.95])]
    pairs = {"a vs b": ("a", "b"), "c vs a": ("c", "a"), "gone": ("c", "missing")}
    diffs = differences(rows, pairs, ["acc"])
    assert list(diffs) == ["a vs b", "c vs a"]  # the pair without its rows left out
    assert diffs["a vs b"]["acc"] == difference(rows, "a", "b", "acc")
    text = difference_table(diffs, title="Gains", label="setting")
    assert text.startswith("\nGains:\n\n| setting | Δ acc |\n|---|---|\n| a vs b | +35.0 ± ")
    assert text.count("\n| ") == 3 and difference_table({}, title="Gains") == ""


def test_checklist():
    assert checklist({"x": True, "y": False}) == "\n- x: yes\n- y: NO\n"
    assert checklist({}) == ""


# -------------------------------------------------------------- a toy through the engine


@dataclasses.dataclass(frozen=True)
class Config:
    learning_rate: float
    seeds: int | None = None  # the method's own seed count


def blobs_scenario() -> scenarios.Scenario:
    """A synthetic stream: 4 Gaussian blobs in 8 dimensions, 2 tasks of 2 classes."""
    rng = np.random.default_rng(0)
    centres = 3 * rng.normal(size=(4, 8))

    def sample(n):
        y = rng.integers(0, 4, n)
        return (centres[y] + rng.normal(size=(n, 8))).astype(np.float32), y.astype(np.int32)

    return scenarios.split(data.ArrayDataset(*sample(64), *sample(32), 4), classes_per_task=2)


def toy_learner(learning_rate):
    return learners.supervised(nn.Dense(4), optax.sgd(learning_rate), input_dim=8)._replace(
        diagnostics=lambda state: {"norm": jnp.sum(state.params["kernel"] ** 2)}
    )


def build(config, args):
    learner = toy_learner(config.learning_rate)
    return engine.make_run(
        blobs_scenario(), learner, batch_size=16, chunk_size=cli.chunk_size(args, 2)
    )


ENGINE_TOY = Experiment(
    name="engine_toy",
    description="a toy run through the engine",
    methods={"sgd": Config(0.1), "frozen": Config(0.0, seeds=1)},
    build=build,
    seeds=lambda config, args: config.seeds or args.seeds,
    final_diagnostics=lambda run, config: lambda state: {"lr": jnp.full(state.step.shape, 0.5)},
    row_metrics=lambda results, config, args: {
        "norm": results.diagnostics["norm"][:, -1],
        "final_lr": results.diagnostics["lr"] * config.learning_rate,
    },
    forgetting_floor=0.25,
    data=False,
)


def test_an_engine_experiment_runs_checkpointed_and_resumes(tmp_path):
    argv = ["--seeds", "2", "--out", str(tmp_path)]
    rows = cli.run_experiment(ENGINE_TOY, argv)
    sgd, frozen = rows
    assert list(sgd) == [
        "method",
        "metrics",
        "pooled_acc_after_task",
        "diverged_seeds",
        "config",
        "seconds",
    ]
    assert sgd["config"] == {"learning_rate": 0.1, "seeds": None}
    assert len(sgd["metrics"]["acc"]["per_seed"]) == 2 and 0 < sgd["metrics"]["acc"]["mean"] < 1
    assert len(frozen["metrics"]["acc"]["per_seed"]) == 1  # its own seed count
    assert sgd["metrics"]["final_lr"]["per_seed"] == pytest.approx([0.05, 0.05])  # final diag.
    assert frozen["metrics"]["bwt"]["mean"] == 0.0  # lr 0: nothing learnt, nothing forgotten
    assert (tmp_path / "accuracy_after_each_task.png").stat().st_size > 0
    assert (tmp_path / "checkpoints" / "sgd" / "seeds_0-1" / "results.npz").exists()
    again = cli.run_experiment(ENGINE_TOY, argv)  # read back from the checkpoints
    assert [r["metrics"] for r in again] == [r["metrics"] for r in rows]


def test_rows_without_the_engine_metrics(tmp_path):
    toy = dataclasses.replace(ENGINE_TOY, engine_metrics=False, metrics=("norm",), curves=False)
    argv = ["--seeds", "1", "--methods", "sgd", "--no-checkpoint", "--out", str(tmp_path)]
    rows = cli.run_experiment(toy, argv)
    assert list(rows[0]) == ["method", "metrics", "diverged_seeds", "config", "seconds"]
    assert sorted(rows[0]["metrics"]) == ["final_lr", "norm"]
    assert "| sgd |" in (tmp_path / "table.md").read_text()


def test_seed_timing_runs_both_ways_and_compares_the_curves():
    run = build(Config(0.1), cli.experiment_args(ENGINE_TOY, ["--no-checkpoint"]))
    timing = seed_timing(run, 3, lambda results: results.accuracy)
    assert sorted(timing) == [
        "max_abs_curve_difference",
        "seed_by_seed_compile_s",
        "seed_by_seed_run_s",
        "speedup",
        "vmapped_compile_s",
        "vmapped_run_s",
    ]
    assert timing["max_abs_curve_difference"] == 0.0  # a seed's results do not depend on vmap
    assert all(value >= 0 for value in timing.values())


def test_seed_timing_extras_measure_under_timing_and_keep_the_measurement_otherwise(tmp_path):
    def timed(args):
        return Config(0.1), build(Config(0.1), args)

    toy = dataclasses.replace(
        ENGINE_TOY,
        flags=lambda parser: parser.add_argument("--timing", action="store_true"),
        extras=seed_timing_extras(
            timed,
            curves=lambda results: results.accuracy,
            describe="lr {learning_rate}",
        ),
    )
    argv = ["--seeds", "2", "--methods", "sgd", "--no-checkpoint", "--out", str(tmp_path)]

    def payload_and_table(*more):
        cli.run_experiment(toy, [*argv, *more])
        payload = json.loads((tmp_path / "results.json").read_text())
        return payload, (tmp_path / "table.md").read_text()

    payload, table = payload_and_table()
    assert payload["timing"] is None and "Wall time" not in table
    payload, table = payload_and_table("--timing")
    timing = payload["timing"]
    assert timing["config"] == {"learning_rate": 0.1, "seeds": None} and timing["seeds"] == 2
    assert timing["max_abs_curve_difference"] == 0.0 and timing["speedup"] > 0
    assert "\nWall time of lr 0.1 and 2 seeds: one vmapped program " in table
    assert payload_and_table()[0]["timing"] == timing  # kept while --timing is not given


def build_grid(configs, args):
    """The toy's methods that differ only in their learning rate, as the cells of one run."""
    cells = {name: {"learning_rate": c.learning_rate} for name, c in configs.items()}
    return engine.make_run(
        blobs_scenario(),
        lambda hparams: toy_learner(hparams["learning_rate"]),
        grid=engine.grid(cells),
        batch_size=16,
        chunk_size=cli.chunk_size(args, 2),
    )


SWEEP_TOY = dataclasses.replace(
    ENGINE_TOY,
    methods={"sgd": Config(0.1), "slow": Config(0.05), "frozen": Config(0.0, seeds=1)},
    traced={"sgd": ("learning_rate",), "slow": ("learning_rate",)},
    build_grid=build_grid,
)


def test_methods_that_differ_in_traced_fields_are_the_cells_of_one_program(tmp_path, capsys):
    argv = ["--seeds", "2", "--out", str(tmp_path)]
    rows = cli.run_experiment(SWEEP_TOY, argv)
    assert [r["method"] for r in rows] == ["sgd", "slow", "frozen"]
    assert "2 cells (sgd, slow; traced: learning_rate) x 2 seeds: rows of 1 compiled" in (
        capsys.readouterr().out
    )
    (grid_dir,) = (tmp_path / "checkpoints").glob("grid-*")
    fingerprint = json.loads((grid_dir / "seeds_0-3" / "fingerprint.json").read_text())
    assert fingerprint["grid"] == {
        "cells": ["sgd", "slow"],
        "values": {"learning_rate": [pytest.approx(0.1), pytest.approx(0.05)]},
    }
    assert fingerprint["traced"] == ["learning_rate"] and fingerprint["seeds"] == [0, 1, 2, 3]
    # A cell's seeds are those of the method run alone (its rate a constant there): SGD's
    # update -lr * g is the same float32 product whether lr is traced or folded in.
    plain = cli.run_experiment(ENGINE_TOY, ["--seeds", "2", "--methods", "sgd", "--out",
                                            str(tmp_path / "plain")])  # fmt: skip
    assert rows[0]["metrics"] == plain[0]["metrics"]
    again = cli.run_experiment(SWEEP_TOY, argv)  # read back from the checkpoints
    assert [r["metrics"] for r in again] == [r["metrics"] for r in rows]
    changed = dataclasses.replace(SWEEP_TOY, methods={**SWEEP_TOY.methods, "slow": Config(0.06)})
    with pytest.raises(ConfigMismatchError, match="learning_rate"):
        cli.run_experiment(changed, argv)  # the grid's values are in the fingerprint


def test_help_says_which_hyperparameters_are_traced(capsys):
    with pytest.raises(SystemExit):
        cli.experiment_args(SWEEP_TOY, ["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Traced hyperparameters (2 methods): learning_rate. Methods that differ only" in text
    assert "every other field of a method's configuration is structural" in text


def test_a_traced_method_needs_build_grid_and_a_field_of_that_name(tmp_path):
    with pytest.raises(ValueError, match="build_grid must be given for the methods with traced"):
        dataclasses.replace(SWEEP_TOY, build_grid=None)
    with pytest.raises(ValueError, match=r"traced\['sgd'\] must be a non-empty sequence"):
        dataclasses.replace(SWEEP_TOY, traced={"sgd": "learning_rate"})
    bad = dataclasses.replace(SWEEP_TOY, traced={"sgd": ("rate",)})
    with pytest.raises(ValueError, match="a traced method's config must be a dataclass or map"):
        cli.run_experiment(bad, ["--no-checkpoint", "--out", str(tmp_path)])


def test_diagnostics_become_metrics_and_per_task_fields(tmp_path):
    toy = dataclasses.replace(ENGINE_TOY, diagnostics=("norm", "absent"), row_metrics=None)
    argv = ["--seeds", "2", "--methods", "sgd", "--no-checkpoint", "--out", str(tmp_path)]
    (row,) = cli.run_experiment(toy, argv)
    after = row["diagnostics_after_task"]
    assert list(after) == ["norm"] and np.shape(after["norm"]) == (2, 2)  # [S][T]
    assert row["metrics"]["norm"]["per_seed"] == pytest.approx([s[-1] for s in after["norm"]])
    assert after["norm"][0][0] != after["norm"][0][1]  # trained between the two tasks
