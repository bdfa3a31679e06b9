"""Long runs that survive: checkpoint/resume, Ctrl-C, devices and seed chunks.

:func:`run_seeds` drives a compiled :class:`jaxcl.engine.Run` for many seeds:

* **Seed chunks.** Seeds run in groups of ``seed_chunk_size`` (default: as many as fit
  in half the free memory, read from the compiled program's own memory analysis). A
  seed's results do not depend on its group: its key is ``PRNGKey(seed)``. The group
  size is recorded in ``checkpoint_dir/grouping.json`` and reused on resume, so a rerun
  with other free memory continues the saved groups; an explicit size that differs from
  the record is overridden (with a warning) while saved work exists.
* **Devices.** Each group's seed axis is sharded over all devices (``jax.sharding``); a
  group is padded with repeats of its last seed to a multiple of the device count, and the
  repeats are dropped.
* **Several processes.** After ``jax.distributed.initialize`` (the experiments'
  ``--coordinator``, ``--num-processes``, ``--process-id``) every process makes the same
  call on the same ``checkpoint_dir`` (a shared file system). The devices are those of
  every process (the global mesh); each process saves the seeds on its own devices in
  every checkpoint (orbax), process 0 alone writes the files shared by all (the
  grouping's record, a group's ``results.npz``; :mod:`jaxcl.processes`), and every
  process returns the results of all seeds. The processes agree on the group size and on
  stopping: a stop signal to any of them stops all at the same chunk boundary. A rerun
  of every process's command resumes.
* **Checkpoints.** With ``checkpoint_dir``, the whole carry of a group is saved after
  every chunk of tasks (:mod:`jaxcl.checkpoint`); running the same call again resumes from
  the newest intact checkpoint and gives bit-identical results. A finished group keeps
  only its small ``results.npz``, which stores a digest of its arrays: a damaged one is
  reported (naming the file) and the group recomputed, never loaded.
* **Interruption.** SIGINT (Ctrl-C) or SIGTERM finishes the current chunk, saves it
  (with the group's results if it was the group's last chunk), then raises
  :class:`Interrupted` with a message saying how to resume. The first signal is
  acknowledged on stderr at once; a second one ends the process at once (status
  128 + signal number; the last saved chunk stays valid, as after SIGKILL, which loses at
  most the chunk in progress). The stop request outlives the call: a later
  :func:`run_seeds` in the same process raises :class:`Interrupted` before starting.
* **Exclusive use.** ``checkpoint_dir`` is locked (:func:`lock_directory`) while a run
  uses it; a second process gets :class:`DirectoryLocked` naming the holder's pid. (Not
  in multi-process runs, whose processes share the directory by design.)

Grids: a grid run (:mod:`jaxcl.engine._grid`) runs every seed for every cell, as rows
``seed * C + cell`` of the same axis; groups, devices, checkpoints and resume work on rows
exactly as on seeds (``seed_chunk_size`` counts rows), the fingerprint names every cell's
values, and the results come back as :class:`jaxcl.engine.GridResults`.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxcl.checkpoint import Checkpointer, saved_steps
from jaxcl.engine import EngineState, GridResults, Results, Run, TaskRecord, concatenate_results
from jaxcl.io import atomic_write_bytes, atomic_write_text, digest
from jaxcl.processes import each_process, host_array, is_main

__all__ = [
    "DirectoryLocked",
    "FinalDiagnostics",
    "Interrupted",
    "auto_seed_chunk",
    "free_memory_bytes",
    "group_size",
    "lock_directory",
    "program_bytes",
    "run_seeds",
]

# The trained learners of a seed group (leading seed axis) -> {name: [S, ...] array}.
FinalDiagnostics = Callable[[EngineState], Mapping[str, Any]]
_MEMORY_FRACTION = 0.5  # of the free memory one seed group may plan to use
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
log = logging.getLogger(__name__)


class Interrupted(SystemExit):
    """A run stopped by SIGINT/SIGTERM at a chunk boundary, after saving a checkpoint."""


class DirectoryLocked(RuntimeError):
    """Another process is using a run directory (see :func:`lock_directory`)."""


# Held locks of this process, {directory: [fd, depth]}, so that nested blocks share one.
_locks: dict[Path, list[int]] = {}


@contextlib.contextmanager
def lock_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Holds an exclusive lock on the directory ``path`` (created if needed) for the block.

    An advisory ``fcntl.flock`` on ``path/.lock``, which also records the holder's pid. The
    kernel drops the lock when its holder exits, even by SIGKILL, so a crashed run never
    blocks the next one. Re-entrant within a process. Multi-host runs, whose processes
    all run the same command on the same directory, must not take it.

    Raises:
      DirectoryLocked: another process holds the lock; the message names its pid.
    """
    path = Path(path).resolve()
    if path in _locks:
        _locks[path][1] += 1
        try:
            yield path
        finally:
            _locks[path][1] -= 1
        return
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise DirectoryLocked(
            f"{path} is in use by another run (pid {holder}); wait for it to finish, or "
            "use another --out directory"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _locks[path] = [fd, 1]
    try:
        yield path
    finally:
        _locks[path][1] -= 1
        if not _locks[path][1]:
            del _locks[path]
            os.close(fd)  # releases the flock


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


def auto_seed_chunk(run: Run, num_seeds: int) -> int:
    """The largest seed-group size whose compiled program fits the memory budget.

    Compiles the chunk program for all ``num_seeds`` (reused when it fits) and reads its
    memory analysis, which is per device (each holds its share of the rows); see
    :func:`group_size` for the budget.
    """
    num_rows = len(_padded(range(num_seeds)))
    need = program_bytes(run.compiled_chunk(run.abstract_state(num_rows)))
    device = jax.local_devices()[0]
    # CPU devices of one process share its host's RAM; an accelerator has its own memory.
    sharing = jax.local_device_count() if device.platform == "cpu" else 1
    size = group_size(
        need,
        num_rows,
        free_bytes=free_memory_bytes(device),
        num_devices=jax.device_count(),
        sharing=sharing,
    )
    return min(num_seeds, size)


def group_size(need: int, num_rows: int, *, free_bytes: int, num_devices: int, sharing: int) -> int:
    """Rows per group (a multiple of ``num_devices``) whose per-device program fits.

    ``need`` bytes per device run ``num_rows / num_devices`` rows on each device;
    ``sharing`` devices share ``free_bytes`` (the local CPU devices share the host's RAM;
    1 for an accelerator). A group may plan to use half of it: all ``num_rows`` when
    ``need · sharing`` fits, else as many rows per device as fit at ``need``'s bytes per
    row (at least one).

    >>> group_size(100, 8, free_bytes=1000, num_devices=2, sharing=1)  # fits: all 8 rows
    8
    >>> group_size(400, 8, free_bytes=1000, num_devices=2, sharing=2)  # 100 B a row: 2 fit
    4
    """
    budget = _MEMORY_FRACTION * free_bytes / sharing
    if need <= budget:
        return num_rows
    per_row = need * num_devices / num_rows  # bytes of one row on its device
    return max(1, int(budget // per_row)) * num_devices


class _StopRequest:
    """SIGINT/SIGTERM received by this process (module state: it outlives a run)."""

    signal: str | None = None  # the first one's name
    count = 0  # how many the watcher thread has seen


_stop = _StopRequest()


def _record_stop(signum: int, frame: Any) -> None:
    """Main-thread handler: marks the stop before the next chunk boundary is checked."""
    _stop.signal = _stop.signal or signal.Signals(signum).name


def _watch_signals(read_fd: int) -> None:
    """Acknowledges stop signals at once, even while the main thread waits on a device.

    Python runs signal handlers only between bytecodes of the main thread, which may be
    blocked in a compiled program for minutes; this thread is woken through
    ``signal.set_wakeup_fd`` instead. The second signal ends the process here and now.
    """
    while chunk := os.read(read_fd, 64):
        for signum in chunk:
            if signum not in _STOP_SIGNALS:
                continue
            _stop.count += 1
            _stop.signal = _stop.signal or signal.Signals(signum).name
            if _stop.count == 1:
                os.write(
                    2,
                    f"\n{signal.Signals(signum).name}: stopping after this chunk, "
                    "Ctrl-C again to abort now\n".encode(),
                )
            else:
                os.write(2, b"\nAborted; the last saved chunk is kept.\n")
                os._exit(128 + signum)


@contextlib.contextmanager
def _deferred_signals() -> Iterator[None]:
    """Turns SIGINT/SIGTERM into a stop request (``_stop``) checked at chunk boundaries.

    Active in the main thread only (Python delivers signals there).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous = {s: signal.signal(s, _record_stop) for s in _STOP_SIGNALS}
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    watcher = threading.Thread(target=_watch_signals, args=(read_fd,), daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        for s, h in previous.items():
            signal.signal(s, h)
        os.close(write_fd)  # the watcher reads end-of-file and returns
        watcher.join()
        os.close(read_fd)


def _stopping() -> bool:
    """Whether to stop at this chunk boundary: a stop signal reached this process or, in
    a multi-process run, another one (collective, so that all stop at the same boundary)."""
    flags = each_process(_stop.signal is not None)
    if _stop.signal is None and flags.any():
        _stop.signal = f"a stop signal to process {int(np.argmax(flags))}"
    return _stop.signal is not None


def _interrupted(what: str, directory: Path | None) -> Interrupted:
    """The stop, ``what`` said when, ``directory`` where the work done so far is saved."""
    where = f"; saved in {directory}" if directory else " (no checkpoint: nothing saved)"
    return Interrupted(
        f"Interrupted by {_stop.signal} {what}{where}. Run the same command again to resume."
    )


def _empty_records(run: Run, state: Any) -> TaskRecord:
    """Host buffers for every task's records of a group: ``[S, chunks*chunk, ...]``."""
    record = run.abstract_record(state)
    n_chunks = -(-run.spec.num_tasks // run.spec.chunk_size)
    return jax.tree.map(
        lambda s: np.zeros((s.shape[0], n_chunks * s.shape[1], *s.shape[2:]), s.dtype), record
    )


def _padded(seeds: Sequence[int]) -> list[int]:
    """``seeds`` padded with repeats of the last one to a multiple of the devices."""
    return list(seeds) + [seeds[-1]] * (-len(seeds) % jax.device_count())


def _run_group(
    run: Run,
    seeds: Sequence[int],
    directory: Path | None,
    fingerprint: Mapping[str, Any],
    progress: Any,
    final_diagnostics: FinalDiagnostics | None,
) -> Results:
    done_file = directory / "results.npz" if directory else None
    checkpointer = None
    if directory is not None:
        checkpointer = Checkpointer(directory, fingerprint={**fingerprint, "seeds": list(seeds)})
        if done_file.exists():
            results = _load_results(done_file)
            if results is not None:
                return results
    state, init_correct = run.init_rows(_padded(seeds))
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
    num_tasks, chunk = run.spec.num_tasks, run.spec.chunk_size
    for start in range(tasks_done, num_tasks, chunk):
        state, record = run.run_chunk(state, start)
        for buffer, value in zip(jax.tree.leaves(records), jax.tree.leaves(record), strict=True):
            buffer[:, start : start + chunk] = host_array(value)
        tasks_done = min(start + chunk, num_tasks)
        if checkpointer is not None:
            checkpointer.save(
                tasks_done, {"state": state, "init_correct": init_correct, "records": records}
            )
        if progress is not None:
            progress.update((tasks_done - start) * len(seeds))
        if tasks_done < num_tasks and _stopping():
            what = f"after task {tasks_done}/{num_tasks} of seeds {seeds[0]}..{seeds[-1]}"
            raise _interrupted(what, directory)
    results = run.collect(state, init_correct, [records])
    if final_diagnostics is not None:
        final = jax.tree.map(host_array, dict(final_diagnostics(state)))
        results = results._replace(diagnostics={**results.diagnostics, **final})
    results = jax.tree.map(lambda x: x[: len(seeds)], results)  # drop the device padding
    if checkpointer is not None:
        checkpointer.close()
        if is_main():
            _save_results(done_file, results)
            shutil.rmtree(directory / "steps", ignore_errors=True)  # keep only the results
    return results


def _save_results(path: Path, results: Results) -> None:
    """Writes ``results`` atomically, with the digest of its arrays as ``__digest__``."""
    arrays = {f: getattr(results, f) for f in Results._fields if f != "diagnostics"}
    arrays.update({f"diag_{k}": v for k, v in results.diagnostics.items()})
    buffer = io.BytesIO()
    np.savez(buffer, __digest__=np.array(digest(arrays)), **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def _load_results(path: Path) -> Results | None:
    """The results saved in ``path``, or None (with a warning naming it) if it is damaged."""
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files if k != "__digest__"}
            if str(z["__digest__"]) != digest(arrays):
                raise ValueError("digest mismatch")
        fields = {f: arrays[f] for f in Results._fields if f != "diagnostics"}
    except Exception as err:  # any unreadable file is recomputed, never trusted
        log.warning("%s is damaged (%s: %s); recomputing its seeds", path, type(err).__name__, err)
        return None
    diagnostics = {k[5:]: v for k, v in arrays.items() if k.startswith("diag_")}
    return Results(**fields, diagnostics=diagnostics)


def _has_saved_work(checkpoint_dir: Path) -> bool:
    """Whether any seed group under ``checkpoint_dir`` saved a step or its results."""
    groups = checkpoint_dir.glob("seeds_*")
    return any((g / "results.npz").exists() or saved_steps(g) for g in groups)


def _recorded_seed_chunk(record: Path) -> int | None:
    """The group size in ``record``, or None if absent or damaged (with a warning)."""
    if not record.exists():
        return None
    try:
        size = json.loads(record.read_text())["seed_chunk_size"]
        if isinstance(size, int) and size >= 1:
            return size
        raise ValueError(f"seed_chunk_size {size!r}")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        log.warning("%s is damaged (%s); choosing the seed grouping again", record, err)
        return None


def _seed_chunk(
    run: Run, num_seeds: int, checkpoint_dir: Path | None, requested: int | None
) -> int:
    """The group size: the one recorded in ``checkpoint_dir`` while work is saved there,
    else ``requested``, else :func:`auto_seed_chunk`; recorded for the next run."""
    if checkpoint_dir is None:
        return requested or auto_seed_chunk(run, num_seeds)
    record = checkpoint_dir / "grouping.json"
    recorded = _recorded_seed_chunk(record)
    if recorded is not None and _has_saved_work(checkpoint_dir):
        if requested not in (None, recorded):
            log.warning(
                "seed_chunk_size (--seed-chunk) %d differs from the %d seeds per group that "
                "%s was started with; resuming with %d (results do not depend on the "
                "grouping). Delete %s to restart with another grouping.",
                requested, recorded, checkpoint_dir, recorded, checkpoint_dir,
            )  # fmt: skip
        return recorded
    size = requested or auto_seed_chunk(run, num_seeds)
    if is_main():
        atomic_write_text(record, json.dumps({"seed_chunk_size": size}) + "\n")
    return size


def run_seeds(
    run: Run,
    seeds: Sequence[int],
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    fingerprint: Mapping[str, Any] | None = None,
    seed_chunk_size: int | None = None,
    progress: bool = False,
    final_diagnostics: FinalDiagnostics | None = None,
) -> Results | GridResults:
    """Runs ``seeds`` through ``run`` (every cell of a grid run), resumably; see the module
    docstring.

    Args:
      run: the compiled run; its ``chunk_size`` is the checkpoint interval in tasks.
      seeds: integer seeds; seed ``s`` uses ``PRNGKey(s)``.
      checkpoint_dir: where checkpoints live; None disables checkpointing.
      fingerprint: the run's configuration; resuming with a different one is refused.
      seed_chunk_size: seeds (rows of a grid) per group; None derives it from the compiled
        program's memory. A grouping recorded in ``checkpoint_dir`` with saved work takes
        precedence.
      progress: show a progress bar (tasks x seeds).
      final_diagnostics: measures the trained learners: called once per seed group with
        the group's final :class:`~jaxcl.engine.EngineState` (leading seed axis), it
        returns ``{name: [S, ...] array}``, merged into ``Results.diagnostics`` (names
        must differ from the learner's) and saved with the results, so a finished group
        that is not run again still has them (e.g. an evaluation the engine does not do).

    Returns:
      :class:`Results` for ``seeds``, in order; for a grid run, :class:`GridResults`.

    Raises:
      Interrupted: SIGINT/SIGTERM arrived (in this call or an earlier one); the run saved
        what it finished and can be resumed.
      DirectoryLocked: another process is using ``checkpoint_dir``.
      jaxcl.checkpoint.ConfigMismatchError: ``checkpoint_dir`` holds another configuration.
      jaxcl.checkpoint.DamagedCheckpointError: a group's ``fingerprint.json`` is damaged
        while saved work depends on it.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed")
    if seed_chunk_size is not None and seed_chunk_size < 1:
        raise ValueError(f"seed_chunk_size must be a positive integer, got {seed_chunk_size}")
    if _stopping():  # received during an earlier run of this process (or another)
        raise Interrupted(f"Interrupted by {_stop.signal} before this run started.")
    checkpoint_dir = Path(checkpoint_dir).resolve() if checkpoint_dir is not None else None
    lock = contextlib.nullcontext()
    if checkpoint_dir is not None and jax.process_count() == 1:  # multi-host: shared by design
        lock = lock_directory(checkpoint_dir)
    rows = run.rows(seeds)
    with lock:
        # Process 0's grouping for all (free memory may differ between hosts).
        chosen = _seed_chunk(run, len(rows), checkpoint_dir, seed_chunk_size)
        seed_chunk_size = int(each_process(chosen)[0])
        fingerprint = {
            **dict(fingerprint or {}),
            **({} if run.grid is None else {"grid": run.grid.record()}),
            "num_tasks": run.spec.num_tasks,
            "chunk_size": run.spec.chunk_size,
            "batch_size": run.spec.batch_size,
            "epochs_per_task": run.spec.epochs_per_task,
        }
        groups = [rows[i : i + seed_chunk_size] for i in range(0, len(rows), seed_chunk_size)]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(rows) * run.spec.num_tasks, desc="seed-tasks", leave=False)
        parts = []
        with _deferred_signals():
            for group in groups:
                directory = None
                if checkpoint_dir is not None:
                    directory = checkpoint_dir / f"seeds_{group[0]}-{group[-1]}"
                parts.append(_run_group(run, group, directory, fingerprint, bar, final_diagnostics))
                if _stopping():  # the group's last chunk was running: its results are saved
                    raise _interrupted(f"after finishing seeds {group[0]}..{group[-1]}", directory)
    if bar is not None:
        bar.close()
    return run.results(concatenate_results(parts))
