"""Weight masks as pytrees of boolean arrays: exact top-k selection, random initial masks.

A mask pytree has the structure and shapes of the parameters it masks; ``True`` keeps a
weight. Counts are traced values, so one compiled program serves every density; the
selection has a static bound and a strict order among equal scores (random order keys, or
the flat index), which makes every count exact.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl import _checks
from jaxcl.optim._masks import check_mask

PyTree = Any


def top_k_mask(
    scores: jax.Array,
    k: jax.typing.ArrayLike,
    *,
    k_max: int,
    ties: jax.Array | None = None,
) -> jax.Array:
    """Boolean mask of exactly ``min(k, k_max)`` entries with the highest scores.

    Among equal scores the entry with the smaller ``ties`` value goes first: pass random
    order keys (e.g. :func:`random_bits_like`) to break ties uniformly at random. Only
    equal scores are reordered, as the selection sorts by the pair (score, tie key)
    lexicographically; unequal scores keep their order exactly. With ``ties=None`` the
    lower flat index goes first (``lax.top_k``'s rule). Either way the count is exact
    even when scores repeat. Mark excluded entries with ``-inf`` and keep ``k`` at most
    the number of finite scores: -inf entries are chosen only when k exceeds it.

    Args:
      scores: float array of any shape.
      k: int scalar, possibly traced.
      k_max: static upper bound on k, in [0, scores.size].
      ties: optional order keys among equal scores, an integer array of ``scores.shape``.

    Returns:
      Bool array of ``scores.shape``.
    """
    flat = scores.reshape(-1)
    if _checks.non_negative_int("k_max", k_max) > flat.size:
        _checks.fail("k_max", f"at most scores.size = {flat.size}", k_max)
    if ties is not None:
        _checks.shape("ties", ties, scores.shape, f"{scores.shape} (the scores')")
    if k_max == 0:
        return jnp.zeros(scores.shape, bool)
    if ties is None:
        _, idx = jax.lax.top_k(flat, k_max)
    else:
        # Ascending by (−score, tie key); lax.sort treats −0.0 and 0.0 as equal.
        order = jnp.arange(flat.size, dtype=jnp.int32)
        _, _, idx = jax.lax.sort((-flat, ties.reshape(-1), order), num_keys=2)
        idx = idx[:k_max]
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
        _checks.fail("densities", "given with bernoulli=True", densities)
    leaves, treedef = jax.tree.flatten(params)
    noise = jax.tree.leaves(uniform_like(key, params))
    masks = [
        u < densities[i] if bernoulli else top_k_mask(u, counts[i], k_max=int(np.size(p)))
        for i, (u, p) in enumerate(zip(noise, leaves, strict=True))
    ]
    return jax.tree.unflatten(treedef, masks)


def uniform_like(key: jax.Array, tree: PyTree) -> PyTree:
    """U[0, 1) float32 noise with the structure and shapes of ``tree`` (one draw)."""
    return _split_like(jax.random.uniform(key, (_total_size(tree),)), tree)


def random_bits_like(key: jax.Array, tree: PyTree) -> PyTree:
    """Random uint32 bits with the structure and shapes of ``tree`` (one draw).

    Order keys for :func:`top_k_mask`'s ``ties``: equal scores are then ranked uniformly
    at random (up to the rare equal bits, ranked by the flat index).
    """
    return _split_like(jax.random.bits(key, (_total_size(tree),), jnp.uint32), tree)


def _total_size(tree: PyTree) -> int:
    return sum(int(np.size(p)) for p in jax.tree.leaves(tree))


def _split_like(flat: jax.Array, tree: PyTree) -> PyTree:
    """``flat`` cut into the leaves of ``tree``, reshaped to their shapes.

    The random helpers draw once for all leaves and split afterwards: XLA compiles one
    random-bits generator instead of one per layer (each costs seconds of CPU compile time).
    """
    leaves, treedef = jax.tree.flatten(tree)
    sizes = [int(np.size(p)) for p in leaves]
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
