"""Continual-learning metrics from an accuracy matrix, and mean ± 95% CI over seeds.

Conventions: ``R[..., i, j]`` is the accuracy on task j after training through task i
(0-indexed, ``T`` tasks, accuracies as fractions). Leading axes (e.g. seeds) broadcast, so
every metric maps ``R[S, T, T] -> [S]`` and works under ``jax.vmap``/``jax.jit``. The
matrix functions are pure ``jax.numpy``; ``new_task_accuracy``, ``plasticity_loss``,
``mean_ci95``, ``summarize`` and ``summary_table`` are host-side NumPy helpers for
reporting (float64 kept).

Single task (T = 1): every metric defined as a mean over an empty set of earlier tasks
(BWT, FWT, all forgetting variants) is defined as **0.0** here. There is nothing to forget
or transfer, and 0.0 keeps T = 1 runs (e.g. an iid oracle) finite and JSON-valid.

References:
  Lopez-Paz & Ranzato 2017, "Gradient Episodic Memory", arXiv 1706.08840, §2 (ACC, BWT,
  FWT); code ``facebookresearch/GradientEpisodicMemory`` ``metrics/metrics.py``
  (``confusion_matrix``).
  Chaudhry et al. 2018, "Riemannian Walk", arXiv 1801.10112 (A_k, the forgetting measure).
  Rebuffi et al. 2017, "iCaRL", arXiv 1611.07725 (average incremental accuracy).
  Library variants: Mammoth, ``aimagelab/mammoth`` ``utils/metrics.py`` (``forgetting``
  with the last row in the max, ``forward_transfer``); Avalanche,
  ``ContinualAI/avalanche`` ``avalanche/evaluation/metrics/forgetting_bwt.py``
  (``StreamForgetting``: from the diagonal, no max).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl import _checks
from jaxcl.io import finite_or_none

__all__ = [
    "accuracy_after_each_task",
    "average_accuracy",
    "average_incremental_accuracy",
    "backward_transfer",
    "difference_ci95",
    "forgetting",
    "forgetting_from_diagonal",
    "forgetting_max_all",
    "forward_transfer",
    "learning_accuracy",
    "mean_ci95",
    "nan_where_diverged",
    "nanmean",
    "new_task_accuracy",
    "plasticity_loss",
    "pooled_accuracy",
    "summarize",
    "summary_table",
    "t_quantile_975",
]

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def _check_square(R: ArrayLike, name: str = "R") -> Array:
    R = jnp.asarray(R)
    _assert_square(name, R)
    return R


def _assert_square(name: str, R: Array | np.ndarray) -> None:
    T = max((1, *R.shape[-1:]))  # T = 0 and scalars fail as T = 1
    _checks.shape(name, R, (..., T, T), "[..., T, T] with T >= 1")


def _tril(R: Array, offset: int = 0) -> Array:
    """Boolean mask ``i - offset >= j`` of R's shape (explicit broadcast for rank checks)."""
    T = R.shape[-1]
    return jnp.broadcast_to(jnp.tri(T, T, offset, dtype=bool), R.shape)


def _mean_or_zero(x: Array, axis: int = -1) -> Array:
    """Mean along ``axis``; 0.0 for an empty axis (the T = 1 convention)."""
    if x.shape[axis] == 0:
        return jnp.zeros(x.shape[:axis] + x.shape[axis:][1:], x.dtype)
    return jnp.mean(x, axis=axis)


def average_accuracy(R: ArrayLike) -> Array:
    """Final average accuracy (ACC), the task-mean of the last row.

    ``ACC = (1/T) Σ_j R[T−1, j]`` (GEM). Task-mean variant: every task weighs the same,
    whatever its test-set size (see ``pooled_accuracy`` for the sample-pooled variant).

    Args:
      R: ``[..., T, T]`` accuracy matrix.

    Returns:
      ``[...]``.
    """
    R = _check_square(R)
    return jnp.mean(R[..., -1, :], axis=-1)


def accuracy_after_each_task(R: ArrayLike) -> Array:
    """Average accuracy over the tasks seen so far, after each task.

    ``A_k = (1/(k+1)) Σ_{j≤k} R[k, j]`` for k = 0..T−1 (Chaudhry et al. 2018, 0-indexed).
    Entries above the diagonal (unseen tasks) are ignored, even if NaN.

    Args:
      R: ``[..., T, T]``.

    Returns:
      ``[..., T]``; the last entry equals ``average_accuracy(R)``.
    """
    R = _check_square(R)
    T = R.shape[-1]
    seen = _tril(R)
    total = jnp.sum(jnp.where(seen, R, jnp.zeros_like(R)), axis=-1)
    return total / jnp.broadcast_to(jnp.arange(1, T + 1, dtype=total.dtype), total.shape)


def average_incremental_accuracy(R: ArrayLike) -> Array:
    """Average incremental accuracy ``(1/T) Σ_k A_k`` (Rebuffi et al. 2017, iCaRL).

    Args:
      R: ``[..., T, T]``.

    Returns:
      ``[...]``.
    """
    return jnp.mean(accuracy_after_each_task(R), axis=-1)


def backward_transfer(R: ArrayLike) -> Array:
    """Backward transfer (BWT), GEM variant: ``(1/(T−1)) Σ_{j<T−1} (R[T−1, j] − R[j, j])``.

    Negative BWT is forgetting. Equals Mammoth's BWT and minus Avalanche's stream forgetting
    at the end of the stream (``-forgetting_from_diagonal``). T = 1 gives 0.0.

    Args:
      R: ``[..., T, T]``.

    Returns:
      ``[...]``.
    """
    R = _check_square(R)
    diag = jnp.diagonal(R, axis1=-2, axis2=-1)
    return _mean_or_zero(R[..., -1, :-1] - diag[..., :-1])


def forward_transfer(R: ArrayLike, b: ArrayLike) -> Array:
    """Forward transfer (FWT), GEM variant: ``(1/(T−1)) Σ_{j≥1} (R[j−1, j] − b[j])``.

    ``b[j]`` is the accuracy on task j of the randomly initialised model (GEM). Mammoth
    substitutes an evaluation at the start of task j; pass that as ``b`` for its variant.
    T = 1 gives 0.0.

    Args:
      R: ``[..., T, T]``.
      b: ``[..., T]`` or ``[T]``, broadcast against R's leading axes.

    Returns:
      ``[...]``.
    """
    R = _check_square(R)
    b = jnp.asarray(b)
    T = R.shape[-1]
    _checks.shape("b", b, (..., T), f"[..., T] with T = {T}")
    before = jnp.diagonal(R, offset=1, axis1=-2, axis2=-1)  # R[j−1, j], j = 1..T−1
    b_next = b[..., 1:]
    shape = jnp.broadcast_shapes(before.shape, b_next.shape)
    return _mean_or_zero(jnp.broadcast_to(before, shape) - jnp.broadcast_to(b_next, shape))


def _forgetting_max(R: ArrayLike, *, final_row: bool) -> Array:
    """Mean over j < T−1 of ``max_{j ≤ l ≤ L} R[l, j] − R[T−1, j]``, L = T−1 or T−2."""
    R = _check_square(R)
    T = R.shape[-1]
    last_row = T - 1 if final_row else T - 2
    if T == 1:
        return jnp.zeros(R.shape[:-2], R.dtype)
    rows = R[..., : last_row + 1, : T - 1]
    seen = jnp.broadcast_to(jnp.tri(last_row + 1, T - 1, dtype=bool), rows.shape)  # l >= j
    best = jnp.max(jnp.where(seen, rows, jnp.full_like(rows, -jnp.inf)), axis=-2)
    return jnp.mean(best - R[..., -1, : T - 1], axis=-1)


def forgetting(R: ArrayLike) -> Array:
    """Average forgetting, Chaudhry et al. (2018) variant (the canonical one).

    ``f_j = max_{l ∈ [j, T−2]} R[l, j] − R[T−1, j]``, ``F = (1/(T−1)) Σ_{j<T−1} f_j``.
    The max runs over rows *before* the final one, so F can be negative (backward transfer
    above every earlier accuracy). T = 1 gives 0.0.

    Args:
      R: ``[..., T, T]``.

    Returns:
      ``[...]``.

    Example:
      >>> R = jnp.array([[0.9, 0.1], [0.6, 0.8]])
      >>> round(float(forgetting(R)), 4), round(float(backward_transfer(R)), 4)
      (0.3, -0.3)
    """
    return _forgetting_max(R, final_row=False)


def forgetting_from_diagonal(R: ArrayLike) -> Array:
    """Average forgetting, Avalanche variant: ``(1/(T−1)) Σ_{j<T−1} (R[j, j] − R[T−1, j])``.

    No max: forgetting relative to the accuracy right after learning the task. Equals
    ``-backward_transfer(R)``. T = 1 gives 0.0.

    Args:
      R: ``[..., T, T]``.

    Returns:
      ``[...]``.
    """
    return -backward_transfer(R)


def forgetting_max_all(R: ArrayLike) -> Array:
    """Average forgetting, Mammoth variant: the max includes the final row, so F ≥ 0.

    ``f_j = max_{l ∈ [j, T−1]} R[l, j] − R[T−1, j]``, averaged over j < T−1. Mammoth pads
    rows l < j with zeros, which never exceed an accuracy, so restricting to l ≥ j is the
    same for accuracies ≥ 0. T = 1 gives 0.0.

    Args:
      R: ``[..., T, T]``.

    Returns:
      ``[...]``.
    """
    return _forgetting_max(R, final_row=True)


def learning_accuracy(R: ArrayLike) -> Array:
    """Learning accuracy (plasticity), the mean diagonal: ``(1/T) Σ_j R[j, j]``.

    Args:
      R: ``[..., T, T]``.

    Returns:
      ``[...]``.
    """
    R = _check_square(R)
    return jnp.mean(jnp.diagonal(R, axis1=-2, axis2=-1), axis=-1)


def pooled_accuracy(correct: ArrayLike, count: ArrayLike, *, seen_only: bool = False) -> Array:
    """Sample-pooled accuracy over tasks: ``Σ_j correct[j] / Σ_j count[j]``.

    The sum runs over the last axis (tasks). With the per-task correct counts of the last
    row and every task's test-set size this is the accuracy on the full test set, which is
    what Hard ASH and SDM report for Split-MNIST (and Avalanche's ``Top1_Acc_Stream``).

    Args:
      correct: ``[..., T]`` number of correct predictions per task, e.g. ``[S, T, T]`` for
        every row of the accuracy matrix.
      count: number of test examples per task, broadcastable to ``correct`` (e.g. ``[T]``).
      seen_only: for square ``[..., T, T]`` inputs, pool row i over tasks j ≤ i only
        (Avalanche's ``Accuracy_On_Trained_Experiences``).

    Returns:
      ``correct.shape[:-1]``.
    """
    correct = jnp.asarray(correct)
    count = jnp.broadcast_to(jnp.asarray(count), correct.shape)
    if seen_only:
        correct = _check_square(correct, "correct")
        seen = _tril(correct)
        correct = jnp.where(seen, correct, jnp.zeros_like(correct))
        count = jnp.where(seen, count, jnp.zeros_like(count))
    return jnp.sum(correct, axis=-1) / jnp.sum(count, axis=-1)


# ------------------------------------------------------------- plasticity along a stream


def new_task_accuracy(R: ArrayLike, *, diverged: ArrayLike | None = None) -> np.ndarray:
    """Accuracy on each task right after training it, ``R[..., t, t]`` (host-side NumPy).

    The plasticity of Koster & Kukla ("Neural Network Plasticity and Loss Sharpness",
    arXiv 2409.17300): how well the network still learns the task it has just been
    trained on. Only the diagonal is read, so a run that evaluates the current task only
    (``engine.make_run(..., eval_tasks="current")``) suffices.

    Args:
      R: ``[..., T, T]`` accuracy matrix, e.g. ``[S, T, T]``.
      diverged: ``[...]`` bool, e.g. ``Results.diverged``: those seeds' curves are NaN.

    Returns:
      ``[..., T]`` float64 (R's float64 values unchanged).
    """
    R = np.asarray(R, dtype=np.float64)
    _assert_square("R", R)
    curves = np.diagonal(R, axis1=-2, axis2=-1)
    if diverged is None:
        return curves.copy()
    return nan_where_diverged(curves, diverged)


def nan_where_diverged(values: ArrayLike, diverged: ArrayLike) -> np.ndarray:
    """``values`` as float64 with NaN for every seed that diverged (host-side NumPy).

    What the engine's metrics hold for a diverged seed, for an experiment's own.

    Args:
      values: ``[S, ...]`` per-seed values.
      diverged: ``[S]`` bool, e.g. ``Results.diverged`` (or ``[..., S]`` leading ``values``).

    >>> nan_where_diverged([[1.0, 2.0], [3.0, 4.0]], [False, True]).tolist()
    [[1.0, 2.0], [nan, nan]]
    """
    values = np.asarray(values, dtype=np.float64)
    diverged = np.asarray(diverged, dtype=bool)
    trailing = (1,) * (values.ndim - diverged.ndim)
    return np.where(diverged.reshape(diverged.shape + trailing), np.nan, values)


def nanmean(values: ArrayLike, axis: int | tuple[int, ...] | None = None) -> np.ndarray:
    """``np.nanmean``: the mean of the non-NaN values over ``axis`` (host-side NumPy), NaN
    where every value is NaN (a diverged seed, a grid cell not run) without numpy's warning.

    >>> nanmean([[1.0, np.nan], [3.0, np.nan]], axis=0).tolist()
    [2.0, nan]
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "Mean of empty slice"
        return np.nanmean(values, axis=axis)


def plasticity_loss(curves: ArrayLike, *, window: int) -> dict[str, np.ndarray]:
    """The start and end of new-task accuracy curves, and how much was lost in between.

    ``first`` and ``last`` are the means of the first and of the last ``window`` tasks'
    accuracies right after training them (:func:`new_task_accuracy`), ``plasticity_loss =
    first − last``: positive when the network learns new tasks worse late in the stream
    than early (a loss of plasticity, Koster & Kukla, arXiv 2409.17300). NaN curves (e.g.
    diverged seeds) give NaN.

    Args:
      curves: ``[..., T]`` accuracy on each task right after training it.
      window: tasks averaged at each end, in ``[1, T]``.

    Returns:
      ``{"first", "last", "plasticity_loss"}``, each ``[...]`` float64.

    Example:
      >>> out = plasticity_loss([[0.9, 0.8, 0.7, 0.6]], window=2)
      >>> [round(float(out[k][0]), 2) for k in ("first", "last", "plasticity_loss")]
      [0.85, 0.65, 0.2]
    """
    curves = np.asarray(curves, dtype=np.float64)
    if curves.ndim == 0:
        _checks.fail("curves.shape", "[..., T] (rank >= 1)", curves.shape)
    if not 1 <= _checks.positive_int("window", window) <= curves.shape[-1]:
        _checks.fail("window", f"in [1, T] with T = {curves.shape[-1]}", window)
    first = curves[..., :window].mean(-1)
    last = curves[..., -window:].mean(-1)
    return {"first": first, "last": last, "plasticity_loss": first - last}


# ----------------------------------------------------------------------------- over seeds


@functools.lru_cache(maxsize=256)
def t_quantile_975(dof: int) -> float:
    """The 0.975 quantile of Student's t with ``dof`` degrees of freedom (float64).

    Exact to float precision: bisection on θ = atan(t/√ν) of the closed-form two-sided CDF
    for integer ν (Abramowitz & Stegun 26.7.3-4). For ν > 1000 a Cornish-Fisher expansion
    around z = 1.959964 is used (error < 1e-12).

    Args:
      dof: integer degrees of freedom ≥ 1.

    Returns:
      t with P(T ≤ t) = 0.975, e.g. 12.7062 (ν=1), 2.7764 (ν=4), 2.2622 (ν=9).
    """
    nu = _checks.positive_int("dof", dof)
    if nu > 1000:
        z = 1.959963984540054
        g1 = (z**3 + z) / 4
        g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
        g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
        return z + g1 / nu + g2 / nu**2 + g3 / nu**3

    def two_sided(theta: float) -> float:  # P(|T| < t) with t = √ν tan θ
        s, c = math.sin(theta), math.cos(theta)
        if nu % 2:  # odd: (2/π)(θ + s·(c + (2/3)c³ + … ))
            term, acc = c, c if nu > 1 else 0.0
            for i in range(3, nu - 1, 2):
                term *= c * c * (i - 1) / i
                acc += term
            return 2 / math.pi * (theta + s * acc)
        term, acc = 1.0, 1.0  # even: s·(1 + (1/2)c² + (1·3)/(2·4)c⁴ + … )
        for i in range(2, nu - 1, 2):
            term *= c * c * (i - 1) / i
            acc += term
        return s * acc

    lo, hi = 0.0, math.pi / 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if two_sided(mid) < 0.95 else (lo, mid)
    return math.sqrt(nu) * math.tan(0.5 * (lo + hi))


def mean_ci95(
    x: ArrayLike, axis: int = 0, *, ignore_nan: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and 95% confidence half-width over ``axis`` (e.g. seeds), by Student's t.

    ``half_width = t_{0.975, n−1} · s / √n`` with s the sample standard deviation
    (ddof = 1). With n = 1 the half-width is NaN (no spread can be estimated); with n = 0
    both are NaN. (The Hard ASH code logs ``1.96 · std(ddof=0) / √n`` instead.)

    Example:
      >>> mean, half = mean_ci95([1.0, 2.0, 3.0, 4.0, 5.0])  # t_{0.975,4} · s / √5
      >>> float(mean), round(float(half), 4)
      (3.0, 1.9632)

    Args:
      x: values with the seed axis at ``axis``.
      axis: the axis to reduce.
      ignore_nan: drop NaN entries (n counted per position) instead of propagating them.

    Returns:
      ``(mean, half_width)``, NumPy float64 arrays of ``x``'s shape without ``axis``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0:
        _checks.fail("x.shape", "non-empty (x needs the axis to reduce)", x.shape)
    axis = axis % x.ndim
    with np.errstate(invalid="ignore", divide="ignore"):
        if ignore_nan:
            valid = ~np.isnan(x)
            n = valid.sum(axis=axis)
            mean = np.where(valid, x, 0.0).sum(axis=axis) / n
            dev = np.where(valid, x - np.expand_dims(mean, axis), 0.0)
            std = np.sqrt((dev**2).sum(axis=axis) / (n - 1))
        else:
            n = np.full(x.shape[:axis] + x.shape[axis + 1 :], x.shape[axis])
            mean = x.mean(axis=axis) if x.shape[axis] else np.full(n.shape, np.nan)
            std = x.std(axis=axis, ddof=1) if x.shape[axis] > 1 else np.full(n.shape, np.nan)
    t = np.vectorize(lambda m: t_quantile_975(int(m) - 1) if m > 1 else np.nan, otypes=[float])
    with np.errstate(invalid="ignore", divide="ignore"):
        half = t(n) * std / np.sqrt(n)
    return np.asarray(mean, dtype=np.float64), np.asarray(half, dtype=np.float64)


def difference_ci95(a: ArrayLike, b: ArrayLike) -> tuple[float, float]:
    """``mean(a) − mean(b)`` and its Welch 95% half-width, over the finite seeds of each.

    ``half = t_{0.975, ν} · √(s_a²/n_a + s_b²/n_b)`` with the Welch–Satterthwaite ν rounded
    down (conservative). The difference is significant at 5% when ``|diff| > half``. NaN
    half-width with fewer than two finite values on either side.

    Example:
      >>> diff, half = difference_ci95([1.0, 2.0, 3.0], [0.0, 0.5, 1.0])
      >>> round(diff, 3), round(half, 3)
      (1.5, 2.777)
    """
    a = np.asarray(a, np.float64).reshape(-1)
    b = np.asarray(b, np.float64).reshape(-1)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if min(len(a), len(b)) < 2:
        diff = a.mean() - b.mean() if len(a) and len(b) else math.nan
        return float(diff), math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return float(a.mean() - b.mean()), 0.0
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile_975(max(1, math.floor(dof))) * math.sqrt(va + vb)
    return float(a.mean() - b.mean()), float(half)


def summarize(
    R: ArrayLike,
    *,
    b: ArrayLike | None = None,
    correct: ArrayLike | None = None,
    count: ArrayLike | None = None,
) -> dict[str, np.ndarray]:
    """Per-seed metrics of a stack of accuracy matrices.

    Keys: ``acc`` (GEM ACC), ``avg_incremental_acc``, ``bwt`` (GEM), ``forgetting``
    (Chaudhry), ``learning_acc``; ``fwt`` (GEM) if ``b`` is given; ``pooled_acc`` (the
    sample-pooled last row, i.e. full test-set accuracy) if ``correct`` and ``count`` are.

    Args:
      R: ``[S, T, T]`` (or ``[T, T]`` for one seed).
      b: random-init accuracy per task, ``[S, T]`` or ``[T]``.
      correct: correct predictions per row and task, ``[S, T, T]`` (or ``[T, T]``).
      count: test examples per task, broadcastable to ``correct`` (e.g. ``[T]``).

    Returns:
      ``{name: float64 array [S]}`` (``[]`` for a single ``[T, T]`` matrix). Pass it to
      ``summary_table`` for mean, 95% CI and per-seed lists.
    """
    R = _check_square(R)
    if (correct is None) != (count is None):
        _checks.fail("correct and count", "given together or not at all", (correct, count))
    if correct is not None:
        correct = _check_square(correct, "correct")
        count = jnp.broadcast_to(jnp.asarray(count), correct.shape)
    out = _summarize_jit(R, b, correct, count)
    return {k: np.array(v, dtype=np.float64) for k, v in out.items()}  # writable copies


@jax.jit
def _summarize_jit(R: Array, b: Array | None, correct: Array | None, count: Array | None):
    # One compilation instead of op-by-op dispatch of every metric.
    out = {
        "acc": average_accuracy(R),
        "avg_incremental_acc": average_incremental_accuracy(R),
        "bwt": backward_transfer(R),
        "forgetting": forgetting(R),
        "learning_acc": learning_accuracy(R),
    }
    if b is not None:
        out["fwt"] = forward_transfer(R, b)
    if correct is not None:
        out["pooled_acc"] = pooled_accuracy(correct[..., -1, :], count[..., -1, :])
    return out


def summary_table(per_seed: Mapping[str, ArrayLike]) -> dict[str, dict[str, Any]]:
    """Mean, 95% CI half-width and per-seed values of each metric, as JSON-ready values.

    Non-finite seeds (NaN, e.g. a diverged run) are excluded from the mean and CI and counted
    in ``"n_excluded"`` (present only when nonzero). Non-finite numbers are written as
    ``None`` (JSON has no NaN): ``ci95`` is ``None`` with fewer than two finite seeds.

    Args:
      per_seed: ``{name: values [S]}``, e.g. the output of ``summarize``.

    Returns:
      ``{name: {"mean": float | None, "ci95": float | None, "per_seed": [float | None, ...],
      ["n_excluded": int]}}``.
    """
    table: dict[str, dict[str, Any]] = {}
    for name, values in per_seed.items():
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        finite = np.isfinite(v)
        mean, half = mean_ci95(v[finite])
        row: dict[str, Any] = {
            "mean": finite_or_none(mean),
            "ci95": finite_or_none(half),
            "per_seed": [finite_or_none(s) for s in v],
        }
        if not finite.all():
            row["n_excluded"] = int((~finite).sum())
        table[name] = row
    return table
