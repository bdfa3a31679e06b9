"""Long runs: resume after a crash or SIGKILL, corrupt checkpoints, config changes,
seed chunks, several devices, and divergence isolation."""

import os
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


def run_job(out, seeds="0,1,2", seed_chunk="0", sleep="0", env=None):
    return subprocess.Popen(
        [sys.executable, JOB, str(out), seeds, seed_chunk, sleep],
        env={**os.environ, **(env or {})},
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
