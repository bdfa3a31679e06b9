"""The shared command line: flags checked before any work, one-line errors, merged results."""

import dataclasses
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import stale_momentum
from jaxcl import cli, execution, report

ROOT = Path(__file__).resolve().parents[1]


def run_command(script, *argv, env=None, tmp_path):
    """Runs ``experiments/<script>`` from this checkout, with no data reachable."""
    environ = {k: v for k, v in os.environ.items() if k != "JAXCL_DEBUG"}
    environ.update(
        PYTHONPATH=str(ROOT),  # this checkout's jaxcl, whatever is installed
        TFDS_DATA_DIR=str(tmp_path / "no-data"),  # a data load would fail differently
        **(env or {}),
    )
    return subprocess.run(
        [sys.executable, str(ROOT / "experiments" / script), *map(str, argv)],
        capture_output=True,
        text=True,
        env=environ,
        cwd=tmp_path,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("script", "argv", "message"),
    [
        (
            "hard_ash.py",
            ["--methods", "hard_ash+lion"],
            "--methods must be comma-separated method names, got hard_ash+lion; "
            "valid names: hard_ash+adagrad, hard_ash+adam,",
        ),
        ("hard_ash.py", ["--seeds", "0"], "--seeds must be a positive integer, got '0'"),
        (
            "hard_ash.py",
            ["--checkpoint-every", "-1"],
            "--checkpoint-every must be an integer >= 0, got '-1'",
        ),
        ("sdm.py", ["--seed-chunk", "-2"], "--seed-chunk must be an integer >= 0, got '-2'"),
        ("classp.py", ["--seeds", "two"], "--seeds must be a positive integer, got 'two'"),
        ("hard_ash_permuted.py", ["--seeds", "0"], "--seeds must be a positive integer, got '0'"),
        ("plasticity.py", ["--pair-tasks", "46"], "--pair-tasks must be an integer in [1, 45]"),
        (
            "stale_momentum.py",
            ["--grad", "nan"],
            "--grad must be a finite nonzero number, got 'nan'",
        ),
        ("hard_ash.py", ["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_usage_errors_are_one_line_with_status_2(script, argv, message, tmp_path):
    done = run_command(script, *argv, "--out", tmp_path / "out", tmp_path=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error: {message}"), lines
    assert not (tmp_path / "out").exists()  # --out is checked (and made) last


@pytest.mark.parametrize("under_a_file", [False, True])
def test_a_bad_out_is_refused_before_the_run(under_a_file, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    out = taken / "sub" if under_a_file else taken
    done = run_command("hard_ash.py", "--quick", "--no-checkpoint", "--out", out, tmp_path=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    expected = "a writable directory" if under_a_file else "a directory, got the file"
    assert f"hard_ash.py: error: --out must be {expected}" in done.stderr
    assert taken.read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_out_is_refused(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(cli.UsageError, match="--out must be a writable directory"):
            cli.writable_directory(tmp_path)
    finally:
        tmp_path.chmod(0o700)


def test_debug_shows_the_traceback(tmp_path):
    for extra, env in [(["--debug"], None), ([], {"JAXCL_DEBUG": "1"})]:
        done = run_command("stale_momentum.py", "--warmup", "0", *extra, env=env, tmp_path=tmp_path)
        assert done.returncode == 2
        assert "Traceback" in done.stderr
        assert done.stderr.strip().splitlines()[-1] == (
            "stale_momentum.py: error: --warmup must be a positive integer, got '0'"
        )


def test_disk_full_while_writing_results_is_one_line_with_status_1(tmp_path, monkeypatch, capsys):
    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr("jaxcl.io.atomic_write_bytes", full)
    monkeypatch.delenv("JAXCL_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_:
        cli.main(stale_momentum.EXPERIMENT, ["--quick", "--methods", "sgd", "--out", str(tmp_path)])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "error: OSError: [Errno 28] No space left on device" in err
    assert "--debug or JAXCL_DEBUG=1 shows the traceback" in err


def test_main_lets_interruptions_through(tmp_path):
    def interrupted(methods, args):
        raise SystemExit("Interrupted by SIGINT ... Run the same command again to resume.")

    experiment = dataclasses.replace(stale_momentum.EXPERIMENT, execute=interrupted)
    with pytest.raises(SystemExit, match="Interrupted by SIGINT"):
        cli.main(experiment, ["--quick", "--methods", "sgd", "--out", str(tmp_path)])


def rows_of(out):
    return [row["method"] for row in json.loads((out / "results.json").read_text())["rows"]]


def test_runs_of_some_methods_merge_into_the_same_out(tmp_path):
    sm = stale_momentum
    first = cli.run_experiment(
        sm.EXPERIMENT, ["--quick", "--methods", "adam,masked_adam", "--out", str(tmp_path)]
    )
    cli.run_experiment(sm.EXPERIMENT, ["--quick", "--methods", "sgd", "--out", str(tmp_path)])
    assert rows_of(tmp_path) == ["sgd", "adam", "masked_adam"]  # the table's order
    table = (tmp_path / "table.md").read_text()
    assert all(table.count(f"| {m} |") == 2 for m in ("sgd", "adam", "masked_adam"))
    assert "adam inflated after long quiescence: yes" in table  # claims from kept rows
    # A re-run method replaces its own row; the others stay as they were.
    rows = cli.run_experiment(
        sm.EXPERIMENT, ["--quick", "--methods", "adam", "--out", str(tmp_path)]
    )
    assert [r["method"] for r in rows] == ["sgd", "adam", "masked_adam"]
    assert rows[2] == json.loads(json.dumps(first[1]))


def test_rows_of_another_run_configuration_are_not_merged(tmp_path):
    sm = stale_momentum
    cli.run_experiment(sm.EXPERIMENT, ["--quick", "--methods", "adam,sgd", "--out", str(tmp_path)])
    with pytest.raises(
        cli.UsageError,
        match=r"rows \(sgd\) of another run configuration \(grad: 0\.2 there, 0\.5 now\)",
    ):
        cli.run_experiment(
            sm.EXPERIMENT, ["--quick", "--grad", "0.5", "--methods", "adam", "--out", str(tmp_path)]
        )
    assert rows_of(tmp_path) == ["sgd", "adam"]  # untouched
    # Re-running every old row with the new configuration writes fresh results.
    cli.run_experiment(
        sm.EXPERIMENT, ["--quick", "--grad", "0.5", "--methods", "adam,sgd", "--out", str(tmp_path)]
    )
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["config"]["grad"] == 0.5 and rows_of(tmp_path) == ["sgd", "adam"]


def test_results_of_another_experiment_or_unreadable_are_refused(tmp_path):
    report.write_results(tmp_path, experiment="sdm", config={}, rows=[])
    argv = ["--quick", "--methods", "sgd", "--out", str(tmp_path)]
    with pytest.raises(cli.UsageError, match="results of the experiment 'sdm'"):
        cli.run_experiment(stale_momentum.EXPERIMENT, argv)
    (tmp_path / "results.json").write_text('{"rows": [')
    with pytest.raises(cli.UsageError, match=r"results\.json' is not a readable results\.json"):
        cli.run_experiment(stale_momentum.EXPERIMENT, argv)


def test_merge_rows_replaces_by_method_in_canonical_order():
    old = [{"method": "c", "v": 1}, {"method": "gone", "v": 1}, {"method": "a", "v": 1}]
    new = [{"method": "a", "v": 2}, {"method": "b", "v": 2}]
    merged = report.merge_rows(old, new, order=["a", "b", "c"])
    assert [(r["method"], r["v"]) for r in merged] == [("a", 2), ("b", 2), ("c", 1), ("gone", 1)]


def test_the_checkpoint_fingerprint_holds_the_config_and_library_version(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(
        cli.execution, "run_seeds", lambda run, seeds, **kw: seen.update(kw["fingerprint"])
    )
    args = cli.experiment_parser("d", methods=["m"]).parse_args(["--out", str(tmp_path)])
    cli.run_method(None, args, "m", {"optimizer_hparams": (("learning_rate", 0.1),)})
    assert seen == {
        "method": "m",
        "quick": False,
        "jaxcl_version": cli.jaxcl.__version__,
        "optimizer_hparams": (("learning_rate", 0.1),),
    }


def test_previous_results_keep_extras_only_from_the_same_configuration(tmp_path):
    args = cli.experiment_parser("d", methods=["a", "b"]).parse_args(["--out", str(tmp_path)])
    row = {"method": "a", "metrics": {}}
    report.write_results(tmp_path, experiment="e", config={"n": 2}, rows=[row], extra={"t": 1})
    same = cli.previous_results(args, experiment="e", config={"n": 2}, methods=["b"])
    assert same["t"] == 1 and same["rows"] == [row]
    assert cli.previous_results(args, experiment="e", config={"n": 2}, methods=["a"])["t"] == 1
    fresh = cli.previous_results(args, experiment="e", config={"n": 3}, methods=["a"])
    assert fresh == {"rows": []}


def test_a_second_command_on_the_same_out_names_the_holder(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from jaxcl import execution\n"
            f"with execution.lock_directory({str(out)!r}):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        done = run_command("hard_ash.py", "--quick", "--out", out, tmp_path=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1 and f"(pid {holder.pid})" in done.stderr, done.stderr
    # The holder gone (even by SIGKILL), the directory is free again.
    with execution.lock_directory(out):
        pass


@dataclasses.dataclass(frozen=True)
class FlaggedConfig:
    """A config whose fields after ``stream`` are flags (the fields of plasticity's Config)."""

    stream: str
    width: int = cli.flag_field(100, cli.positive_int, "units per hidden layer")
    epochs_per_task: int = cli.flag_field(1, cli.positive_int, flag="--epochs")
    train_per_task: int | None = cli.flag_field(10000, cli.count_or_all)
    head: str = cli.flag_field("pair", choices=("pair", "shared"))
    shuffle: bool = cli.flag_field(False, help="reshuffle every epoch")


def test_flag_fields_are_flags_with_the_fields_defaults():
    parser = cli.experiment_parser("d", methods=["a"])
    cli.add_field_flags(parser, FlaggedConfig)
    defaults = cli.field_flag_values(parser.parse_args([]), FlaggedConfig)
    assert defaults == {
        "width": 100,
        "epochs_per_task": 1,
        "train_per_task": 10000,
        "head": "pair",
        "shuffle": False,
    }
    argv = ["--width", "8", "--epochs", "3", "--train-per-task", "0", "--head", "shared"]
    given = cli.field_flag_values(parser.parse_args([*argv, "--shuffle"]), FlaggedConfig)
    assert list(given.values()) == [8, 3, None, "shared", True]  # 0: all examples
    config = FlaggedConfig("permuted", **given)
    assert config == FlaggedConfig("permuted", 8, 3, None, "shared", True)
    assert dataclasses.asdict(config)["epochs_per_task"] == 3  # a plain field as a record
    with pytest.raises(cli.UsageError, match="--width must be a positive integer, got '0'"):
        parser.parse_args(["--width", "0"])
    with pytest.raises(cli.UsageError, match="invalid choice: 'both'"):
        parser.parse_args(["--head", "both"])
    with pytest.raises(cli.UsageError, match="unrecognized arguments: --epochs-per-task"):
        parser.parse_args(["--epochs-per-task", "2"])  # the field's flag is --epochs


def test_flag_fields_refuse_a_typed_switch_and_a_non_dataclass():
    with pytest.raises(ValueError, match=r"parse and choices of a switch .* must be None"):
        cli.flag_field(False, cli.positive_int)
    with pytest.raises(ValueError, match="config_type must be a dataclass"):
        cli.add_field_flags(cli.experiment_parser("d", methods=["a"]), FlaggedConfig("x"))
