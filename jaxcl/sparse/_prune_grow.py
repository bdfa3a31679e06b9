r"""Topology update of dynamic sparse training: magnitude pruning, then regrowth.

Per layer l with :math:`n_l` kept weights and prune fraction r, exactly
:math:`k_l = \lceil r\, n_l \rceil` weights of smallest magnitude leave the mask and
exactly :math:`k_l` positions outside the pruned mask enter it, chosen by a growth
criterion's scores. Densities are therefore unchanged by every update. All functions are
pure, traceable and work on pytrees of masks, weights and scores with the parameters'
structure; counts may be traced.

References:
  Mocanu et al. 2018 (SET), Evci et al. 2020 (RigL), Dettmers & Zettlemoyer 2019 (sparse
  momentum); Yildirim et al., `Continual Learning with Dynamic Sparse Training
  <https://arxiv.org/abs/2308.14831>`_, CPAL 2024 (``core.py`` ``truncate_weights``).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxcl import _checks
from jaxcl.sparse._masks import (
    check_masks,
    random_bits_like,
    top_k_mask,
    top_k_masks,
    uniform_like,
)

PyTree = Any
GROWTH = ("random", "unfired", "gradient", "momentum")


def check_growth(name: str) -> int:
    """Index of growth criterion ``name`` in :data:`GROWTH`; ValueError if unknown."""
    return GROWTH.index(_checks.one_of("growth", name, GROWTH))


def magnitude_prune(
    weights: jax.Array,
    mask: jax.Array,
    num_remove: jax.typing.ArrayLike,
    *,
    k_max: int,
    ties: jax.Array | None = None,
) -> jax.Array:
    """Removes the ``num_remove`` kept weights of smallest ``|w|`` from ``mask``.

    Ties (e.g. weights still at zero) follow ``ties`` as in :func:`top_k_mask` (random
    order keys: a uniformly random choice; None: the lower flat index), so exactly
    ``min(num_remove, k_max)`` leave (given ``num_remove`` ≤ the number of kept weights).
    """
    check_masks(mask, weights, name="mask")
    return mask & ~top_k_mask(_prune_scores(weights, mask), num_remove, k_max=k_max, ties=ties)


def _prune_scores(weights: jax.Array, mask: jax.Array) -> jax.Array:
    """Pruning goes first where ``|w|`` is smallest, among the kept weights only."""
    return jnp.where(mask, -jnp.abs(weights), -jnp.inf)


def regrow(
    mask: jax.Array,
    scores: jax.Array,
    num_grow: jax.typing.ArrayLike,
    *,
    k_max: int,
    ties: jax.Array | None = None,
) -> jax.Array:
    """Adds the ``num_grow`` positions outside ``mask`` with the highest ``scores``.

    Equal scores (e.g. the zero gradients of dead units) follow ``ties`` as in
    :func:`top_k_mask`.
    """
    check_masks(mask, scores, name="mask")
    return mask | top_k_mask(_grow_scores(mask, scores), num_grow, k_max=k_max, ties=ties)


def _grow_scores(mask: jax.Array, scores: jax.Array) -> jax.Array:
    """Growth candidates are the positions outside ``mask``."""
    return jnp.where(mask, -jnp.inf, scores)


def growth_scores(
    criterion: str | jax.typing.ArrayLike,
    key: jax.Array,
    *,
    grads: PyTree,
    momentum: PyTree,
    fired: PyTree,
    frozen: PyTree,
) -> PyTree:
    """Regrowth scores per weight (higher grows first) of one of the :data:`GROWTH` criteria.

    * ``random``: uniform noise, i.e. a uniformly random choice among the candidates.
    * ``unfired``: noise + 1 where the position was never in the mask during the current
      task (``fired`` false), so unfired positions go first, at random, then the rest.
    * ``gradient``: ``|∂L/∂w|`` of the current batch (RigL).
    * ``momentum``: ``|momentum|``, e.g. Adam's normalised first moment
      ``m / (√v + 1e-8)`` (sparse momentum). The moments must have moved at the
      candidates, i.e. outside the mask: the authors' Adam sees the dense gradient at every
      non-frozen position, and :func:`jaxcl.learners.dst` updates its optimizer's moments
      there too. Moments that only move inside the mask score every candidate 0 but the
      weights just pruned, so the mask soon stops changing.

    Frozen weights (earlier tasks) get a zero gradient and momentum score, as their
    gradients are zeroed in the authors' code; they stay candidates, ranked last. Equal
    scores (frozen weights, dead units with zero gradients) are ordered by
    :func:`prune_and_regrow`'s ``key``: at random, not by position.

    Args:
      criterion: a name of :data:`GROWTH`, or its index as an int (possibly traced, e.g.
        a per-task schedule); all four are compiled then and selected by ``lax.switch``.
      key: PRNG key for the random criteria.
      grads: dense gradient w.r.t. the (masked) weights.
      momentum: per-weight momentum, same structure.
      fired: bool masks, positions in the mask at any time during the task.
      frozen: bool masks, weights of earlier tasks.

    Returns:
      Float pytree of scores with the parameters' structure.
    """
    check_masks(momentum, grads, name="momentum", boolean=False)
    check_masks(fired, grads, name="fired")
    check_masks(frozen, grads, name="frozen")
    noise = uniform_like(key, grads)

    def live(values):
        return jax.tree.map(lambda v, f: jnp.where(f, 0, jnp.abs(v)), values, frozen)

    branches = (
        lambda: noise,
        lambda: jax.tree.map(lambda n, f: n + (~f).astype(n.dtype), noise, fired),
        lambda: live(grads),
        lambda: live(momentum),
    )
    if isinstance(criterion, str):
        return branches[check_growth(criterion)]()
    return jax.lax.switch(criterion, branches)


class TopologyUpdate(NamedTuple):
    """Result of :func:`prune_and_regrow`.

    Attributes:
      masks: the new masks.
      removed: ``[L]`` int32, weights pruned per layer (leaf order); as many were regrown.
    """

    masks: PyTree
    removed: jax.Array


def prune_and_regrow(
    weights: PyTree,
    masks: PyTree,
    scores: PyTree,
    death_rate: jax.typing.ArrayLike,
    *,
    max_death_rate: float = 0.5,
    key: jax.Array | None = None,
) -> TopologyUpdate:
    r"""Magnitude pruning of a fraction ``death_rate`` per layer, then equal regrowth.

    Layer l keeps :math:`n_l` weights; :math:`k_l = \min(\lceil r n_l \rceil, K_l)` of
    smallest ``|w|`` are pruned, with the static bound :math:`K_l = \lceil r_{\max}
    N_l \rceil`; then the :math:`k_l` highest-``scores`` positions outside the pruned mask
    are grown (just-pruned positions included, as in the authors' code). Per-layer counts
    are exact: ``masks`` and the result keep the same number of weights in every layer.
    Equal magnitudes and equal scores are ranked at random with ``key`` (independent
    order keys for pruning and growth, :func:`jaxcl.sparse.top_k_mask`), else by the lower
    flat index, which favours the first rows and channels.

    Args:
      weights: parameter pytree (the magnitudes that are pruned).
      masks: bool pytree with the same structure and shapes.
      scores: growth scores, same structure (see :func:`growth_scores`).
      death_rate: float scalar r in [0, max_death_rate] (possibly traced).
      max_death_rate: static bound r_max in [0, 1] on ``death_rate``.
      key: PRNG key that breaks ties at random; None: by the lower flat index.

    Returns:
      A :class:`TopologyUpdate`.
    """
    _checks.in_range("max_death_rate", max_death_rate, 0, 1, scalar=True)
    check_masks(masks, weights)
    check_masks(scores, weights, name="scores", boolean=False)
    weight_leaves, mask_leaves, score_leaves = (
        jax.tree.leaves(t) for t in (weights, masks, scores)
    )
    if key is None:
        prune_ties = grow_ties = None
    else:  # one draw for both orders (see random_bits_like)
        prune_ties, grow_ties = map(jax.tree.leaves, random_bits_like(key, (weights, weights)))
    # All layers select together (top_k_masks): one loop for the pruning, one for the growth.
    k_max = [math.ceil(max_death_rate * w.size) for w in weight_leaves]
    kept = jnp.stack([jnp.sum(m, dtype=jnp.int32) for m in mask_leaves])
    removed = jnp.minimum(jnp.ceil(death_rate * kept).astype(jnp.int32), jnp.asarray(k_max))
    prune_scores = [_prune_scores(w, m) for w, m in zip(weight_leaves, mask_leaves, strict=True)]
    leaving = top_k_masks(prune_scores, removed, k_max=k_max, ties=prune_ties)
    pruned = [m & ~out for m, out in zip(mask_leaves, leaving, strict=True)]
    grown = top_k_masks(
        [_grow_scores(m, s) for m, s in zip(pruned, score_leaves, strict=True)],
        removed,
        k_max=k_max,
        ties=grow_ties,
    )
    new_masks = [m | g for m, g in zip(pruned, grown, strict=True)]
    return TopologyUpdate(jax.tree.unflatten(jax.tree.structure(weights), new_masks), removed)
