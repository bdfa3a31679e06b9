"""Per-layer densities of a sparse network: uniform and Erdős–Rényi-Kernel (ERK).

Densities are fractions of kept weights per layer; :func:`layer_counts` turns them into
exact integer counts whose total is exactly ``round(density · Σ N_l)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

INITS = ("erk", "uniform")
Shape = Sequence[int]


def check_density(density: float) -> float:
    """``density`` as a float, refused unless it lies in (0, 1]."""
    d = float(density)
    if not 0.0 < d <= 1.0:  # also refuses NaN
        raise ValueError(f"density must be in (0, 1], got {density!r}")
    return d


def _check_shapes(shapes: Sequence[Shape]) -> list[tuple[int, ...]]:
    shapes = [tuple(int(n) for n in s) for s in shapes]
    if not shapes:
        raise ValueError("shapes is empty: a sparse network needs at least one layer")
    bad = [s for s in shapes if len(s) < 1 or min(s) < 1]
    if bad:
        raise ValueError(f"every shape must be non-empty with positive sizes, got {bad}")
    return shapes


def uniform_densities(shapes: Sequence[Shape], density: float) -> list[float]:
    """Every layer keeps the same fraction ``density`` of its weights."""
    density = check_density(density)
    return [density] * len(_check_shapes(shapes))


def erk_densities(
    shapes: Sequence[Shape], density: float, *, power_scale: float = 1.0
) -> list[float]:
    r"""Erdős–Rényi-Kernel densities: sparse layers in proportion to (Σ dims)/(Π dims).

    Layer l with shape :math:`s_l` and :math:`N_l = \prod s_l` weights gets
    :math:`d_l = \epsilon\, r_l` with :math:`r_l = (\sum s_l / \prod s_l)^{p}`. The scale
    :math:`\epsilon` keeps the overall density: with D the set of dense layers (d_l = 1),

    .. math::

      \epsilon \sum_{l \notin D} r_l N_l = d \sum_{l \notin D} N_l - (1 - d) \sum_{l \in D} N_l .

    Starting from D = ∅, while some :math:`\epsilon r_l > 1` every layer with the largest
    :math:`r_l` joins D and ε is solved again (the authors' loop, ``core.py``
    ``Masking.init``). Then :math:`\sum_l d_l N_l = d \sum_l N_l` exactly (up to float
    rounding). Convolution kernels count every dimension, e.g. ``(3, 3, 64, 128)``.

    Args:
      shapes: the shape of every prunable weight, in a fixed order.
      density: overall fraction of weights kept, in (0, 1].
      power_scale: the exponent p (1 in the paper).

    Returns:
      One density in (0, 1] per shape.

    Examples:
      >>> erk_densities([(2, 2), (10, 10)], 0.5)  # ε·r = 2.17 > 1 for (2, 2): made dense
      [1.0, 0.48]

    References:
      Evci et al., `Rigging the Lottery <https://arxiv.org/abs/1911.11134>`_, 2020;
      Yildirim et al., `Continual Learning with Dynamic Sparse Training
      <https://arxiv.org/abs/2308.14831>`_, CPAL 2024 (``muratonuryildirim/CL-with-DST``).
    """
    density = check_density(density)
    shapes = _check_shapes(shapes)
    sizes = np.asarray([np.prod(s, dtype=np.float64) for s in shapes])
    raw = np.asarray([sum(s) / n for s, n in zip(shapes, sizes, strict=True)]) ** power_scale
    dense = np.zeros(len(shapes), bool)
    while True:
        sparse = ~dense
        rhs = density * sizes[sparse].sum() - (1.0 - density) * sizes[dense].sum()
        epsilon = rhs / (raw[sparse] * sizes[sparse]).sum()
        largest = raw[sparse].max()
        # Terminates: each pass makes at least one more layer dense, and with every layer
        # but the largest-raw group dense the group's ε·r is ≤ 1 whenever density ≤ 1.
        if epsilon * largest <= 1.0:
            break
        dense |= sparse & (raw == largest)
    return [1.0 if is_dense else float(epsilon * r) for is_dense, r in zip(dense, raw, strict=True)]


def densities(shapes: Sequence[Shape], density: float, *, init: str) -> list[float]:
    """Per-layer densities by name: ``"erk"`` (:func:`erk_densities`) or ``"uniform"``."""
    if init == "erk":
        return erk_densities(shapes, density)
    if init == "uniform":
        return uniform_densities(shapes, density)
    raise ValueError(f"init must be one of {INITS}, got {init!r}")


def layer_counts(shapes: Sequence[Shape], layer_densities: Sequence[float]) -> list[int]:
    """Exact kept-weight counts per layer, summing to ``round(Σ d_l N_l)``.

    Largest-remainder rounding: every layer gets ``floor(d_l N_l)``, then the layers with
    the largest fractional parts get one more until the total is reached, so the overall
    density is as exact as integers allow and no layer is off by more than one weight.

    Args:
      shapes: shapes of the prunable weights.
      layer_densities: one density in (0, 1] per shape.

    Returns:
      One count in [0, N_l] per layer.
    """
    shapes = _check_shapes(shapes)
    if len(layer_densities) != len(shapes):
        raise ValueError(
            f"got {len(layer_densities)} densities for {len(shapes)} shapes; need one each"
        )
    for d in layer_densities:
        check_density(d)
    sizes = np.asarray([np.prod(s, dtype=np.int64) for s in shapes])
    exact = np.asarray(layer_densities, np.float64) * sizes
    counts = np.minimum(np.floor(exact).astype(np.int64), sizes)
    missing = round(exact.sum()) - int(counts.sum())
    # Stable sort: equal remainders go to the earlier layer.
    for i in np.argsort(-(exact - counts), kind="stable")[: max(missing, 0)]:
        counts[i] += 1
    return [int(c) for c in counts]
