"""Per-layer densities of a sparse network: uniform and Erdős–Rényi-Kernel (ERK).

Densities are fractions of kept weights per layer; :func:`layer_counts` turns them into
exact integer counts whose total is exactly ``round(density · Σ N_l)``, and refuses
densities so small that a layer would keep no weight.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from jaxcl import _checks

INITS = ("erk", "uniform")
Shape = Sequence[int]


def check_density(density: float) -> float:
    """``density`` as a float, refused unless it is a real number in (0, 1]."""
    return _checks.in_range("density", density, 0, 1, "(]", scalar=True)


def _check_shapes(shapes: Sequence[Shape]) -> list[tuple[int, ...]]:
    shapes = [tuple(int(n) for n in s) for s in shapes]
    if not shapes:
        _checks.fail("shapes", "non-empty (a sparse network needs at least one layer)", shapes)
    bad = [s for s in shapes if len(s) < 1 or min(s) < 1]
    if bad:
        _checks.fail("every shape", "non-empty with positive sizes", bad)
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
    _checks.one_of("init", init, INITS)
    if init == "erk":
        return erk_densities(shapes, density)
    return uniform_densities(shapes, density)


def layer_counts(shapes: Sequence[Shape], layer_densities: Sequence[float]) -> list[int]:
    """Exact kept-weight counts per layer, summing to ``round(Σ d_l N_l)``.

    Largest-remainder rounding: every layer gets ``floor(d_l N_l)``, then the layers with
    the largest fractional parts get one more until the total is reached, so the overall
    density is as exact as integers allow and no layer is off by more than one weight.

    Args:
      shapes: shapes of the prunable weights.
      layer_densities: one density in (0, 1] per shape.

    Returns:
      One count in [1, N_l] per layer.

    Raises:
      ValueError: if a layer would keep no weight (a density below ``1 / N_l`` may round
        to 0); the message names the layer and the density ``1 / N_l`` that keeps one.
    """
    shapes = _check_shapes(shapes)
    if len(layer_densities) != len(shapes):
        _checks.fail(
            "layer_densities", f"one density for each of the {len(shapes)} shapes", layer_densities
        )
    layer_densities = [check_density(d) for d in layer_densities]
    counts = _largest_remainder(shapes, layer_densities)
    empty = _first_empty(counts)
    if empty is not None:
        size = math.prod(shapes[empty])
        _checks.fail(
            f"the density of {_describe(empty, shapes)}",
            f"at least 1/{size} = {_round_up(1 / size)} to keep one weight",
            layer_densities[empty],
        )
    return counts


def density_counts(
    shapes: Sequence[Shape], density: float, *, init: str
) -> tuple[list[float], list[int]]:
    """Per-layer densities (:func:`densities`) and exact counts (:func:`layer_counts`).

    Raises:
      ValueError: if ``density`` is so small that a layer keeps no weight; the message
        names the layer and :func:`min_density`, the overall density that keeps one
        weight in every layer.
    """
    layer_densities = densities(shapes, density, init=init)
    shapes = _check_shapes(shapes)
    counts = _largest_remainder(shapes, layer_densities)
    empty = _first_empty(counts)
    if empty is not None:
        _checks.fail(
            "density",
            f"at least {_round_up(min_density(shapes, init=init))} with init={init!r} to keep a "
            f"weight in every layer ({_describe(empty, shapes)} would get density "
            f"{layer_densities[empty]:.3g}, no weight)",
            density,
        )
    return layer_densities, counts


def min_density(shapes: Sequence[Shape], *, init: str) -> float:
    """The smallest overall density with ``d_l N_l ≥ 1`` in every layer (bisection).

    At this density or above every layer keeps at least one weight (its count is at least
    ``floor(d_l N_l)``); rounding may still keep one slightly below it. For ``"uniform"``
    it is ``1 / min_l N_l``.
    """
    shapes = _check_shapes(shapes)
    sizes = np.asarray([math.prod(s) for s in shapes], np.float64)

    def keeps_all(d: float) -> bool:
        return bool(np.all(np.asarray(densities(shapes, d, init=init)) * sizes >= 1.0))

    # Layer densities grow with the overall density (ERK's ε does), and at 1 all are dense.
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if keeps_all(mid) else (mid, hi)
    return hi


def _largest_remainder(shapes: Sequence[Shape], layer_densities: Sequence[float]) -> list[int]:
    sizes = np.asarray([np.prod(s, dtype=np.int64) for s in shapes])
    exact = np.asarray(layer_densities, np.float64) * sizes
    counts = np.minimum(np.floor(exact).astype(np.int64), sizes)
    missing = round(exact.sum()) - int(counts.sum())
    # Stable sort: equal remainders go to the earlier layer.
    for i in np.argsort(-(exact - counts), kind="stable")[: max(missing, 0)]:
        counts[i] += 1
    return [int(c) for c in counts]


def _first_empty(counts: Sequence[int]) -> int | None:
    return next((i for i, c in enumerate(counts) if c == 0), None)


def _describe(layer: int, shapes: Sequence[Shape]) -> str:
    return f"layer {layer} (shape {tuple(shapes[layer])}, {math.prod(shapes[layer])} weights)"


def _round_up(x: float, digits: int = 3) -> float:
    """``x`` rounded up to ``digits`` significant digits (a bound that still holds)."""
    scale = 10.0 ** (digits - 1 - math.floor(math.log10(x)))
    return math.ceil(x * scale) / scale
