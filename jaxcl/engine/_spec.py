"""The run's options, checked once, and the batch arithmetic derived from them.

A :class:`RunSpec` is built by :func:`jaxcl.engine.make_run` from the options and the
scenario's sizes. Everything the compiled program needs as a Python constant lives here:
how many epochs each task trains, the global index of each task's first epoch, how many
batches every epoch runs, the evaluation batch size and the tasks per host call.

Epochs over ragged tasks: every task runs ``batches_per_epoch = ⌈L / batch_size⌉``
batch positions per epoch, ``L`` the longest task's training rows, so that every task
has the same shapes; the positions of a shorter task that hold only padding are skipped
(not trained, not counted as steps). Task ``t`` trains ``epochs[t]`` epochs, numbered
globally from ``first_epoch[t] = Σ_{u<t} epochs[u]``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxcl import _checks

if TYPE_CHECKING:
    from jaxcl.scenarios import Scenario

__all__ = ["EVAL_TASKS", "RunSpec"]

# Which tasks' test sets are evaluated after each task: every task, those seen so far,
# or the current one only.
EVAL_TASKS = ("all", "current", "seen")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """The options of a run, validated at construction, with their derived quantities.

    Fields hold the values the program uses: ``eval_batch_size`` is at most the test rows
    of a task, ``chunk_size`` at most the number of tasks and ``epochs_per_task`` an int
    or a tuple of ints (kept as given, e.g. for checkpoint fingerprints).

    Attributes:
      num_tasks: ``T``, the scenario's number of tasks.
      train_rows: training rows of the longest task (padded length of every task).
      test_rows: test rows of the longest task.
      batch_size: training examples per batch.
      epochs_per_task: one count for every task, or one count per task.
      eval_batch_size: test examples per evaluation batch.
      eval_tasks: ``"all"``, ``"seen"`` or ``"current"`` (see :data:`EVAL_TASKS`).
      chunk_size: tasks per host call of the compiled program.
      shuffle: a new random order every epoch (else the task's stored order).
      epochs: ``[T]`` epochs of each task (derived).
      first_epoch: ``[T]`` global index of each task's first epoch (derived).
      batches_per_epoch: batch positions of every epoch of every task (derived).

    Raises:
      TypeError: a count that is not an int, or ``shuffle`` not a bool.
      ValueError: a count below 1, ``epochs_per_task`` of the wrong length, or an unknown
        ``eval_tasks``.
    """

    num_tasks: int
    train_rows: int
    test_rows: int
    batch_size: int
    epochs_per_task: int | tuple[int, ...] = 1
    eval_batch_size: int = 1000
    eval_tasks: str = "all"
    chunk_size: int = 1
    shuffle: bool = True
    epochs: tuple[int, ...] = dataclasses.field(init=False)
    first_epoch: tuple[int, ...] = dataclasses.field(init=False)
    batches_per_epoch: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        num_tasks = _checks.positive_int("num_tasks", self.num_tasks)
        train_rows = _checks.positive_int("train_rows", self.train_rows)
        test_rows = _checks.positive_int("test_rows", self.test_rows)
        batch_size = _checks.positive_int("batch_size", self.batch_size)
        eval_batch_size = _checks.positive_int("eval_batch_size", self.eval_batch_size)
        chunk_size = _checks.positive_int("chunk_size", self.chunk_size)
        epochs = _epochs_of_tasks(self.epochs_per_task, num_tasks)
        _checks.one_of("eval_tasks", self.eval_tasks, EVAL_TASKS)
        if not isinstance(self.shuffle, bool | np.bool_):
            _checks.fail("shuffle", "a bool", self.shuffle, TypeError)
        given_one = not isinstance(self.epochs_per_task, Sequence)
        values = {
            "num_tasks": num_tasks,
            "train_rows": train_rows,
            "test_rows": test_rows,
            "batch_size": batch_size,
            "epochs_per_task": epochs[0] if given_one else epochs,
            "eval_batch_size": min(eval_batch_size, test_rows),
            "chunk_size": min(chunk_size, num_tasks),
            "shuffle": bool(self.shuffle),
            "epochs": epochs,
            "first_epoch": tuple(int(e) for e in np.cumsum((0, *epochs[:-1]))),
            "batches_per_epoch": math.ceil(train_rows / batch_size),
        }
        for name, value in values.items():  # a frozen dataclass sets its fields here only
            object.__setattr__(self, name, value)

    @classmethod
    def of(cls, scenario: Scenario, **options: Any) -> RunSpec:
        """The spec of a run of ``scenario`` with ``options`` (the other fields), as
        :func:`jaxcl.engine.make_run` builds it: e.g. a learner's batch arithmetic
        (:attr:`task_steps`) before its run is made."""
        return cls(
            num_tasks=scenario.num_tasks,
            train_rows=scenario.train_idx.shape[1],
            test_rows=scenario.test_idx.shape[1],
            **options,
        )

    @property
    def task_steps(self) -> tuple[int, ...]:
        """``[T]`` batch positions of each task, ``epochs[t] · batches_per_epoch``: what the
        engine passes the learner as ``Batch.task_steps`` (e.g. for a schedule over a task)."""
        return tuple(epochs * self.batches_per_epoch for epochs in self.epochs)


def _epochs_of_tasks(epochs_per_task: int | Sequence[int], num_tasks: int) -> tuple[int, ...]:
    """Epochs of each task, from one count for all or one count per task."""
    if isinstance(epochs_per_task, str) or not isinstance(epochs_per_task, Sequence):
        return (_checks.positive_int("epochs_per_task", epochs_per_task),) * num_tasks
    if len(epochs_per_task) != num_tasks:
        allowed = f"a positive integer or a sequence of {num_tasks} (one per task)"
        _checks.fail("epochs_per_task", allowed, epochs_per_task)
    return tuple(
        _checks.positive_int(f"epochs_per_task[{t}]", e) for t, e in enumerate(epochs_per_task)
    )
