"""A head of ``k`` units shared by tasks of ``k`` classes: output i is a task's i-th class."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl._checks import fail
from jaxcl.scenarios import Scenario
from jaxcl.types import Batch, Learner, PyTree


def within_task_head(learner: Learner, scenario: Scenario) -> Learner:
    """``learner`` with a network of ``k`` outputs on a stream of ``k``-class tasks.

    Output ``i`` means "the task's ``i``-th class in increasing order" in every task, as
    the 2-unit output of Split MNIST in the domain-incremental scenario (van de Ven &
    Tolias, "Three scenarios for continual learning", arXiv 1904.07734) and of the
    class-pair stream of Koster & Kukla (arXiv 2409.17300). Training (``update``, and
    ``end_task``'s batch) relabels each example with its class's rank within the task and
    lets all ``k`` logits compete; ``predict`` places the ``k`` logits on the task's
    classes of the ``C``-way label space and gives the others the dtype's lowest value
    (never chosen), so the engine scores predictions against the original labels.

    Args:
      learner: trains a network whose logits have ``k`` units.
      scenario: the stream; every task must have the same number ``k`` of classes.

    Returns:
      A :class:`jaxcl.types.Learner` with ``learner``'s state.

    Raises:
      ValueError: tasks of different class counts, or (when traced) logits of another
        width than ``k``.
    """
    class_mask = np.asarray(scenario.class_mask)
    counts = class_mask.sum(1)
    if not np.all(counts == counts[0]):
        fail("the scenario's tasks", "of one number of classes each", counts.tolist())
    k = int(counts[0])
    # [T, k] int32: small, fine as a constant of the compiled program.
    classes = jnp.asarray(np.stack([np.flatnonzero(m) for m in class_mask]), jnp.int32)

    def relabel(batch: Batch) -> Batch:
        # The rank of y among the task's classes (0 for a label outside them: padding).
        rank = jnp.argmax(classes[batch.task][None, :] == batch.y[:, None], axis=-1)
        return batch._replace(y=rank.astype(jnp.int32), logit_mask=jnp.ones(k, bool))

    def update(state: PyTree, batch: Batch, key: jax.Array) -> tuple[PyTree, jax.Array]:
        return learner.update(state, relabel(batch), key)

    def predict(state: PyTree, x: jax.Array, task: jax.Array) -> jax.Array:
        logits = learner.predict(state, x, task)
        if logits.shape[-1] != k:
            fail("the learner's logits", f"of {k} units (one per class of a task)", logits.shape)
        lowest = jnp.finfo(logits.dtype).min
        full = jnp.full((x.shape[0], scenario.num_classes), lowest, logits.dtype)
        return full.at[:, classes[task]].set(logits)

    def end_task(state: PyTree, batch: Batch, key: jax.Array) -> PyTree:
        return learner.end_task(state, relabel(batch), key)

    has_end = learner.end_task is not None
    return learner._replace(update=update, predict=predict, end_task=end_task if has_end else None)
