"""The FlyModel as a learner (Shen, Dasgupta & Navlakha 2021): no backprop, one pass.

Training is a single pass over each task: for each example of class c with Kenyon-cell
code KC (:func:`jaxcl.models.fly.kenyon_cells`), ``W[c] ← min(W[c] + lr·KC, 1)`` (the
authors sum a task's examples per class, then clip; since KC ≥ 0 this is the same in any
batching). Prediction is ``argmax_c W[c]·KC`` over the classes seen so far
(class-incremental). As the SDM paper ran it: ``TrentBrick/SDMContinualLearner``
``FlyModel/TestingFlyModel.ipynb``.

Deviation: R comes from the run's PRNG key (one per seed, vmapped), not from Python's
``random.seed(seed + i)`` per row, so numbers differ from the notebook's by about ±1 pp.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxcl._checks import fail, positive_int
from jaxcl.losses import mask_logits
from jaxcl.models.fly import kenyon_cells, random_projection
from jaxcl.models.sdm import unit_activity
from jaxcl.types import Batch, Learner

Array = jax.Array


class FlyState(NamedTuple):
    """State of :func:`fly_model`.

    Attributes:
      projection: ``[D, num_cells]`` float32 binary R (``n_response`` ones per column).
      weights: ``[C, num_cells]`` float32 associative weights in [0, 1].
      seen: ``[C]`` bool, the classes trained on so far.
    """

    projection: Array
    weights: Array
    seen: Array


def fly_model(
    *,
    input_dim: int,
    num_classes: int,
    num_cells: int = 10_000,
    n_response: int = 32,
    learning_rate: float = 0.005,
    quantile: float = 0.99,
    threshold: float = 0.0,
    probe: Array | None = None,
) -> Learner:
    """The FlyModel as a :class:`jaxcl.types.Learner` (run it with one epoch per task).

    ``update`` is the associative rule ``W ← min(W + lr · onehot(y)ᵀ KC, 1)`` (its loss is
    0); ``predict`` gives ``W·KC`` with classes never trained on masked out.

    Args:
      input_dim: D.
      num_classes: C.
      num_cells: Kenyon cells (the SDM paper: 1,000 and 10,000).
      n_response: inputs per Kenyon cell, ``1 <= n_response <= input_dim`` (SDM paper
        Tables 7/8: 64 at 1K cells, 32 at 10K on Split-MNIST, 64 on Split-FashionMNIST).
      learning_rate: > 0 (paper: 0.005 on Split-MNIST).
      quantile: cells at or above this quantile are kept, in (0, 1).
      threshold: cells at or below it are silenced first.
      probe: ``[N, D]`` inputs; if given, the diagnostic ``dead`` after each task is the
        fraction of Kenyon cells that fire on none of them (as the SDM paper's App. D
        counts dead neurons, e.g. on :meth:`jaxcl.scenarios.Scenario.test_inputs`).

    Raises:
      ValueError: a hyperparameter out of range.
      TypeError: ``num_cells`` or ``n_response`` is not an integer.

    References:
      Shen, Dasgupta & Navlakha, "Algorithmic insights on continual learning from fruit
      flies", arXiv 2107.07617, 2021; Bricken et al. 2023 App. G.2.
    """
    if not 1 <= positive_int("n_response", n_response) <= input_dim:
        fail("n_response", f"in [1, input_dim={input_dim}]", n_response)
    positive_int("num_cells", num_cells)
    if not learning_rate > 0:
        fail("learning_rate", "> 0", learning_rate)
    if not 0 < quantile < 1:
        fail("quantile", "in (0, 1)", quantile)

    def encode(state: FlyState, x: Array) -> Array:
        return kenyon_cells(x, state.projection, quantile=quantile, threshold=threshold)

    def init(key: Array) -> FlyState:
        projection = random_projection(
            key, input_dim=input_dim, num_cells=num_cells, n_response=n_response
        )
        weights = jnp.zeros((num_classes, num_cells), jnp.float32)
        return FlyState(projection, weights, jnp.zeros((num_classes,), bool))

    def update(state: FlyState, batch: Batch, key: Array) -> tuple[FlyState, Array]:
        del key
        onehot = jax.nn.one_hot(batch.y, num_classes) * batch.valid[:, None]
        weights = jnp.minimum(
            state.weights + learning_rate * (onehot.T @ encode(state, batch.x)), 1.0
        )
        seen = state.seen | jnp.any(onehot > 0, axis=0)
        return FlyState(state.projection, weights, seen), jnp.zeros((), jnp.float32)

    def predict(state: FlyState, x: Array, task: Array) -> Array:
        del task
        return mask_logits(encode(state, x) @ state.weights.T, state.seen)

    if probe is None:
        return Learner(init=init, update=update, predict=predict)

    def diagnostics(state: FlyState) -> dict[str, Array]:
        hidden = functools.partial(encode, state)
        return {"dead": jnp.mean(unit_activity(hidden, probe) == 0)}

    return Learner(init=init, update=update, predict=predict, diagnostics=diagnostics)
