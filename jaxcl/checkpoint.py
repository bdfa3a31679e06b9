"""Checkpoints of a run's whole carry between task chunks (orbax-checkpoint).

A checkpoint holds one pytree (the engine state of every seed, the pre-training
evaluation and the per-task records so far) plus a JSON side record with the number of
tasks done and a SHA-256 digest of every array. Saving is synchronous: when
:meth:`Checkpointer.save` returns, the step is committed, so a SIGKILL afterwards loses
nothing that was saved. Restoring verifies the digest; a torn or corrupt latest step is
skipped (with a warning) and the previous one used. Only the newest ``keep`` steps stay.

The directory also holds ``fingerprint.json``, the run's configuration. Opening it with
a different configuration is refused with a message listing what differs, so a resumed
run can never silently mix two configurations. A damaged (unreadable) ``fingerprint.json``
is rewritten when nothing in the directory depends on it, and otherwise refused with
:class:`DamagedCheckpointError`, since the saved work could belong to another
configuration.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jaxcl.io import digest, read_json, write_json
from jaxcl.types import PyTree

__all__ = [
    "Checkpointer",
    "ConfigMismatchError",
    "DamagedCheckpointError",
    "saved_steps",
]

log = logging.getLogger(__name__)


class ConfigMismatchError(ValueError):
    """A checkpoint directory belongs to a run with another configuration."""


class DamagedCheckpointError(RuntimeError):
    """A file that saved work depends on is unreadable; the message names it."""


def _canonical(fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    # Round-trip through JSON so tuples/lists and numpy scalars compare equal. default=str,
    # not write_json's conversion: existing directories' fingerprints must still match.
    return json.loads(json.dumps(dict(fingerprint), sort_keys=True, default=str))


def _read_fingerprint(path: Path) -> dict[str, Any] | None:
    """The stored fingerprint, or None if ``path`` is not a readable JSON object."""
    try:
        stored = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return stored if isinstance(stored, dict) else None


def saved_steps(directory: str | os.PathLike) -> list[int]:
    """Committed steps under ``directory/steps`` (orbax names them by the bare number)."""
    steps = Path(directory) / "steps"
    if not steps.exists():
        return []
    return sorted(int(p.name) for p in steps.iterdir() if p.name.isdigit())


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [
        f"{k}: checkpoint has {old.get(k)!r}, now {new.get(k)!r}"
        for k in keys
        if old.get(k) != new.get(k)
    ]


class Checkpointer:
    """Saves and restores one run's carry in ``directory``.

    Args:
      directory: where the steps live (created if needed).
      fingerprint: JSON-able description of the run (config, seeds, chunking).
      keep: how many of the newest steps to keep (>= 1; 2 leaves a fallback).

    Raises:
      ConfigMismatchError: ``directory`` holds checkpoints of another configuration.
    """

    def __init__(
        self, directory: str | os.PathLike, *, fingerprint: Mapping[str, Any], keep: int = 2
    ):
        import orbax.checkpoint as ocp

        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = Path(directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fingerprint = _canonical(fingerprint)
        self._check_fingerprint(self.directory / "fingerprint.json")
        self._ocp = ocp
        self._manager = ocp.CheckpointManager(
            self.directory / "steps",
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, enable_async_checkpointing=False, create=True
            ),
        )

    def _check_fingerprint(self, path: Path) -> None:
        """Refuses another configuration's directory; writes the fingerprint if absent.

        Saved work (checkpoint steps, or any other non-hidden file such as a finished
        group's results) depends on the fingerprint: if it is missing or unreadable, that
        work cannot be checked against this configuration, so it is refused, never used.
        """
        stored = _read_fingerprint(path)
        if stored is not None:
            diff = _differences(stored, self.fingerprint)
            if diff:
                raise ConfigMismatchError(
                    f"{self.directory} holds checkpoints of a different configuration; "
                    f"differences: {'; '.join(diff)}. Use another --out directory, or delete "
                    f"{self.directory} to start over."
                )
            return
        state = "damaged" if path.exists() else "missing"
        dependent = sorted(
            p.name
            for p in self.directory.iterdir()
            if p.is_file() and not p.name.startswith(".") and p != path
        )
        if steps := saved_steps(self.directory):
            dependent.append(f"checkpoint steps {steps}")
        if dependent:
            raise DamagedCheckpointError(
                f"{path} is {state}, but the saved work beside it depends on it "
                f"({', '.join(dependent)}), which cannot be checked against this "
                f"configuration. Delete {self.directory} to recompute this part of the run."
            )
        if state == "damaged":
            log.warning("%s is damaged (not a JSON object); rewriting it", path)
        write_json(path, self.fingerprint, sort_keys=True)

    def steps(self) -> list[int]:
        """Committed steps (tasks done), oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, tasks_done: int, tree: PyTree) -> None:
        """Commits ``tree`` as the state after ``tasks_done`` tasks (blocking)."""
        args = self._ocp.args
        if tasks_done in self._manager.all_steps():  # an unusable step being redone
            self._manager.delete(tasks_done)
        self._manager.save(
            tasks_done,
            args=args.Composite(
                state=args.StandardSave(tree),
                meta=args.JsonSave({"tasks_done": tasks_done, "digest": digest(tree)}),
            ),
            force=True,
        )
        self._manager.wait_until_finished()

    def restore_latest(self, abstract: PyTree) -> tuple[int, PyTree] | None:
        """The newest step that restores and verifies, as ``(tasks_done, tree)``, or None.

        Args:
          abstract: the tree's structure with ``jax.ShapeDtypeStruct`` leaves (shardings
            included), e.g. from ``jax.eval_shape``.
        """
        args = self._ocp.args
        for step in reversed(self.steps()):
            try:
                restored = self._manager.restore(
                    step,
                    args=args.Composite(
                        state=args.StandardRestore(abstract), meta=args.JsonRestore()
                    ),
                )
                meta, tree = restored["meta"], restored["state"]
                if meta["tasks_done"] != step or meta["digest"] != digest(tree):
                    raise ValueError("digest mismatch")
            except Exception as err:  # any unreadable step is skipped, never trusted
                log.warning(
                    "checkpoint step %d in %s is unusable (%s); trying an older one",
                    step,
                    self.directory,
                    err,
                )
                continue
            return step, tree
        return None

    def close(self) -> None:
        self._manager.close()
