"""Evaluation variants of DST continual learning (Yildirim et al., arXiv 2308.14831).

Every variant evaluates task j, once trained, with its own subnetwork ``W ⊙ M_j`` (the task
identity only selects the mask). They differ in the competing logits and in what the
accuracy matrix holds above the diagonal (tasks not trained yet):

``"task_il"`` (default; the paper's task-incremental setting)
  argmax over task j's classes only (build the scenario with ``head="task"``). An unseen
  task j is evaluated with the network as it stands after task i (the latest mask M_i),
  so ``R[j−1, j]`` minus the untrained network's accuracy is GEM's forward transfer.

``"authors_code"`` (``CL-with-DST`` ``evaluate`` and ``cifar100.py`` L123-171)
  argmax over *all* logits against the raw labels (build the scenario with
  ``head="shared"``). An unseen task j after task i is evaluated with M_i and task j's
  labels shifted onto task i's classes (the k-th class of task j counts as the k-th class
  of task i); the authors' FWT is then :func:`authors_fwt`, the mean of the entries above
  the diagonal.

Both keep the authors' training loss on the task's own logits. Deliberately not
reproduced: random crops and flips at test time (``utils.py`` ``get_transform``), shuffled
test batches (``utils.py`` ``get_loader``), and the checkpoint at the epoch of best
*training* accuracy (``cifar100.py``, ``save_checkpoint`` when ``train_acc > best_acc``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl import _checks

# Evaluation variant -> the scenario head it needs (jaxcl.scenarios).
EVALUATIONS = {"task_il": "task", "authors_code": "shared"}


def check_evaluation(name: str) -> str:
    """``name`` if it is one of :data:`EVALUATIONS`, else ValueError."""
    return _checks.one_of("evaluation", name, EVALUATIONS)


def label_shift_maps(task_classes: np.ndarray) -> np.ndarray:
    """``[T, T, C]`` logit gathers that relabel task i's classes as task j's.

    ``out = logits[..., maps[i, j]]`` puts the logit of the k-th class of task i at the
    k-th class of task j (classes in increasing order); the other logits are permuted
    among the remaining classes so that ``maps[i, j]`` is a permutation and an argmax over
    all logits hits task j's k-th class exactly when the original argmax is task i's k-th
    class (the authors' ``target − (t − task_id)·C`` comparison, for any class groups).

    Args:
      task_classes: ``[T, C]`` bool, the classes of each task (``Scenario.class_mask``).

    Returns:
      int32 ``[T, T, C]``; ``maps[i, i]`` is the identity.
    """
    task_classes = np.asarray(task_classes, bool)
    num_tasks, num_classes = task_classes.shape
    groups = [np.flatnonzero(row) for row in task_classes]
    sizes = {len(g) for g in groups}
    if len(sizes) != 1:
        _checks.fail(
            "the number of classes per task", "the same in every task (label shift)", sorted(sizes)
        )
    maps = np.empty((num_tasks, num_tasks, num_classes), np.int32)
    every = np.arange(num_classes)
    for i, src in enumerate(groups):
        for j, dst in enumerate(groups):
            maps[i, j, dst] = src
            maps[i, j, np.setdiff1d(every, dst)] = np.setdiff1d(every, src)
    return maps


def authors_fwt(R: jax.typing.ArrayLike) -> jax.Array:
    """The authors' forward transfer: ``mean_{i<T−1} mean_{j>i} R[i, j]``.

    With the ``"authors_code"`` evaluation, ``R[i, j]`` (j > i) is the accuracy of task i's
    subnetwork on task j with relabelled targets. There is no baseline subtracted. T = 1
    gives 0.0 (as every transfer metric of :mod:`jaxcl.metrics`).

    Args:
      R: ``[..., T, T]`` accuracy matrix.

    Returns:
      ``[...]``.
    """
    R = jnp.asarray(R)
    T = R.shape[-1]
    if T == 1:
        return jnp.zeros(R.shape[:-2], R.dtype)
    upper = jnp.broadcast_to(jnp.triu(jnp.ones((T, T), bool), 1), R.shape)
    row_mean = jnp.sum(jnp.where(upper, R, 0), -1) / jnp.maximum(jnp.sum(upper, -1), 1)
    return jnp.mean(row_mean[..., :-1], axis=-1)
