"""Weight masks as pytrees of boolean arrays: exact top-k selection, random initial masks.

A mask pytree has the structure and shapes of the parameters it masks; ``True`` keeps a
weight. Counts are traced values, so one compiled program serves every density; the
selection has a static bound and a strict order among equal scores (random order keys, or
the flat index), which makes every count exact.
"""

from __future__ import annotations

from collections.abc import Sequence
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

    The selection counts instead of sorting (see :func:`top_k_masks`, which selects in
    several arrays at once). XLA:CPU's sort is slow: about 14 ms for the 50,176 weights
    of the DST CNN's largest layer, against under 1 ms for the selection.

    Args:
      scores: float array of any shape (at most 32-bit).
      k: int scalar, possibly traced.
      k_max: static upper bound on k, in [0, scores.size].
      ties: optional order keys among equal scores, an integer array of ``scores.shape``
        (at most 32-bit).

    Returns:
      Bool array of ``scores.shape``.
    """
    ties_list = None if ties is None else [ties]
    return top_k_masks([scores], jnp.reshape(k, (1,)), k_max=[k_max], ties=ties_list)[0]


def top_k_masks(
    scores: Sequence[jax.Array],
    k: jax.typing.ArrayLike,
    *,
    k_max: Sequence[int],
    ties: Sequence[jax.Array] | None = None,
) -> list[jax.Array]:
    """:func:`top_k_mask` of every array of ``scores`` with its own ``k[i]``, at once.

    The selection counts instead of sorting: per array, a bisection over the 32 bits of
    each order key (the score's, then the tie key's) finds the threshold of the first
    ``k[i]`` entries, one counting pass per halving, stopping once the count is exact
    (11–21 halvings for the DST CNN's layers, then one for the tie key). The arrays share
    each halving's loop iteration, which matters when there are several small ones (a
    network's layers): XLA:CPU's cost per loop iteration then exceeds the counting.

    Args:
      scores: float arrays of any shapes (at most 32-bit).
      k: ``[len(scores)]`` ints, possibly traced.
      k_max: static upper bounds on ``k``, ``k_max[i]`` in [0, scores[i].size].
      ties: optional order keys for every array (see :func:`top_k_mask`).

    Returns:
      Bool arrays of the scores' shapes.
    """
    if len(k_max) != len(scores):
        _checks.fail("k_max", f"one bound per array of scores ({len(scores)})", k_max)
    if ties is not None and len(ties) != len(scores):
        _checks.fail("ties", f"one array per array of scores ({len(scores)})", len(ties))
    keys = []
    for i, (s, bound) in enumerate(zip(scores, k_max, strict=True)):
        if _checks.non_negative_int("k_max", bound) > s.size:
            _checks.fail("k_max", f"at most scores.size = {s.size}", bound)
        keys.append([_order_key("scores", -s.reshape(-1))])
        if ties is not None:
            _checks.shape("ties", ties[i], s.shape, f"{s.shape} (the scores')")
            keys[-1].append(_order_key("ties", ties[i].reshape(-1)))
        keys[-1].append(jnp.arange(s.size, dtype=jnp.uint32))  # the flat index, unique
    bounds = jnp.asarray(k_max, jnp.int32)
    chosen = _first_k(keys, jnp.clip(jnp.asarray(k, jnp.int32), 0, bounds))
    return [c.reshape(s.shape) for c, s in zip(chosen, scores, strict=True)]


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


def _first_k(keys: list[list[jax.Array]], k: jax.Array) -> list[jax.Array]:
    """Per array i, the ``k[i]`` first entries ordered by its uint32 ``keys[i]``
    lexicographically; the last key is unique (the flat index).

    Key by key, among the entries still tied, a threshold t is found by bisection
    (:func:`_thresholds`): when exactly ``need`` entries have key ≤ t they are chosen and
    the selection is complete; otherwise t is the ``need``-th smallest key, the entries
    below t are chosen and those at t stay tied for the next key. At the unique last key
    at most one entry stays tied, chosen if one is still needed. ``k[i]`` ≤ the entries
    of array i.
    """
    chosen = [jnp.zeros(key[0].shape, bool) for key in keys]
    tied = [jnp.ones(key[0].shape, bool) for key in keys]
    need = k
    for level in range(len(keys[0])):
        tied = [t & (n > 0) for t, n in zip(tied, need, strict=True)]
        level_keys = [key[level] for key in keys]
        ts, exact = _thresholds(level_keys, tied, need)
        below = [
            t & jnp.where(e, key <= th, key < th)
            for t, key, th, e in zip(tied, level_keys, ts, exact, strict=True)
        ]
        chosen = [c | b for c, b in zip(chosen, below, strict=True)]
        need = need - jnp.stack([jnp.sum(b, dtype=jnp.int32) for b in below])
        tied = [
            t & ~e & (key == th) for t, key, th, e in zip(tied, level_keys, ts, exact, strict=True)
        ]
    return [c | (t & (n > 0)) for c, t, n in zip(chosen, tied, need, strict=True)]


def _thresholds(
    keys: list[jax.Array], within: list[jax.Array], need: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """``(t, exact)``, per array i a uint32 ``t[i]`` with exactly ``need[i]`` entries of
    ``within[i]`` at ``keys[i]`` ≤ t (``exact[i]``), else the smallest t with at least
    ``need[i]`` there; all arrays bisect in the same loop iterations."""

    def searching(state):
        lo, hi, exact = state
        return jnp.any((lo < hi) & ~exact)

    def halve(state):
        lo, hi, exact = state
        mid = lo + (hi - lo) // 2
        count = jnp.stack(
            [
                jnp.sum(w & (key <= m), dtype=jnp.int32)
                for key, w, m in zip(keys, within, mid, strict=True)
            ]
        )
        enough = count >= need
        moving = (lo < hi) & ~exact  # finished arrays keep their bounds
        lo = jnp.where(moving & ~enough, mid + 1, lo)
        hi = jnp.where(moving & enough, mid, hi)
        return lo, hi, exact | (moving & (count == need))

    size = len(keys)
    start = (
        jnp.zeros(size, jnp.uint32),
        jnp.full(size, 0xFFFFFFFF, jnp.uint32),
        jnp.zeros(size, bool),
    )
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
    if bernoulli:
        masks = [u < densities[i] for i, u in enumerate(noise)]
    else:
        sizes = [int(np.size(p)) for p in leaves]
        masks = top_k_masks(noise, counts, k_max=sizes)
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
