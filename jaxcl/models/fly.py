"""FlyModel (Shen, Dasgupta & Navlakha 2021) as the SDM paper ran it: no backprop, one pass.

Per example (``TrentBrick/SDMContinualLearner`` ``FlyModel/TestingFlyModel.ipynb``;
algorithms.md §5(a)):

1. min-max scale the input to [0, 1] (``sklearn.minmax_scale(axis=1)``);
2. Kenyon cells ``KC = R p`` with R a fixed sparse binary projection (each of the
   ``num_cells`` cells sums ``n_response`` random inputs);
3. ``KC ← 0`` where ``KC ≤ threshold``; keep the cells ``≥`` the 0.99-quantile (top 1%,
   ties kept) and zero the rest; ``KC ← KC / max(KC)``.

Training is a single pass: for each example of class c, ``W[c] ← min(W[c] + lr·KC, 1)``
(the authors sum a task's examples per class, then clip; since KC ≥ 0 this is the same
in any batching). Prediction is ``argmax_c W[c]·KC`` over the classes seen so far
(class-incremental).

Deviation: R comes from the run's PRNG key (one per seed, vmapped), not from Python's
``random.seed(seed + i)`` per row, so numbers differ from the notebook's by about ±1 pp.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxcl.activations import topk_mask
from jaxcl.losses import mask_logits
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


def random_projection(key: Array, *, input_dim: int, num_cells: int, n_response: int) -> Array:
    """``[input_dim, num_cells]`` binary matrix; each column has ``n_response`` distinct ones.

    Each cell samples its inputs without replacement (the top ``n_response`` of i.i.d.
    uniforms), as ``random.sample(range(input_dim), n_response)`` does.
    """
    scores = jax.random.uniform(key, (num_cells, input_dim))
    _, idx = jax.lax.top_k(scores, n_response)
    rows = jnp.zeros((num_cells, input_dim), jnp.float32)
    rows = rows.at[jnp.arange(num_cells)[:, None], idx].set(1.0)
    return rows.T


def kept_cells(num_cells: int, quantile: float = 0.99) -> int:
    """How many cells ``KC ≥ np.quantile(KC, quantile)`` keeps (ties aside).

    numpy's linear quantile sits at position ``q·(n−1)`` of the ascending order; a value
    strictly above ``s[⌊q(n−1)⌋]`` is kept only if it is ``≥ s[⌊q(n−1)⌋ + 1]``, so the
    kept cells are the largest ``n − ⌊q(n−1)⌋ − 1`` (``n − ⌊q(n−1)⌋`` when q(n−1) is an
    integer), plus ties: 100 of 10,000 and 10 of 1,000 at q = 0.99.
    """
    position = quantile * (num_cells - 1)
    low = math.floor(position)
    return num_cells - low - (1 if position > low else 0)


def kenyon_cells(
    x: Array, projection: Array, *, quantile: float = 0.99, threshold: float = 0.0
) -> Array:
    """Kenyon-cell code ``[B, num_cells]`` of inputs ``x`` ``[B, D]`` (steps 1–3 above).

    Ties at the quantile are all kept, as ``KC[KC < np.quantile(KC, q)] = 0`` does. An
    all-zero code stays zero (the notebook would divide by zero).
    """
    lo = jnp.min(x, axis=-1, keepdims=True)
    span = jnp.max(x, axis=-1, keepdims=True) - lo
    p = (x - lo) / jnp.where(span > 0, span, 1.0)
    kc = p @ projection
    kc = jnp.where(kc <= threshold, 0.0, kc)
    kc = topk_mask(kc, k=kept_cells(projection.shape[1], quantile))
    top = jnp.max(kc, axis=-1, keepdims=True)
    return kc / jnp.where(top > 0, top, 1.0)


def fly_model(
    *,
    input_dim: int,
    num_classes: int,
    num_cells: int = 10_000,
    n_response: int = 32,
    learning_rate: float = 0.005,
    quantile: float = 0.99,
    threshold: float = 0.0,
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

    Raises:
      ValueError: a hyperparameter out of range.

    References:
      Shen, Dasgupta & Navlakha, "Algorithmic insights on continual learning from fruit
      flies", arXiv 2107.07617, 2021; Bricken et al. 2023 App. G.2.
    """
    if not 1 <= n_response <= input_dim:
        raise ValueError(f"n_response={n_response} must lie in [1, input_dim={input_dim}].")
    if num_cells < 1:
        raise ValueError(f"num_cells must be >= 1, got {num_cells}.")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}.")
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile!r}.")

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

    return Learner(init=init, update=update, predict=predict)
