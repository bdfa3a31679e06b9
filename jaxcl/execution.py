"""Long runs that survive: checkpoint/resume, Ctrl-C, devices and seed chunks.

:func:`run_seeds` drives a compiled :class:`jaxcl.engine.Run` for many seeds:

* **Seed chunks.** Seeds run in groups of ``seed_chunk_size`` (default: as many as fit
  in half the free memory, read from the compiled program's own memory analysis). A
  seed's results do not depend on its group: its key is ``PRNGKey(seed)``.
* **Devices.** Each group's seed axis is sharded over all local devices
  (``jax.sharding``); a group is padded with repeats of its last seed to a multiple of the
  device count, and the repeats are dropped. Multi-host: call
  ``jax.distributed.initialize()`` first and every process runs the same command.
* **Checkpoints.** With ``checkpoint_dir``, the whole carry of a group is saved after
  every chunk of tasks (:mod:`jaxcl.checkpoint`); running the same call again resumes from
  the newest intact checkpoint and gives bit-identical results. A finished group keeps
  only its small results file.
* **Interruption.** SIGINT (Ctrl-C) or SIGTERM during a run finishes the current chunk,
  saves it, and exits with a message saying how to resume. SIGKILL loses at most the
  chunk in progress.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxcl.checkpoint import Checkpointer
from jaxcl.engine import EngineState, Results, Run, TaskRecord, seed_keys

# The trained learners of a seed group (leading seed axis) -> {name: [S, ...] array}.
FinalDiagnostics = Callable[[EngineState], Mapping[str, Any]]
_MEMORY_FRACTION = 0.5  # of the free memory one seed group may plan to use


class Interrupted(SystemExit):
    """A run stopped by SIGINT/SIGTERM at a chunk boundary, after saving a checkpoint."""


def free_memory_bytes(device: jax.Device | None = None) -> int:
    """Free memory of ``device`` (host RAM for CPU devices)."""
    device = device or jax.local_devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def program_bytes(compiled: Any) -> int:
    """Bytes a compiled program needs at once: arguments, outputs and temporaries."""
    m = compiled.memory_analysis()
    return int(
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        - m.alias_size_in_bytes
        + m.temp_size_in_bytes
    )


def _padded_keys(seeds: Sequence[int]) -> jax.Array:
    """Keys for ``seeds`` padded with repeats of the last seed to a multiple of the devices."""
    return seed_keys(list(seeds) + [seeds[-1]] * (-len(seeds) % jax.device_count()))


def auto_seed_chunk(run: Run, num_seeds: int) -> int:
    """The largest seed-group size whose compiled program fits the memory budget.

    Compiles the chunk program for all ``num_seeds`` (reused when it fits) and reads its
    memory analysis; a group never exceeds half the free memory of the devices.
    """
    n_dev = jax.device_count()
    keys = _padded_keys(list(range(num_seeds)))
    abstract, _ = jax.eval_shape(run._init, keys, run.scenario)
    need = program_bytes(run.executable(abstract))
    budget = _MEMORY_FRACTION * free_memory_bytes() * n_dev
    if need <= budget:
        return num_seeds
    per_seed = need / keys.shape[0]
    return max(n_dev, int(budget // per_seed) // n_dev * n_dev)


@contextlib.contextmanager
def _deferred_signals() -> Iterator[list[str]]:
    """Turns SIGINT/SIGTERM into a flag checked at chunk boundaries (main thread only)."""
    caught: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def handler(signum, frame):
        caught.append(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _empty_records(run: Run, state: Any) -> TaskRecord:
    """Host buffers for every task's records of a group: ``[S, chunks*chunk, ...]``."""
    _, record = jax.eval_shape(run._chunk, state, np.int32(0), run.scenario)
    n_chunks = -(-run.scenario.num_tasks // run.chunk_size)
    return jax.tree.map(
        lambda s: np.zeros((s.shape[0], n_chunks * s.shape[1], *s.shape[2:]), s.dtype), record
    )


def _run_group(
    run: Run,
    seeds: Sequence[int],
    directory: Path | None,
    fingerprint: Mapping[str, Any],
    caught: list[str],
    progress: Any,
    final_diagnostics: FinalDiagnostics | None,
) -> Results:
    keys = _padded_keys(seeds)
    done_file = directory / "results.npz" if directory else None
    checkpointer = None
    if directory is not None:
        checkpointer = Checkpointer(directory, fingerprint={**fingerprint, "seeds": list(seeds)})
        if done_file.exists():
            return _load_results(done_file)
    state, init_correct = run.init(keys)
    records = _empty_records(run, state)
    tasks_done = 0
    if checkpointer is not None:
        payload = {"state": state, "init_correct": init_correct, "records": records}
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
            payload,
        )
        restored = checkpointer.restore_latest(abstract)
        if restored is not None:
            tasks_done, payload = restored
            state, init_correct = payload["state"], payload["init_correct"]
            records = jax.tree.map(np.array, payload["records"])
            if progress is not None:
                progress.update(tasks_done * len(seeds))
    num_tasks, chunk = run.scenario.num_tasks, run.chunk_size
    for start in range(tasks_done, num_tasks, chunk):
        state, record = run.run_chunk(state, start)
        for buffer, value in zip(jax.tree.leaves(records), jax.tree.leaves(record), strict=True):
            buffer[:, start : start + chunk] = np.asarray(value)
        tasks_done = min(start + chunk, num_tasks)
        if checkpointer is not None:
            checkpointer.save(
                tasks_done, {"state": state, "init_correct": init_correct, "records": records}
            )
        if progress is not None:
            progress.update((tasks_done - start) * len(seeds))
        if caught and tasks_done < num_tasks:
            where = f"; checkpoint saved in {directory}" if directory else " (no checkpoint)"
            raise Interrupted(
                f"Interrupted by {caught[0]} after task {tasks_done}/{num_tasks} of seeds "
                f"{seeds[0]}..{seeds[-1]}{where}. Run the same command again to resume."
            )
    results = run.collect(state, init_correct, [records])
    if final_diagnostics is not None:
        final = jax.device_get(dict(final_diagnostics(state)))
        results = results._replace(diagnostics={**results.diagnostics, **final})
    results = _first_seeds(results, len(seeds))  # drop the device padding
    if checkpointer is not None:
        _save_results(done_file, results)
        checkpointer.close()
        shutil.rmtree(directory / "steps", ignore_errors=True)  # keep only the results
    return results


def _first_seeds(results: Results, n: int) -> Results:
    return results._replace(
        correct=results.correct[:n],
        init_correct=results.init_correct[:n],
        train_loss=results.train_loss[:n],
        diverged_at=results.diverged_at[:n],
        diagnostics={k: v[:n] for k, v in results.diagnostics.items()},
    )


def _save_results(path: Path, results: Results) -> None:
    arrays = {f: getattr(results, f) for f in Results._fields if f != "diagnostics"}
    arrays.update({f"diag_{k}": v for k, v in results.diagnostics.items()})
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _load_results(path: Path) -> Results:
    with np.load(path) as z:
        fields = {f: z[f] for f in Results._fields if f != "diagnostics"}
        diagnostics = {k[5:]: z[k] for k in z.files if k.startswith("diag_")}
    return Results(**fields, diagnostics=diagnostics)


def concat_results(parts: Sequence[Results]) -> Results:
    """Joins per-group results along the seed axis."""
    first = parts[0]
    cat = lambda *xs: np.concatenate(xs, axis=0)  # noqa: E731
    return Results(
        correct=cat(*(p.correct for p in parts)),
        count=first.count,
        init_correct=cat(*(p.init_correct for p in parts)),
        train_loss=cat(*(p.train_loss for p in parts)),
        diverged_at=cat(*(p.diverged_at for p in parts)),
        diagnostics={k: cat(*(p.diagnostics[k] for p in parts)) for k in first.diagnostics},
    )


def run_seeds(
    run: Run,
    seeds: Sequence[int],
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    fingerprint: Mapping[str, Any] | None = None,
    seed_chunk_size: int | None = None,
    progress: bool = False,
    final_diagnostics: FinalDiagnostics | None = None,
) -> Results:
    """Runs ``seeds`` through ``run``, resumably; see the module docstring.

    Args:
      run: the compiled run; its ``chunk_size`` is the checkpoint interval in tasks.
      seeds: integer seeds; seed ``s`` uses ``PRNGKey(s)``.
      checkpoint_dir: where checkpoints live; None disables checkpointing.
      fingerprint: the run's configuration; resuming with a different one is refused.
      seed_chunk_size: seeds per group; None derives it from the compiled program's memory.
      progress: show a progress bar (tasks x seeds).
      final_diagnostics: measures the trained learners: called once per seed group with
        the group's final :class:`~jaxcl.engine.EngineState` (leading seed axis), it
        returns ``{name: [S, ...] array}``, merged into ``Results.diagnostics`` (names
        must differ from the learner's) and saved with the results, so a finished group
        that is not run again still has them (e.g. an evaluation the engine does not do).

    Returns:
      :class:`Results` for ``seeds``, in order.

    Raises:
      Interrupted: SIGINT/SIGTERM arrived; the run saved a checkpoint and can be resumed.
      jaxcl.checkpoint.ConfigMismatchError: ``checkpoint_dir`` holds another configuration.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed")
    if seed_chunk_size is None:
        seed_chunk_size = auto_seed_chunk(run, len(seeds))
    if seed_chunk_size < 1:
        raise ValueError(f"seed_chunk_size must be a positive integer, got {seed_chunk_size}")
    fingerprint = {
        **dict(fingerprint or {}),
        "num_tasks": run.scenario.num_tasks,
        "chunk_size": run.chunk_size,
        "batch_size": run.batch_size,
        "epochs_per_task": run.epochs_per_task,
    }
    groups = [seeds[i : i + seed_chunk_size] for i in range(0, len(seeds), seed_chunk_size)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(seeds) * run.scenario.num_tasks, desc="seed-tasks", leave=False)
    parts = []
    with _deferred_signals() as caught:
        for group in groups:
            directory = None
            if checkpoint_dir is not None:
                directory = Path(checkpoint_dir) / f"seeds_{group[0]}-{group[-1]}"
            parts.append(
                _run_group(run, group, directory, fingerprint, caught, bar, final_diagnostics)
            )
    if bar is not None:
        bar.close()
    return concat_results(parts)
