"""The FlyModel's Kenyon-cell code (Shen, Dasgupta & Navlakha 2021), as the SDM paper ran it.

Per example (``TrentBrick/SDMContinualLearner`` ``FlyModel/TestingFlyModel.ipynb``
``get_KC``):

1. min-max scale the input to [0, 1] (``sklearn.minmax_scale(axis=1)``);
2. Kenyon cells ``KC = R p`` with R a fixed sparse binary projection (each of the
   ``num_cells`` cells sums ``n_response`` random inputs);
3. ``KC ← 0`` where ``KC ≤ threshold``; keep the cells ``≥`` the 0.99-quantile (top 1%,
   ties kept) and zero the rest; ``KC ← KC / max(KC)``.

The one-pass associative learner on this code is :func:`jaxcl.learners.fly_model`.

References:
  Shen, Dasgupta & Navlakha, "Algorithmic insights on continual learning from fruit
  flies", arXiv 2107.07617, 2021; Bricken et al., "Sparse
  Distributed Memory is a Continual Learner", ICLR 2023, App. G.2.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxcl.activations import topk_mask

__all__ = ["kenyon_cells", "kept_cells", "random_projection"]

Array = jax.Array


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
