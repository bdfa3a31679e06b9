"""Several processes: two local CPU processes (JAX's Gloo collectives, one device each)
give the one-process results per seed (seeds, and a grid's cells × seeds) and resume after
a SIGKILL; the agreement on
stopping; only process 0 writes; the flags that join the processes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from experiments import dst, hard_ash
from jaxcl import checkpoint, cli, execution, processes

sys.path.insert(0, str(Path(__file__).parent))
import _resumable_job

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--quick", "--seeds", "4"]
HOST_PORT = "--coordinator must be HOST:PORT with a port in [1, 65535]"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start_processes(out, *argv, script="hard_ash"):
    """``<script>.py --quick --seeds 4`` as processes 0 and 1 of one run on this machine."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)  # one CPU device per process
    script = str(ROOT / "experiments" / f"{script}.py")
    flags = ["--out", str(out), "--coordinator", f"localhost:{port}", "--num-processes", "2"]
    jobs = []
    for i in range(2):
        with open(out.parent / f"{out.name}.{i}.out", "w") as log:
            command = [sys.executable, script, *QUICK, *argv, *flags, "--process-id", str(i)]
            jobs.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
    return jobs


def finish(jobs, out):
    for i, job in enumerate(jobs):
        code = job.wait(timeout=600)
        assert code == 0, (out.parent / f"{out.name}.{i}.out").read_text()[-3000:]


def rows(out):
    """results.json's rows without their timings."""
    payload = json.loads((out / "results.json").read_text())
    return {r["method"]: {k: v for k, v in r.items() if k != "seconds"} for r in payload["rows"]}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("one_process")
    cli.run_experiment(hard_ash.EXPERIMENT, [*QUICK, "--out", str(out)])
    return rows(out)


@pytest.mark.needs_data("mnist")
def test_two_processes_give_the_one_process_results_per_seed(tmp_path, one_process):
    out = tmp_path / "two"
    finish(start_processes(out), out)
    assert rows(out) == one_process
    printed = [(tmp_path / f"two.{i}.out").read_text() for i in range(2)]
    assert "| hard_ash+adagrad |" in printed[0]  # process 0 prints and writes the table
    assert "| hard_ash+adagrad |" not in printed[1]


@pytest.mark.needs_data("fashion_mnist")
def test_a_grid_of_cells_over_two_processes_gives_the_one_process_results(tmp_path):
    # dst.py --quick: 10 cells × 4 seeds, rows seed·C + cell sharded over both processes.
    finish(start_processes(tmp_path / "two", script="dst"), tmp_path / "two")
    cli.run_experiment(dst.EXPERIMENT, [*QUICK, "--out", str(tmp_path / "one")])
    assert rows(tmp_path / "two") == rows(tmp_path / "one")


@pytest.mark.needs_data("mnist")
def test_a_sigkilled_process_and_a_rerun_of_both_resume(tmp_path, one_process):
    out, method = tmp_path / "killed", "hard_ash+adagrad"
    jobs = start_processes(out, "--methods", method)
    group = out / "checkpoints" / cli.grid_name([method]) / "seeds_0-3"  # a one-cell grid
    deadline = time.time() + 300
    while not checkpoint.saved_steps(group):  # the first chunk of tasks is saved
        assert time.time() < deadline and all(job.poll() is None for job in jobs)
        time.sleep(0.05)
    jobs[1].send_signal(signal.SIGKILL)
    jobs[0].send_signal(signal.SIGKILL)  # it would stop by itself at JAX's heartbeat timeout
    for job in jobs:
        job.wait()
    assert not (out / "results.json").exists() and not (group / "results.npz").exists()
    finish(start_processes(out, "--methods", method), out)
    assert rows(out) == {method: one_process[method]}


def test_a_stop_signal_to_another_process_stops_this_one(monkeypatch):
    monkeypatch.setattr(execution, "_stop", execution._StopRequest())
    monkeypatch.setattr(execution, "each_process", lambda flag: np.array([int(flag), 1]))
    assert execution._stopping()
    assert execution._stop.signal == "a stop signal to process 1"


def test_only_process_0_writes_the_shared_files(tmp_path, monkeypatch):
    monkeypatch.setattr(execution, "is_main", lambda: False)
    run = _resumable_job.build()
    results = execution.run_seeds(run, [0, 1], checkpoint_dir=tmp_path, seed_chunk_size=2)
    assert results.correct.shape[0] == 2
    assert not (tmp_path / "grouping.json").exists()
    assert not (tmp_path / "seeds_0-1" / "results.npz").exists()


def test_one_process_has_the_local_values():
    np.testing.assert_array_equal(processes.each_process(3), [3])
    np.testing.assert_array_equal(processes.host_array(np.arange(3)), np.arange(3))
    assert processes.is_main()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--process-id", "0"],
            "--coordinator, --num-processes and --process-id must be given together, got only "
            "--process-id",
        ),
        (
            ["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"],
            "--process-id must be an integer in [0, 1] (--num-processes 2), got 2",
        ),
        (["--coordinator", "h"], f"{HOST_PORT}, got 'h'"),
        (["--coordinator", "h:0"], f"{HOST_PORT}, got 'h:0'"),
        (["--coordinator", "::1:80"], f"{HOST_PORT}, got '::1:80'"),
        (["--num-processes", "0"], "--num-processes must be a positive integer, got '0'"),
        (
            ["--distributed", "--num-processes", "2"],
            "--distributed must be given alone (it reads the processes from the cluster's "
            "environment), got it with --num-processes",
        ),
    ],
)
def test_process_flags_are_checked_while_parsing(argv, message, tmp_path):
    parser = cli.experiment_parser("d", methods=["m"])
    with pytest.raises(cli.UsageError) as error:
        parser.parse_args([*argv, "--out", str(tmp_path)])
    assert str(error.value).startswith(message)


def test_ipv6_coordinators_are_bracketed(tmp_path):
    argv = ["--coordinator", "[::1]:8476", "--num-processes", "2", "--process-id", "1"]
    args = cli.experiment_parser("d", methods=["m"]).parse_args([*argv, "--out", str(tmp_path)])
    assert (args.coordinator, args.num_processes, args.process_id) == ("[::1]:8476", 2, 1)
    assert cli.multi_process(args)


def test_distributed_without_a_cluster_says_what_to_give(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_", "JAX_"))}
    script = str(ROOT / "experiments" / "hard_ash.py")
    done = subprocess.run(
        [sys.executable, script, "--distributed", "--quick", "--out", str(tmp_path)],
        env={**env, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(
        "hard_ash.py: error: --distributed must run where JAX detects the processes"
    ), done.stderr
    assert done.stderr.rstrip().endswith("give --coordinator, --num-processes and --process-id")
