"""Weight masks as pytrees of boolean arrays: exact top-k selection, random initial masks.

A mask pytree has the structure and shapes of the parameters it masks; ``True`` keeps a
weight. Counts are traced values, so one compiled program serves every density; the
selection itself is :func:`jax.lax.top_k` with a static bound and ties broken by the lower
flat index, which makes every count exact.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl.optim._masks import check_mask

PyTree = Any


def top_k_mask(scores: jax.Array, k: jax.typing.ArrayLike, *, k_max: int) -> jax.Array:
    """Boolean mask of exactly ``min(k, k_max)`` entries with the highest scores.

    Ties are broken by the lower flat index (``lax.top_k``'s rule), so the count is exact
    even when scores repeat. Mark excluded entries with ``-inf`` and keep ``k`` at most the
    number of finite scores: -inf entries are chosen only when k exceeds it.

    Args:
      scores: float array of any shape.
      k: int scalar, possibly traced.
      k_max: static upper bound on k, in [0, scores.size].

    Returns:
      Bool array of ``scores.shape``.
    """
    flat = scores.reshape(-1)
    if not 0 <= k_max <= flat.size:
        raise ValueError(f"k_max must be in [0, {flat.size}], got {k_max}")
    if k_max == 0:
        return jnp.zeros(scores.shape, bool)
    _, idx = jax.lax.top_k(flat, k_max)
    chosen = jnp.arange(k_max) < k
    return jnp.zeros(flat.shape, bool).at[idx].set(chosen).reshape(scores.shape)


def check_masks(
    masks: PyTree, params: PyTree, *, name: str = "masks", boolean: bool = True
) -> None:
    """Raises unless ``masks`` has the structure, exact shapes and boolean dtype of ``params``.

    The checks of :func:`jaxcl.optim` masks (structure, exact leaf shapes, boolean dtype,
    all at trace time; errors name the leaf path). ``boolean=False`` checks only structure
    and shapes, for trees such as growth scores.

    Raises:
      ValueError: different structure or a leaf shape that differs (no broadcasting).
      TypeError: a non-boolean leaf when ``boolean``.
    """
    check_mask(masks, params, name=name, boolean=boolean)


def random_masks(
    key: jax.Array,
    params: PyTree,
    counts: jax.typing.ArrayLike,
    *,
    densities: jax.typing.ArrayLike | None = None,
    bernoulli: bool = False,
) -> PyTree:
    """A random mask per parameter: exactly ``counts[l]`` kept weights in leaf ``l``.

    With ``bernoulli=True`` each weight is kept independently with probability
    ``densities[l]`` (the authors' draw; counts are then only right on average).

    Args:
      key: PRNG key.
      params: parameter pytree (arrays or shape structs); leaves in ``jax.tree.leaves``
        order are layers ``0..L−1``.
      counts: ``[L]`` int, kept weights per layer (traced or concrete).
      densities: ``[L]`` float, required with ``bernoulli=True``.
      bernoulli: draw independent Bernoulli masks instead of exact counts.

    Returns:
      Bool mask pytree with the structure and shapes of ``params``.
    """
    if bernoulli and densities is None:
        raise ValueError("densities is required with bernoulli=True")
    leaves, treedef = jax.tree.flatten(params)
    noise = jax.tree.leaves(uniform_like(key, params))
    masks = [
        u < densities[i] if bernoulli else top_k_mask(u, counts[i], k_max=int(np.size(p)))
        for i, (u, p) in enumerate(zip(noise, leaves, strict=True))
    ]
    return jax.tree.unflatten(treedef, masks)


def uniform_like(key: jax.Array, tree: PyTree) -> PyTree:
    """U[0, 1) float32 noise with the structure and shapes of ``tree``.

    One draw for all leaves, split afterwards: XLA compiles one random-bits generator
    instead of one per layer (each costs seconds of CPU compile time).
    """
    leaves, treedef = jax.tree.flatten(tree)
    sizes = [int(np.size(p)) for p in leaves]
    flat = jax.random.uniform(key, (sum(sizes),))
    parts = jnp.split(flat, np.cumsum(sizes)[:-1]) if len(sizes) > 1 else [flat]
    return jax.tree.unflatten(
        treedef, [u.reshape(jnp.shape(p)) for u, p in zip(parts, leaves, strict=True)]
    )


def apply_masks(params: PyTree, masks: PyTree) -> PyTree:
    """``w ⊙ m``: parameters with every masked-out weight set to zero."""
    check_masks(masks, params)
    return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, masks)


def mask_counts(masks: PyTree) -> jax.Array:
    """``[L]`` int32 number of kept weights per layer (leaf order)."""
    return jnp.stack([jnp.sum(m, dtype=jnp.int32) for m in jax.tree.leaves(masks)])


def leaf_shapes(params: PyTree) -> list[tuple[int, ...]]:
    """Shapes of the parameter leaves, in leaf order (the layers of a sparse network)."""
    return [tuple(jnp.shape(p)) for p in jax.tree.leaves(params)]
