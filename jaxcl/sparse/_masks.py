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
    equal scores are reordered, as the selection orders by the pair (score, tie key)
    lexicographically; unequal scores keep their order exactly. Without ``ties``, or among
    equal pairs, the lower flat index goes first (``lax.top_k``'s rule). Either way the
    count is exact even when scores repeat. Scores are ordered as ``lax.sort`` orders
    them (−0.0 equals 0.0, NaN comes last). Mark excluded entries with ``-inf`` and keep
    ``k`` at most the number of finite scores: -inf entries are chosen only when k
    exceeds it.

    The selection counts instead of sorting (:func:`_first_k`): a bisection over each
    order key's 32 bits, one counting pass per halving, that stops once the count is
    exact. XLA:CPU's sort is slow (about 14 ms for the 50,176 weights of the DST CNN's
    largest layer, against under 1 ms for the selection), and it ran twice per layer in
    every topology update.

    Args:
      scores: float array of any shape (at most 32-bit).
      k: int scalar, possibly traced.
      k_max: static upper bound on k, in [0, scores.size].
      ties: optional order keys among equal scores, an integer array of ``scores.shape``
        (at most 32-bit).

    Returns:
      Bool array of ``scores.shape``.
    """
    flat = scores.reshape(-1)
    if _checks.non_negative_int("k_max", k_max) > flat.size:
        _checks.fail("k_max", f"at most scores.size = {flat.size}", k_max)
    keys = [_order_key("scores", -flat)]
    if ties is not None:
        _checks.shape("ties", ties, scores.shape, f"{scores.shape} (the scores')")
        keys.append(_order_key("ties", ties.reshape(-1)))
    if k_max == 0:
        return jnp.zeros(scores.shape, bool)
    return _first_k(keys, jnp.clip(k, 0, k_max)).reshape(scores.shape)


_SIGN_BIT = np.uint32(0x80000000)


def _order_key(name: str, x: jax.Array) -> jax.Array:
    """uint32 keys whose unsigned order is ``lax.sort``'s ascending order of ``x``.

    Floats: the total order of the values as ``lax.sort`` canonicalises them (−0.0 as
    0.0, every NaN as +NaN, after +inf), by the IEEE bits (sign bit set: all bits
    flipped; clear: the sign bit set). Signed integers: the sign bit flipped.
    """
    if jnp.dtype(x.dtype).itemsize > 4:
        _checks.fail(name, "an array of at most 32-bit values", x.dtype, TypeError)
    if jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
        x = jnp.where(x == 0, jnp.zeros_like(x), x)
        x = jnp.where(jnp.isnan(x), jnp.full_like(x, jnp.nan), x)
        bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
        return jnp.where(bits >= _SIGN_BIT, ~bits, bits | _SIGN_BIT)
    if jnp.issubdtype(x.dtype, jnp.signedinteger):
        return jax.lax.bitcast_convert_type(x.astype(jnp.int32), jnp.uint32) ^ _SIGN_BIT
    return x.astype(jnp.uint32)


def _first_k(keys: list[jax.Array], k: jax.Array) -> jax.Array:
    """The ``k`` first entries ordered by the uint32 ``keys`` lexicographically, then by index.

    Key by key, among the entries still tied, a threshold t is found by bisection
    (:func:`_threshold`): when exactly ``need`` entries have key ≤ t they are chosen and
    the selection is complete; otherwise t is the ``need``-th smallest key, the entries
    below t are chosen and those at t stay tied for the next key. The lower flat index
    decides among the entries tied on every key. ``k`` ≤ the entries.
    """
    chosen = jnp.zeros(keys[0].shape, bool)
    tied = jnp.ones(keys[0].shape, bool)
    need = jnp.asarray(k, jnp.int32)
    for key in keys:
        tied = tied & (need > 0)
        t, exact = _threshold(key, tied, need)
        below = tied & jnp.where(exact, key <= t, key < t)
        chosen = chosen | below
        need = need - jnp.sum(below, dtype=jnp.int32)
        tied = tied & ~exact & (key == t)
    return chosen | (tied & (jnp.cumsum(tied, dtype=jnp.int32) <= need))


def _threshold(key: jax.Array, within: jax.Array, need: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(t, exact)``: a uint32 t with exactly ``need`` entries of ``within`` at ``key`` ≤ t
    (``exact``), else the smallest t with at least ``need`` there.

    Bisection that stops at an exact count: about log2 of the entries' count halvings for
    distinct keys (11–21 for the DST CNN's layers) instead of all 32 bits.
    """

    def searching(state):
        lo, hi, exact = state
        return (lo < hi) & ~exact

    def halve(state):
        lo, hi, _ = state
        mid = lo + (hi - lo) // 2
        count = jnp.sum(within & (key <= mid), dtype=jnp.int32)
        enough = count >= need
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi), count == need

    start = (jnp.uint32(0), jnp.uint32(0xFFFFFFFF), jnp.bool_(False))
    lo, hi, exact = jax.lax.while_loop(searching, halve, start)
    return jnp.where(exact, hi, lo), exact


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
