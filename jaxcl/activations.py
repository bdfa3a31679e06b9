"""Activation functions of the Hard ASH study and the SDM Top-K, as pure functions.

Every function takes an array ``x`` and keyword-only hyperparameters. Functions that use
statistics or ranks across units (``hard_ash``, ``ash``, ``topk_*``, ``lwta``) work along one
explicit ``axis`` (default ``-1``, the unit axis) and treat all other axes as batch axes, so
``f(x)`` on ``[batch, width]`` equals ``jax.vmap(f)(x)``.

``ACTIVATIONS`` (a :class:`jaxcl._registry.Registry`) maps names to functions, whose input
``x`` is positional-only and whose hyperparameters are keyword-only;
``get_activation(name, **hparams)`` binds hyperparameters, e.g.
``get_activation("topk_subtract_hard_ash", k=64)``.

References:
  Keskinen, "Sparsity and the right optimizer make a continual learner" (Hard ASH),
  arXiv 2404.17651; code ``LesserScholar/hard-ash`` ``02_run_experiments.py`` L57-113.
  Bricken et al., "Sparse Distributed Memory is a Continual Learner", ICLR 2023,
  arXiv 2303.11934; code ``TrentBrick/SDMContinualLearner`` ``models/TopK_Act.py``.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl import _checks
from jaxcl._registry import Registry

__all__ = [
    "ACTIVATIONS",
    "HARD_ASH_VARIANTS",
    "ash",
    "elephant",
    "get_activation",
    "gumbel",
    "hard_ash",
    "hard_sigmoid",
    "kth_largest",
    "lwta",
    "relu",
    "sigmoid",
    "swish",
    "topk_mask",
    "topk_subtract",
]

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

HARD_ASH_VARIANTS = ("code", "comment")


# ----------------------------------------------------------------------------- validation


def _is_traced(value: Any) -> bool:
    """True for a JAX tracer: its value is known only at run time, so it is not checked."""
    return isinstance(value, jax.core.Tracer)


def _check_axis(x: Array, axis: Any) -> int:
    """Returns ``axis`` normalised to ``[0, x.ndim)``, or raises ValueError."""
    axis = _checks.integer("axis", axis)
    if x.ndim == 0:
        _checks.fail("x.shape", "non-empty (x needs a unit axis)", x.shape)
    if not -x.ndim <= axis < x.ndim:
        _checks.fail("axis", f"in [-{x.ndim}, {x.ndim}) for x of shape {x.shape}", axis)
    return axis % x.ndim


def _check_k(k: Any, width: int, axis: int) -> int:
    k = _checks.positive_int("k", k)  # static: it sets top_k's shape
    if k > width:
        _checks.fail("k", f"at most x.shape[{axis}] = {width}", k)
    return k


def _is_int_array(k: Any) -> bool:
    """True for an integer array scalar (possibly traced): a k that varies at run time."""
    return (
        isinstance(k, (jax.Array, np.ndarray))
        and k.ndim == 0
        and jnp.issubdtype(k.dtype, jnp.integer)
    )


def _check_clip_max(clip_max: Any) -> None:
    if clip_max is not None:
        _checks.positive("clip_max", clip_max)


# Checks of hyperparameters by name, shared by the functions (at trace time) and
# get_activation (at construction). k is checked against the width when traced.
_HPARAM_CHECKS: Mapping[str, Callable[[Any], Any]] = types.MappingProxyType(
    {
        "axis": functools.partial(_checks.integer, "axis"),
        "k": lambda k: None if _is_int_array(k) else _checks.positive_int("k", k),
        "groups": functools.partial(_checks.positive_int, "groups"),
        "variant": lambda variant: _checks.one_of("variant", variant, HARD_ASH_VARIANTS),
        "alpha": functools.partial(_checks.positive, "alpha"),
        "z_k": functools.partial(_checks.finite, "z_k"),
        "a": functools.partial(_checks.positive, "a"),
        "d": functools.partial(_checks.positive, "d"),
        "clip_max": _check_clip_max,
        "stop_gradient": functools.partial(_checks.boolean, "stop_gradient"),
        "relu_first": functools.partial(_checks.boolean, "relu_first"),
    }
)


def _check_hparams(**hparams: Any) -> None:
    for name, value in hparams.items():
        _HPARAM_CHECKS[name](value)


# ----------------------------------------------------------------------------- helpers


def kth_largest(x: ArrayLike, *, k: int, axis: int = -1) -> Array:
    """The k-th largest value of ``x`` along ``axis``, with ``axis`` kept as size 1.

    With a static int ``k`` it uses ``jax.lax.top_k`` (never a full sort). For
    ``k > (width + 1) / 2`` it takes the ``(width - k + 1)``-th smallest instead, which is
    the same value and a smaller top-k. Gradients flow to exactly one entry holding that
    value (with ties, which one is an implementation detail).

    ``k`` may also be an integer *array* scalar (e.g. traced from an epoch schedule such
    as :func:`jaxcl.schedules.linear_k`); then a full sort is used (about 5x slower at
    width 1000, so guard it with ``lax.cond`` once k is constant) and k is clipped to
    ``[1, width]``, since a traced value cannot be checked.

    Args:
      x: array of any shape with at least one axis.
      k: static int, ``1 <= k <= x.shape[axis]``, or an integer array scalar.
      axis: the axis to rank along.

    Returns:
      Array with ``x``'s shape except ``shape[axis] == 1``, broadcastable against ``x``.
    """
    x = jnp.asarray(x)
    axis = _check_axis(x, axis)
    width = x.shape[axis]
    if _is_int_array(k):
        descending = -jnp.sort(-x, axis=axis)
        index = jnp.clip(jnp.asarray(k, jnp.int32), 1, width) - 1
        return jax.lax.dynamic_slice_in_dim(descending, index, 1, axis=axis)
    k = _check_k(k, width, axis)
    m = width - k + 1
    if m < k:
        values = -jax.lax.top_k(-x, m, axis=axis)[0]
    else:
        values = jax.lax.top_k(x, k, axis=axis)[0]
    # Slicing the last value straight out of top_k lets XLA:CPU fuse the slice into the top-k
    # and fall back to a full sort (about 9x slower at width 1000); the barrier keeps the fast
    # top-k kernel and changes nothing else (values and gradients are identical).
    values = jax.lax.optimization_barrier(values)
    return jax.lax.slice_in_dim(values, values.shape[axis] - 1, None, axis=axis)


def _std(x: Array, axis: int) -> Array:
    """Population standard deviation (ddof=0) along ``axis``, with a finite gradient at 0.

    ``jnp.std`` is ``sqrt(var)``, whose derivative ``1 / (2 sqrt(var))`` is infinite where a
    row is constant (var = 0: a zero-initialised layer, or a variance that underflows), and
    ``∞ · 0`` makes every gradient of the row NaN. σ(x) = ‖x − μ‖ / √n has a cone point
    there; its symmetric subgradient is 0, which this gives by taking the square root of a
    harmless 1 where var = 0 and selecting 0 (the "double where"). Values are ``jnp.std``'s
    bit for bit. (Rows whose squares overflow the dtype, |x| > 1.8e19 in float32, overflow
    var itself: that is outside the range of this statistic, not a gradient problem.)
    """
    var = jnp.var(x, axis=axis, keepdims=True)
    constant = var == 0
    return jnp.where(constant, 0.0, jnp.sqrt(jnp.where(constant, 1.0, var)))


def _gate_input(x: Array, alpha: float, z_k: float, axis: int) -> Array:
    """α(x − μ − z_k σ) with μ, σ the mean and population std along ``axis``."""
    mu = jnp.mean(x, axis=axis, keepdims=True)
    sigma = _std(x, axis)  # ddof=0, as jnp.std in the Hard ASH code
    return alpha * (x - mu - z_k * sigma)


# ----------------------------------------------------------------------------- Hard ASH / ASH


def hard_ash(
    x: ArrayLike, /, *, alpha: float = 3.0, z_k: float = 2.3, axis: int = -1, variant: str = "code"
) -> Array:
    """Hard Adaptive SwisH (Hard ASH), as run by the authors' code.

    ``variant="code"`` (what produced the paper's numbers)::

        y = clip(x, 0, 2) · hardsigmoid(α (x − μ − z_k σ)),  hardsigmoid(u) = clip(u/6 + ½, 0, 1)

    ``variant="comment"`` (the formula written in the code comment, no clip of x)::

        y = x · relu6(α (x − μ − z_k σ) + 3) / 6

    μ and σ are the mean and population standard deviation (ddof=0) of ``x`` along ``axis``.
    Gradients flow through μ and σ (no stop-gradient, as in the code).

    The gate is positive for x > τ − 3/α with τ = μ + z_k σ and saturates at 1 for
    x ≥ τ + 3/α. For Gaussian x with z_k = 2.3, about 1.07% of units lie above τ (gate > ½),
    but with α = 3 about 9.7% of units (x > τ − 1) are non-zero.

    Ties: none (elementwise after the statistics).

    Constant rows (σ = 0, e.g. a zero-initialised layer): the value is as defined; the
    gradient takes σ's subgradient 0 there, where ``jnp.std`` in the original code gives NaN.

    Args:
      x: pre-activations, any float dtype; statistics are taken along ``axis``.
      alpha: gate slope α, finite and > 0 (a scalar or an array broadcastable to ``x``).
      z_k: threshold in standard deviations above the mean, finite (any sign).
      axis: the unit axis.
      variant: ``"code"`` or ``"comment"``.

    Returns:
      Array of ``x``'s shape and dtype.

    Raises:
      ValueError: alpha or z_k not finite, alpha <= 0, or an unknown variant (traced alpha and
        z_k are not checked).

    Example:
      >>> hard_ash(jnp.array([1.0, 3.0]), alpha=3.0, z_k=-1.0).tolist()  # μ=2, σ=1, τ=1
      [0.5, 2.0]

    References:
      Keskinen, arXiv 2404.17651; ``LesserScholar/hard-ash`` ``02_run_experiments.py``
      ``hard_ash`` (commit 7fbb1ed).
    """
    _check_hparams(alpha=alpha, z_k=z_k, variant=variant)
    x = jnp.asarray(x)
    axis = _check_axis(x, axis)
    gate = jax.nn.hard_sigmoid(_gate_input(x, alpha, z_k, axis))  # = relu6(u + 3) / 6
    if variant == "code":
        return jnp.clip(x, min=0.0, max=2.0) * gate
    return x * gate


def ash(x: ArrayLike, /, *, alpha: float = 3.0, z_k: float = 2.3, axis: int = -1) -> Array:
    """Adaptive SwisH with fixed α and z_k, as in the Hard ASH code.

    ``y = x · sigmoid(α (x − μ − z_k σ))`` with μ, σ the mean and population std along
    ``axis``; gradients flow through μ and σ (σ's gradient is 0 on a constant row, as in
    :func:`hard_ash`). Ties: none (elementwise after the statistics).

    Args:
      x: pre-activations; statistics along ``axis``.
      alpha: sigmoid slope α, finite and > 0.
      z_k: threshold in standard deviations above the mean, finite.
      axis: the unit axis.

    Returns:
      Array of ``x``'s shape and dtype.

    Raises:
      ValueError: alpha or z_k not finite, or alpha <= 0 (traced values are not checked).

    References:
      Lee et al. 2022 (ASH, where z_k is trainable); ``LesserScholar/hard-ash`` ``ash``.
    """
    _check_hparams(alpha=alpha, z_k=z_k)
    x = jnp.asarray(x)
    axis = _check_axis(x, axis)
    return x * jax.nn.sigmoid(_gate_input(x, alpha, z_k, axis))


# ----------------------------------------------------------------------------- Top-K family


def topk_subtract(
    x: ArrayLike,
    /,
    *,
    k: int,
    axis: int = -1,
    stop_gradient: bool = True,
    relu_first: bool = False,
    clip_max: float | None = None,
    coefficient: ArrayLike = 1.0,
) -> Array:
    """Top-K by subtraction of the k-th largest value (an inhibitory neuron).

    ::

        a = relu(x) if relu_first else x
        v = k-th largest of a along axis          (stop_gradient(v) if stop_gradient)
        y = clip(a − r · v, 0, clip_max)          (clip_max=None: relu(a − r · v))

    with ``r = coefficient``, a scalar or one value per unit along ``axis``.

    Settings that reproduce each paper:

    * Hard ASH code (``topk_subtract``): ``stop_gradient=False, relu_first=False,
      clip_max=2.0`` (the registry's ``"topk_subtract_hard_ash"``). Before the revision
      commit it was ``clip_max=None``.
    * SDM ``*SUBTRACT`` / ``GABA_SWITCH*``: ``stop_gradient=True, relu_first=True,
      clip_max=None`` (the registry's ``"topk_subtract_sdm"``), with ``k = k_eff`` and, for
      the GABA switch, ``coefficient = r`` (per-unit, in [−1, 1]). SDM's GABA variant uses
      ``k_eff = k + 1`` so that exactly k units stay active; ``*SUBTRACT`` uses ``k_eff = k``.

    Active units and ties (r = 1): a unit survives only if ``a > v`` strictly, so with
    distinct values exactly ``k − 1`` units are non-zero; every unit tied with v is zeroed
    (all-equal input gives all zeros). With ``relu_first`` and fewer than k positive units,
    v = 0 and all positive units pass unchanged.

    Args:
      x: pre-activations; ranks along ``axis``.
      k: static int, ``1 <= k <= x.shape[axis]`` (the value subtracted is the k-th largest),
        or an integer array scalar (see :func:`kth_largest`).
      axis: the unit axis.
      stop_gradient: bool, detach v (SDM) or let gradients flow through it (Hard ASH).
      relu_first: bool, apply ReLU before ranking and subtracting (SDM).
      clip_max: upper clip of the output (> 0), or None for no upper clip.
      coefficient: r, a scalar or an array of shape ``[x.shape[axis]]``; cast to x's dtype.

    Returns:
      Array of ``x``'s shape and dtype.

    Example:
      >>> x = jnp.array([3.0, -1.0, 2.0, 0.5, 5.0])
      >>> topk_subtract(x, k=3, stop_gradient=False, clip_max=2.0).tolist()  # Hard ASH
      [1.0, 0.0, 0.0, 0.0, 2.0]
      >>> topk_subtract(x, k=3, relu_first=True).tolist()  # SDM, v = 2
      [1.0, 0.0, 0.0, 0.0, 3.0]

    References:
      ``LesserScholar/hard-ash`` ``topk_subtract``; ``TrentBrick/SDMContinualLearner``
      ``models/TopK_Act.py`` ``Top_K.forward``.
    """
    _check_hparams(stop_gradient=stop_gradient, relu_first=relu_first, clip_max=clip_max)
    x = jnp.asarray(x)
    axis = _check_axis(x, axis)
    r = jnp.asarray(coefficient, dtype=x.dtype)
    if r.ndim == 1 and r.shape[0] == x.shape[axis]:
        r = jnp.expand_dims(r, [d for d in range(x.ndim) if d != axis])
    elif r.ndim != 0:
        _checks.fail(
            "coefficient.shape",
            f"() or ({x.shape[axis]},) (one value per unit along axis {axis})",
            r.shape,
        )
    a = jax.nn.relu(x) if relu_first else x
    v = kth_largest(a, k=k, axis=axis)
    if stop_gradient:
        v = jax.lax.stop_gradient(v)
    r_v = jnp.broadcast_to(r, x.shape) * jnp.broadcast_to(v, x.shape)
    if clip_max is None:
        return jax.nn.relu(a - r_v)
    return jnp.clip(a - r_v, min=0.0, max=clip_max)


def topk_mask(x: ArrayLike, /, *, k: int, axis: int = -1) -> Array:
    """Keep the top k values along ``axis`` unchanged and zero the rest (no ReLU).

    ``y = x where x ≥ v else 0``, with v the k-th largest of x along ``axis``. Negative values
    survive when v < 0 (as in the Hard ASH code). No gradient flows through v (it only enters
    a comparison).

    Ties: every entry equal to v is kept, so more than k units can survive (all-equal input
    is returned unchanged). SDM's ``*MASK`` is ``topk_mask(relu(x), k=k)`` up to ties at v > 0,
    where SDM keeps exactly k by index.

    Args:
      x: pre-activations; ranks along ``axis``.
      k: static int, ``1 <= k <= x.shape[axis]``, or an integer array scalar (see
        :func:`kth_largest`).
      axis: the unit axis.

    Returns:
      Array of ``x``'s shape and dtype.

    References:
      ``LesserScholar/hard-ash`` ``topk_mask``.
    """
    x = jnp.asarray(x)
    v = jnp.broadcast_to(kth_largest(x, k=k, axis=axis), x.shape)
    return jnp.where(x >= v, x, jnp.zeros_like(x))


def lwta(x: ArrayLike, /, *, groups: int, axis: int = -1) -> Array:
    """Local winner-take-all: in each of ``groups`` contiguous blocks keep only the maximum.

    The unit axis (width n) is reshaped to ``(groups, n / groups)``; in each group the
    argmax entry keeps its value (and its gradient) and the others become 0.

    Ties: the first (lowest-index) maximal entry of a group wins, so exactly one unit per
    group is kept.

    Args:
      x: pre-activations.
      groups: static int, number of groups; must divide ``x.shape[axis]``.
      axis: the unit axis.

    Returns:
      Array of ``x``'s shape and dtype.

    Example:
      >>> lwta(jnp.array([1.0, 3.0, 2.0, 2.0, 5.0, 0.0]), groups=3).tolist()
      [0.0, 3.0, 2.0, 0.0, 5.0, 0.0]

    References:
      ``LesserScholar/hard-ash`` ``lwta`` (``lwta_g`` = number of groups).
    """
    x = jnp.asarray(x)
    axis = _check_axis(x, axis)
    width = x.shape[axis]
    groups = _checks.positive_int("groups", groups)
    if width % groups:
        _checks.fail("groups", f"a divisor of x.shape[{axis}] = {width}", groups)
    xm = jnp.moveaxis(x, axis, -1)
    xg = xm.reshape((*xm.shape[:-1], groups, width // groups))
    winner = jnp.argmax(xg, axis=-1, keepdims=True)  # argmax returns the first maximum
    idx = jax.lax.broadcasted_iota(winner.dtype, xg.shape, xg.ndim - 1)
    keep = idx == jnp.broadcast_to(winner, xg.shape)
    y = jnp.where(keep, xg, jnp.zeros_like(xg)).reshape(xm.shape)
    return jnp.moveaxis(y, -1, axis)


# ----------------------------------------------------------------------------- elementwise


def elephant(x: ArrayLike, /, *, a: float = 0.16, d: float = 4.0) -> Array:
    """Elephant activation ``y = 1 / (1 + |x / a|^d)`` (Lan & Mahmood 2023).

    Gradients are finite everywhere: where ``|x / a|^d`` overflows (y = 0) the gradient is
    0, and at x = 0 (y = 1, a cusp with infinite slope when d < 1) it is the symmetric
    subgradient 0. Values are the formula's bit for bit.

    Args:
      x: pre-activations.
      a: width, finite and > 0; Hard ASH code default 0.16.
      d: sharpness, finite and > 0 (a scalar); 4 in the Hard ASH code.

    Returns:
      Array of ``x``'s shape and dtype.

    Raises:
      ValueError: a or d not finite or not > 0 (traced values are not checked).

    References:
      Lan & Mahmood, arXiv 2310.01365; ``LesserScholar/hard-ash`` ``elephant``.
    """
    _check_hparams(a=a, d=d)
    x = jnp.asarray(x)
    # An integral exponent takes lax.integer_pow (multiplications) rather than exp/log.
    power = d if _is_traced(d) or not float(d).is_integer() else int(d)
    r = jnp.abs(x / a)
    # At r = 0 and where r^d overflows, the chain rule multiplies ∞ by 0 (NaN): evaluate the
    # power at a harmless r = 1 there and select the exact value (1 or 0) instead.
    zero = r == 0
    edge = zero | jnp.isinf(r**power)
    y = 1.0 / (1.0 + jnp.where(edge, 1.0, r) ** power)
    return jnp.where(edge, jnp.where(zero, 1.0, 0.0), y)


def relu(x: ArrayLike, /) -> Array:
    """``jax.nn.relu``: max(x, 0)."""
    return jax.nn.relu(x)


def swish(x: ArrayLike, /) -> Array:
    """``jax.nn.swish``: x · sigmoid(x)."""
    return jax.nn.swish(x)


def sigmoid(x: ArrayLike, /) -> Array:
    """``jax.nn.sigmoid``: 1 / (1 + exp(−x))."""
    return jax.nn.sigmoid(x)


def hard_sigmoid(x: ArrayLike, /) -> Array:
    """``jax.nn.hard_sigmoid``: relu6(x + 3) / 6."""
    return jax.nn.hard_sigmoid(x)


def gumbel(x: ArrayLike, /) -> Array:
    """Gumbel CDF ``y = exp(−exp(−x))``, as in the Hard ASH code.

    Below x = −10, y = exp(−22026) is exactly 0 in every float dtype (float64 underflows
    below exp(−745)), so x is clamped there: the values are unchanged, and the gradient is 0
    instead of ``0 · ∞ = NaN`` where ``exp(−x)`` overflows (x < −88.7 in float32).
    """
    return jnp.exp(-jnp.exp(-jnp.maximum(jnp.asarray(x), -10.0)))


# ----------------------------------------------------------------------------- registry

ACTIVATIONS: Registry[Callable[..., Array]] = Registry(
    "activation",
    {
        "hard_ash": hard_ash,
        "ash": ash,
        "topk_subtract": topk_subtract,
        # Presets that reproduce each paper's Top-K (see topk_subtract's docstring).
        "topk_subtract_hard_ash": functools.partial(
            topk_subtract, stop_gradient=False, relu_first=False, clip_max=2.0
        ),
        "topk_subtract_sdm": functools.partial(
            topk_subtract, stop_gradient=True, relu_first=True, clip_max=None
        ),
        "topk_mask": topk_mask,
        "lwta": lwta,
        "elephant": elephant,
        "relu": relu,
        "swish": swish,
        "sigmoid": sigmoid,
        "hard_sigmoid": hard_sigmoid,
        "gumbel": gumbel,
    },
)


def get_activation(name: str, **hparams: Any) -> Callable[[Array], Array]:
    """Returns the activation ``name`` with ``hparams`` bound as keyword arguments.

    Hyperparameters are checked here when possible (``k`` and ``groups`` must be positive
    ints, ``variant`` known, ``alpha``, ``a`` and ``d`` finite and > 0, ``z_k`` finite,
    ``clip_max`` None or > 0, ``stop_gradient`` and ``relu_first`` bools); ranges that depend
    on the input width are checked when the function is traced.

    Args:
      name: a key of ``ACTIVATIONS``.
      **hparams: keyword hyperparameters of that function, e.g. ``k=64``.

    Returns:
      A function ``x -> y``.

    Raises:
      ValueError: unknown ``name`` (the message lists the valid names) or bad values.
      TypeError: a hyperparameter the function does not take, a required one missing, or
        one of the wrong type.

    Example:
      >>> f = get_activation("topk_mask", k=2)
      >>> f(jnp.array([3.0, -1.0, 2.0, 0.0])).tolist()
      [3.0, 0.0, 2.0, 0.0]
    """
    fn = ACTIVATIONS.lookup(name, **hparams)
    _check_hparams(**{key: v for key, v in hparams.items() if key in _HPARAM_CHECKS})
    return functools.partial(fn, **hparams) if hparams else fn
