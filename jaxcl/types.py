"""The types shared by the engine, the learners and the regularizers.

A :class:`Learner` is a bundle of pure functions over an opaque per-seed state; the engine
(:mod:`jaxcl.engine`) calls ``init`` once per seed, ``update`` once per :class:`Batch`,
``begin_task``/``end_task`` at task boundaries and ``predict`` for evaluation, all inside
one ``jit(vmap(scan))``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

__all__ = ["Batch", "Learner", "PyTree"]

PyTree = Any


class Batch(NamedTuple):
    """One training batch, padded to the batch size.

    Attributes:
      x: ``[B, D]`` inputs (the task's input transform already applied).
      y: ``[B]`` int32 labels.
      valid: ``[B]`` bool; False marks padding (the last partial batch of a task).
      task: int32 scalar, the task index.
      logit_mask: ``[C]`` bool, the logits that compete on this task (see Scenario.head).
      epoch: int32 scalar, the global epoch index (``task * epochs_per_task + e``), for
        schedules indexed by epoch (e.g. SDM's linear k annealing).
      index: int32 scalar, the batch's position in its task, ``e · batches_per_epoch + b``
        (skipped padding-only batches count too). The same for every seed, so a learner
        can ``lax.cond`` on it (e.g. DST's topology update every n steps); a per-seed
        counter would turn the cond into a select under the engine's seed ``vmap``.
      task_steps: int32 scalar, the number of batch positions of the task,
        ``epochs · batches_per_epoch`` (``index`` runs over ``0 .. task_steps − 1``), for
        schedules over a task (e.g. DST's cosine death rate).
    """

    x: jax.Array
    y: jax.Array
    valid: jax.Array
    task: jax.Array
    logit_mask: jax.Array
    epoch: jax.Array
    index: jax.Array | int = 0
    task_steps: jax.Array | int = 1


class Learner(NamedTuple):
    """Pure functions the engine drives; every state is per seed (the engine vmaps).

    Attributes:
      init: ``key -> state``.
      update: ``(state, batch, key) -> (state, loss)``; one training step.
      predict: ``(state, x, task) -> logits``; ``x`` is ``[B, D]``.
      begin_task: ``(state, task, key) -> state`` before a task's first batch.
      end_task: ``(state, batch, key) -> state`` after a task's last batch, or None; when
        set, the engine calls it at every task boundary with a ``batch`` of
        ``boundary_examples`` random training examples of the finished task.
      boundary_examples: how many examples ``end_task`` receives (0: a batch of 0 rows).
      diagnostics: ``state -> dict of arrays`` recorded after every task, or None.
    """

    init: Callable[[jax.Array], PyTree]
    update: Callable[[PyTree, Batch, jax.Array], tuple[PyTree, jax.Array]]
    predict: Callable[[PyTree, jax.Array, jax.Array], jax.Array]
    begin_task: Callable[[PyTree, jax.Array, jax.Array], PyTree] = lambda s, t, k: s
    end_task: Callable[[PyTree, Batch, jax.Array], PyTree] | None = None
    boundary_examples: int = 0
    diagnostics: Callable[[PyTree], dict[str, jax.Array]] | None = None
