"""Long runs: resume after a crash or SIGKILL, corrupt checkpoints and results, config
changes, stop signals, seed chunks and their record, the directory lock, several devices,
and divergence isolation."""

import fcntl
import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import checkpoint, engine, execution, report

sys.path.insert(0, str(Path(__file__).parent))
import _resumable_job

JOB = str(Path(__file__).parent / "_resumable_job.py")
# The job imports this checkout's jaxcl, not whichever one is installed.
PYTHONPATH = os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])


def run_job(out, seeds="0,1,2", seed_chunk="0", sleep="0", methods="1", env=None):
    return subprocess.Popen(
        [sys.executable, JOB, str(out), seeds, seed_chunk, sleep, methods],
        env={**os.environ, "PYTHONPATH": PYTHONPATH, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def load(out):
    with np.load(Path(out) / "results.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run, one process, one device."""
    out = tmp_path_factory.mktemp("reference")
    job = run_job(out)
    assert job.wait(timeout=300) == 0, job.stderr.read()
    return load(out)


def assert_same(a, b):
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def read_until(stream, wanted):
    """Reads ``stream`` line by line until a line starting with ``wanted``."""
    seen = []
    for line in stream:
        if line.startswith(wanted):
            return
        seen.append(line)
    raise AssertionError(f"{wanted!r} never came; got {''.join(seen)[-2000:]}")


def wait_for_step(directory, at_least, job, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        steps = [int(p.name) for p in Path(directory).glob("*") if p.name.isdigit()]
        if steps and max(steps) >= at_least:
            return
        assert job.poll() is None, job.stderr.read()
        time.sleep(0.1)
    raise TimeoutError(f"no checkpoint step >= {at_least} in {directory}")


def test_sigkill_then_resume_is_bit_identical(tmp_path, reference):
    job = run_job(tmp_path, sleep="0.3")
    wait_for_step(tmp_path / "ckpt" / "seeds_0-2" / "steps", 3, job)
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert not (tmp_path / "results.npz").exists()
    resumed = run_job(tmp_path)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert_same(reference, load(tmp_path))


def test_sigterm_saves_and_says_how_to_resume(tmp_path, reference):
    job = run_job(tmp_path, sleep="0.3")
    wait_for_step(tmp_path / "ckpt" / "seeds_0-2" / "steps", 2, job)
    job.send_signal(signal.SIGTERM)
    assert job.wait(timeout=120) != 0
    assert "Run the same command again to resume" in job.stderr.read()
    resumed = run_job(tmp_path)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert_same(reference, load(tmp_path))


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path, reference, monkeypatch):
    run = _resumable_job.build()
    calls = []
    original = run.run_chunk

    def crash_after_four(state, start):
        calls.append(start)
        if len(calls) > 4:
            raise RuntimeError("simulated crash")
        return original(state, start)

    monkeypatch.setattr(run, "run_chunk", crash_after_four)
    kwargs = dict(checkpoint_dir=tmp_path, fingerprint={"job": "test"}, seed_chunk_size=None)
    with pytest.raises(RuntimeError, match="simulated crash"):
        execution.run_seeds(run, [0, 1, 2], **kwargs)
    steps_dir = tmp_path / "seeds_0-2" / "steps"
    assert sorted(int(p.name) for p in steps_dir.iterdir() if p.name.isdigit()) == [3, 4]
    for f in (steps_dir / "4").rglob("*"):  # damage every data file of the newest step
        if f.is_file() and f.stat().st_size > 0 and "commit_success" not in f.name:
            f.write_bytes(b"\0" * f.stat().st_size)
    starts = []
    monkeypatch.setattr(run, "run_chunk", lambda s, t: starts.append(t) or original(s, t))
    results = execution.run_seeds(run, [0, 1, 2], **kwargs)
    assert starts[0] == 3  # resumed after task 3, from the older intact step
    np.testing.assert_array_equal(results.correct, reference["correct"])


def test_resuming_with_another_config_is_refused(tmp_path):
    checkpoint.Checkpointer(tmp_path, fingerprint={"lr": 0.1, "width": 32})
    with pytest.raises(checkpoint.ConfigMismatchError, match=r"lr: checkpoint has 0\.1, now 0\.2"):
        checkpoint.Checkpointer(tmp_path, fingerprint={"lr": 0.2, "width": 32})


def test_seed_chunks_give_identical_per_seed_results(reference):
    run = _resumable_job.build()
    for size in (1, 2):
        results = execution.run_seeds(run, [0, 1, 2], seed_chunk_size=size)
        np.testing.assert_array_equal(results.correct, reference["correct"])
    assert run.num_compiles == 2  # one program per group size (2 and 1 seeds)


def test_auto_seed_chunk_fits_small_runs_at_once():
    assert execution.auto_seed_chunk(_resumable_job.build(), 3) == 3


@pytest.mark.parametrize(
    "need,free,devices,sharing,expected",
    [
        (100, 1000, 1, 1, 8),  # fits: every row at once
        (1000, 1000, 1, 1, 4),  # 125 B a row, 500 B to plan with: 4 rows
        (1000, 1000, 4, 1, 4),  # per device: 2 rows of 500 B, 1 fits in 500 B
        (500, 1000, 2, 2, 4),  # CPU devices share the RAM: 250 B each, 2 rows of 125 B
        (500, 1000, 2, 1, 8),  # two accelerators, 500 B each: the whole program fits
        (10**6, 1000, 2, 2, 2),  # nothing fits: one row per device
    ],
)
def test_group_size_budgets_per_device_memory(need, free, devices, sharing, expected):
    # need: bytes per device for 8 rows spread over the devices.
    kwargs = dict(free_bytes=free, num_devices=devices, sharing=sharing)
    assert execution.group_size(need, 8, **kwargs) == expected


@pytest.mark.parametrize("seeds", ["0,1,2", "0,1,2,3"])
def test_four_forced_host_devices_match_one_device(tmp_path, reference, seeds):
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    job = run_job(tmp_path, seeds=seeds, env=env)
    assert job.wait(timeout=300) == 0, job.stderr.read()
    got = load(tmp_path)
    # Accuracy counts are identical; losses may differ in the last float32 bit, since
    # XLA vectorises a one-seed-per-device program differently from a three-seed one.
    np.testing.assert_array_equal(got["correct"][:3], reference["correct"])
    np.testing.assert_array_equal(got["diverged_at"][:3], reference["diverged_at"])
    np.testing.assert_allclose(got["loss"][:3], reference["loss"], rtol=1e-5)


def test_divergence_in_one_seed_leaves_the_others_untouched(reference):
    run = _resumable_job.build()
    state, init_correct = run.init(engine.seed_keys([0, 1, 2]))
    # Poison seed 1's parameters: its loss becomes NaN at its next step.
    poison = jax.tree.map(lambda x: x.at[1].set(jnp.nan), state.learner.params)
    state = state._replace(learner=state.learner._replace(params=poison))
    records = []
    for start in range(run.scenario.num_tasks):
        state, record = run.run_chunk(state, start)
        records.append(jax.device_get(record))
    results = run.collect(state, init_correct, records)
    np.testing.assert_array_equal(results.diverged_at, [-1, 0, -1])
    for s in (0, 2):
        np.testing.assert_array_equal(results.correct[s], reference["correct"][s])
    row = report.result_row("poisoned", results)
    assert row["diverged_seeds"] == {1: 0}
    assert row["metrics"]["acc"]["n_excluded"] == 1
    assert row["metrics"]["acc"]["per_seed"][1] is None
    table = report.markdown_table([row], metrics=["acc"])
    assert "(1 diverged)" in table


def test_final_diagnostics_are_saved_with_the_results_and_reused(tmp_path):
    run = _resumable_job.build()
    calls = []

    def final(state):  # per seed: the number of training steps taken
        calls.append(state.step.shape)
        return {"final_steps": state.step}

    kwargs = dict(checkpoint_dir=tmp_path, fingerprint={"job": "final"}, seed_chunk_size=2)
    first = execution.run_seeds(run, [0, 1, 2], final_diagnostics=final, **kwargs)
    again = execution.run_seeds(run, [0, 1, 2], final_diagnostics=final, **kwargs)
    assert calls == [(2,), (1,)]  # once per seed group; finished groups are not rerun
    steps = 8 * 25  # 8 tasks of 400 examples in batches of 16
    np.testing.assert_array_equal(first.diagnostics["final_steps"], [steps] * 3)
    np.testing.assert_array_equal(again.diagnostics["final_steps"], [steps] * 3)


def counting_chunks(run, monkeypatch, crash_after=None):
    """Records the start of every chunk ``run`` runs; raises after ``crash_after`` chunks."""
    starts, original = [], functools.partial(engine.Run.run_chunk, run)  # not a wrapper

    def chunk(state, start):
        if crash_after is not None and len(starts) >= crash_after:
            raise RuntimeError("simulated crash")
        starts.append(start)
        return original(state, start)

    monkeypatch.setattr(run, "run_chunk", chunk)
    return starts


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_in_the_last_chunk_stops_before_the_next_method(tmp_path, reference, sig):
    job = run_job(tmp_path, sleep="0.2", methods="2")
    read_until(job.stdout, "chunk 7")  # the last of method 0's eight one-task chunks
    job.send_signal(sig)
    out, err = job.communicate(timeout=300)
    assert job.returncode == 1, err
    assert "stopping after this chunk, Ctrl-C again to abort now" in err
    assert f"Interrupted by {sig.name} after finishing seeds 0..2" in err
    assert "Run the same command again to resume" in err
    assert "method 0 finished" not in out  # run_seeds did not return
    assert not (tmp_path / "ckpt1").exists()  # the next method never started
    assert (tmp_path / "ckpt" / "seeds_0-2" / "results.npz").exists()
    resumed = run_job(tmp_path, methods="2")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "method 1 finished" in out
    assert_same(reference, load(tmp_path))


def test_a_second_sigint_aborts_at_once_and_a_rerun_resumes(tmp_path, reference):
    job = run_job(tmp_path, sleep="2")
    read_until(job.stdout, "chunk 1")  # chunk 0 is saved as step 1; chunk 1 sleeps 2 s
    job.send_signal(signal.SIGINT)
    read_until(job.stderr, "SIGINT: stopping after this chunk")
    job.send_signal(signal.SIGINT)
    _, err = job.communicate(timeout=120)
    assert job.returncode == 128 + signal.SIGINT, err
    assert "Aborted" in err
    group = tmp_path / "ckpt" / "seeds_0-2"
    assert checkpoint.saved_steps(group) == [1]  # chunk 1 was cut short, not finished
    resumed = run_job(tmp_path)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert_same(reference, load(tmp_path))


def test_a_stop_request_outlives_the_call(tmp_path, monkeypatch):
    monkeypatch.setattr(execution, "_stop", execution._StopRequest())
    run = _resumable_job.build()
    starts = counting_chunks(run, monkeypatch)
    original = run.run_chunk

    def signal_in_last_chunk(state, start):
        if start == 7:
            os.kill(os.getpid(), signal.SIGTERM)  # handled: run_seeds defers it
        return original(state, start)

    monkeypatch.setattr(run, "run_chunk", signal_in_last_chunk)
    kwargs = dict(fingerprint={"job": "test"}, seed_chunk_size=3)
    with pytest.raises(execution.Interrupted, match=r"SIGTERM after finishing seeds 0\.\.2"):
        execution.run_seeds(run, [0, 1, 2], checkpoint_dir=tmp_path / "a", **kwargs)
    with pytest.raises(execution.Interrupted, match="before this run started"):
        execution.run_seeds(run, [0, 1, 2], checkpoint_dir=tmp_path / "b", **kwargs)
    assert starts == list(range(8))  # nothing of the second run
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_a_second_process_on_the_directory_is_refused_naming_the_holder(tmp_path):
    holder = run_job(tmp_path, sleep="2")
    read_until(holder.stdout, "chunk 0")
    second = run_job(tmp_path)
    _, err = second.communicate(timeout=300)
    assert second.returncode == 1
    assert f"in use by another run (pid {holder.pid})" in err
    assert "DirectoryLocked" in err
    holder.kill()  # SIGKILL: the kernel releases the lock with the process
    holder.wait()
    with execution.lock_directory(tmp_path / "ckpt"):
        pass


def test_lock_directory_is_reentrant_and_released_at_exit(tmp_path):
    def try_lock():  # another open file description, as another process would have
        fd = os.open(tmp_path / ".lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    with execution.lock_directory(tmp_path) as path:
        with execution.lock_directory(tmp_path):
            pass
        assert path == tmp_path.resolve()
        assert (tmp_path / ".lock").read_text() == f"{os.getpid()}\n"
        assert not try_lock()  # still held after the inner block
    assert try_lock()


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def other_values(path):  # a well-formed file whose numbers are not the run's
    with np.load(path) as z:
        arrays = {k: np.zeros_like(z[k]) for k in z.files}
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize("damage", [truncate, other_values])
def test_a_damaged_finished_group_is_named_and_recomputed(
    tmp_path, reference, monkeypatch, caplog, damage
):
    run = _resumable_job.build()
    kwargs = dict(checkpoint_dir=tmp_path, fingerprint={"job": "test"}, seed_chunk_size=2)
    execution.run_seeds(run, [0, 1, 2], **kwargs)
    done = tmp_path / "seeds_0-1" / "results.npz"
    damage(done)
    starts = counting_chunks(run, monkeypatch)
    results = execution.run_seeds(run, [0, 1, 2], **kwargs)
    assert f"{done} is damaged" in caplog.text
    assert starts == list(range(8))  # seeds 0-1 again; seed 2's results were intact
    np.testing.assert_array_equal(results.correct, reference["correct"])
    np.testing.assert_array_equal(results.diverged_at, reference["diverged_at"])
    starts.clear()
    caplog.clear()
    again = execution.run_seeds(run, [0, 1, 2], **kwargs)
    assert starts == [] and "damaged" not in caplog.text  # the recomputed file is good
    np.testing.assert_array_equal(again.correct, reference["correct"])


def test_a_damaged_fingerprint_is_rewritten_when_nothing_depends_on_it(tmp_path, caplog):
    stored = tmp_path / "fingerprint.json"
    checkpoint.Checkpointer(tmp_path, fingerprint={"lr": 0.1}).close()
    stored.write_text('{"lr": 0.')  # torn
    checkpoint.Checkpointer(tmp_path, fingerprint={"lr": 0.1}).close()
    assert f"{stored} is damaged" in caplog.text
    assert json.loads(stored.read_text()) == {"lr": 0.1}


@pytest.mark.parametrize("work", ["step", "results"])
def test_a_damaged_fingerprint_with_saved_work_is_refused_naming_it(tmp_path, work):
    ckpt = checkpoint.Checkpointer(tmp_path, fingerprint={"lr": 0.1})
    if work == "step":
        ckpt.save(1, {"w": np.zeros(3, np.float32)})
    else:  # a finished group
        (tmp_path / "results.npz").write_bytes(b"saved results")
    ckpt.close()
    stored = tmp_path / "fingerprint.json"
    stored.write_bytes(b"\xff\x00")
    depends = "checkpoint steps [1]" if work == "step" else "results.npz"
    match = f"{re.escape(str(stored))} is damaged.*{re.escape(depends)}"
    with pytest.raises(checkpoint.DamagedCheckpointError, match=match):
        checkpoint.Checkpointer(tmp_path, fingerprint={"lr": 0.1})
    stored.unlink()  # a missing fingerprint is no better
    match = f"{re.escape(str(stored))} is missing"
    with pytest.raises(checkpoint.DamagedCheckpointError, match=match):
        checkpoint.Checkpointer(tmp_path, fingerprint={"lr": 0.1})


def test_a_rerun_keeps_the_recorded_grouping_when_free_memory_differs(
    tmp_path, reference, monkeypatch, caplog
):
    run = _resumable_job.build()
    kwargs = dict(checkpoint_dir=tmp_path, fingerprint={"job": "test"})
    monkeypatch.setattr(execution, "free_memory_bytes", lambda device=None: 1)
    assert execution.auto_seed_chunk(run, 3) == 1  # little memory: one seed per group
    counting_chunks(run, monkeypatch, crash_after=10)  # seed 0 done, seed 1 after task 2
    with pytest.raises(RuntimeError, match="simulated crash"):
        execution.run_seeds(run, [0, 1, 2], **kwargs)
    monkeypatch.setattr(execution, "free_memory_bytes", lambda device=None: 1 << 50)
    assert execution.auto_seed_chunk(run, 3) == 3  # now all three seeds would fit at once
    starts = counting_chunks(run, monkeypatch)
    results = execution.run_seeds(run, [0, 1, 2], **kwargs)
    assert starts == [*range(2, 8), *range(8)]  # seed 1 resumed, seed 2 from the start
    np.testing.assert_array_equal(results.correct, reference["correct"])
    assert json.loads((tmp_path / "grouping.json").read_text()) == {"seed_chunk_size": 1}
    starts.clear()
    results = execution.run_seeds(run, [0, 1, 2], seed_chunk_size=3, **kwargs)
    assert starts == []  # the finished groups of the recorded grouping are reused
    assert "seed_chunk_size (--seed-chunk) 3 differs from the 1 seeds per group" in caplog.text
    np.testing.assert_array_equal(results.correct, reference["correct"])


@pytest.mark.parametrize("record", ['{"seed_chunk_size": 1}', '{"seed_chunk_size": 0}', "{"])
def test_an_explicit_grouping_replaces_a_record_without_saved_work(tmp_path, caplog, record):
    run = _resumable_job.build()
    kwargs = dict(checkpoint_dir=tmp_path, fingerprint={"job": "test"})
    (tmp_path / "grouping.json").write_text(record)
    execution.run_seeds(run, [0, 1, 2], seed_chunk_size=3, **kwargs)
    damaged = record != '{"seed_chunk_size": 1}'
    assert (f"{tmp_path / 'grouping.json'} is damaged" in caplog.text) == damaged
    assert sorted(p.name for p in tmp_path.glob("seeds_*")) == ["seeds_0-2"]
    assert json.loads((tmp_path / "grouping.json").read_text()) == {"seed_chunk_size": 3}
