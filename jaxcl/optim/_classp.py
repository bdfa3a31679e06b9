"""CLASSP: adjustment suppression and sparsity promotion (Ludwig, 2024)."""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxcl import _checks
from jaxcl.optim._alias import alias_of, with_learning_rate
from jaxcl.optim._dtypes import accumulator_like, check_accumulator_dtype

MODES = ("paper", "code")

# A phase flag: a Python bool, a (possibly traced) scalar, or a schedule of the step count.
PhaseFlag = bool | jax.typing.ArrayLike | Callable[[jax.Array], jax.typing.ArrayLike]


class ScaleByClasspState(NamedTuple):
    """State of :func:`scale_by_classp`.

    Attributes:
      count: number of ``update`` calls so far; int32 scalar. Passed to a callable
        ``accumulate_only``.
      grad_sum: per-element accumulator, same structure and shapes as the params, float32
        by default (see ``accumulator_dtype``): Σ|g|^p over gated steps in ``"paper"``
        mode, Σ|g| in ``"code"`` mode.
    """

    count: jax.Array
    grad_sum: optax.Updates


def _phase_is_accumulate_only(flag: PhaseFlag, count: jax.Array) -> jax.Array:
    value = flag(count) if callable(flag) else flag
    return jnp.asarray(value) != 0


def scale_by_classp(
    threshold: jax.typing.ArrayLike,
    power: jax.typing.ArrayLike = 1.0,
    eps: jax.typing.ArrayLike = 1e-5,
    *,
    mode: str = "paper",
    include_current: bool = True,
    initial_accumulator_value: jax.typing.ArrayLike = 0.0,
    accumulate_only: PhaseFlag = False,
    accumulator_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Rescale updates as CLASSP does: thresholded, power-``p`` AdaGrad.

    ``mode="paper"`` is the rule of the paper, element by element. With the gate
    :math:`m_t = 1[g_t^2 > \text{threshold}]` and :math:`S_0 = \text{initial\_accumulator\_value}`,

    .. math::

      S_t = S_{t-1} + m_t\,|g_t|^p, \qquad
      u_t = m_t\,\frac{g_t}{(\epsilon + S)^{1/p}},

    with :math:`S = S_t` when ``include_current`` (what the authors' code does, like
    AdaGrad) or :math:`S = S_{t-1}` (the paper's formula, which sums to :math:`t-1`).
    Entries whose gate is closed get a zero update and keep their accumulator.

    ``mode="code"`` reproduces the authors' PyTorch optimizer to the letter: the gate is per
    tensor, ``float(any(g**2 != 0)) > threshold`` (so any threshold in [0, 1) lets every
    tensor with a non-zero gradient through and a threshold >= 1 freezes everything); the
    accumulator is :math:`\sum|g|` whatever ``power`` is (their ``** power`` is discarded);
    the current gradient is always included; the rescaling still takes the ``1/p`` root.

    Accumulate-only phase: where ``accumulate_only`` is true the output is the gated
    gradient itself, :math:`u_t = m_t g_t` (plain SGD after the learning rate), while
    :math:`S_t` accumulates as usual. This is the authors' first task
    (``apply_scaling=False``). ``accumulate_only`` may be

    * a Python bool, fixed for the transformation's lifetime;
    * a scalar array, non-zero meaning true; it may be traced, e.g. a value carried in a
      ``lax.scan`` or set in ``state.hyperparams`` by :func:`optax.inject_hyperparams`;
    * a callable of the step count (``count`` before this update, starting at 0), like an
      optax schedule: ``accumulate_only=lambda count: count < steps_on_task_1``.

    Switching phase therefore never changes the state's structure and never recompiles.

    The accumulator is kept in ``accumulator_dtype``: by default (``None``) the parameters'
    dtype promoted to at least float32. A bfloat16 sum stops growing once :math:`|g|^p` is
    below half its spacing (at :math:`S = 256` for unit increments), after which every step
    is too large; float32 avoids it. The updates have the dtype of the incoming updates
    (bfloat16 in, bfloat16 out).

    A NaN gradient opens the gate and propagates to the update and the accumulator, as in
    every other optimizer, so that divergence is seen rather than skipped.

    Args:
      threshold: gate on the squared gradient; >= 0.
      power: the exponent ``p``; > 0.
      eps: added inside the root; >= 0. Where :math:`\epsilon + S = 0` the update is 0.
      mode: ``"paper"`` (element-wise) or ``"code"`` (the authors' implementation).
      include_current: whether the denominator includes the current gradient. Only
        ``True`` is allowed in ``"code"`` mode.
      initial_accumulator_value: starting value of ``grad_sum``; >= 0.
      accumulate_only: the phase flag described above.
      accumulator_dtype: dtype of ``grad_sum``; ``None`` (default) means the parameter's
        dtype promoted to at least float32; a float dtype such as ``jnp.bfloat16`` forces
        it.

    Returns:
      A :class:`optax.GradientTransformationExtraArgs`; extra arguments are ignored.

    References:
      Ludwig, `CLASSP: a Biologically-Inspired Approach to Continual Learning through
      Adjustment Suppression and Sparsity Promotion <https://arxiv.org/abs/2405.09637>`_,
      2024. Code: ``oswaldoludwig/CLASSP``, ``CLASSP.py``.

    .. warning::
      With ``include_current=False`` the first gated step divides by
      :math:`\epsilon^{1/p}` (``1e5 * g`` for the defaults), as the paper's formula does.
      Use a larger ``initial_accumulator_value`` to tame it.
    """
    _checks.non_negative("threshold", threshold)
    _checks.positive("power", power)
    _checks.non_negative("eps", eps)
    _checks.non_negative("initial_accumulator_value", initial_accumulator_value)
    _checks.one_of("mode", mode, MODES)
    check_accumulator_dtype(accumulator_dtype)
    if mode == "code" and not include_current:
        _checks.fail(
            "include_current",
            "True in mode='code' (the authors' code always includes the current gradient; "
            "mode='paper' has both)",
            include_current,
        )

    def init_fn(params):
        return ScaleByClasspState(
            count=jnp.zeros([], jnp.int32),
            grad_sum=accumulator_like(params, initial_accumulator_value, accumulator_dtype),
        )

    def leaf_update(g, s, accumulate):
        g_acc = g.astype(s.dtype)
        if mode == "paper":
            # Written as "not below" so that a NaN gradient opens the gate and propagates.
            gate = ~(jnp.square(g_acc) <= threshold)
            increment = jnp.abs(g_acc) ** power
        else:
            # The authors' test `(g ** 2).any() > threshold` compares a boolean with a float.
            gate = jnp.any(jnp.square(g_acc) != 0).astype(jnp.float32) > threshold
            increment = jnp.abs(g_acc)
        new_s = jnp.where(gate, s + increment, s)
        denom = (eps + (new_s if include_current else s)) ** (1.0 / power)
        # Only an exact zero is guarded: a NaN denominator must give a NaN update.
        safe_denom = jnp.where(denom == 0, 1, denom)
        scaled = jnp.where(denom == 0, 0, g_acc / safe_denom)
        u = jnp.where(gate, jnp.where(accumulate, g_acc, scaled), 0)
        return u.astype(g.dtype), new_s.astype(s.dtype)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        accumulate = _phase_is_accumulate_only(accumulate_only, state.count)
        pairs = jax.tree.map(lambda g, s: leaf_update(g, s, accumulate), updates, state.grad_sum)
        treedef = jax.tree.structure(updates)
        new_updates, grad_sum = jax.tree.transpose(treedef, jax.tree.structure((0, 0)), pairs)
        count = optax.safe_increment(state.count)
        return new_updates, ScaleByClasspState(count=count, grad_sum=grad_sum)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@alias_of(scale_by_classp)
def classp(
    learning_rate: optax.ScalarOrSchedule, *args, **kwargs
) -> optax.GradientTransformationExtraArgs:
    r"""The CLASSP optimizer: :func:`scale_by_classp` then a learning rate.

    .. math::

      w_{t+1} = w_t - \eta\, m_t \frac{g_t}{(\epsilon + S)^{1/p}}

    (see :func:`scale_by_classp` for :math:`m_t`, :math:`S` and the modes). The authors'
    vision experiment is ``classp(0.2, threshold=0.5, mode="code",
    accumulate_only=lambda c: c < steps_on_task_1)``.

    Args:
      learning_rate: a scalar >= 0 or an optax schedule.
      *args, **kwargs: ``threshold, power, eps, *, mode, include_current,
        initial_accumulator_value, accumulate_only, accumulator_dtype``, as in
        :func:`scale_by_classp` (float32 accumulator by default).

    Returns:
      A :class:`optax.GradientTransformationExtraArgs`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxcl.optim import classp
      >>> opt = classp(1.0, threshold=0.1, power=2.0, eps=0.0)
      >>> state = opt.init(jnp.zeros(3))
      >>> updates, state = opt.update(jnp.array([3.0, 0.2, -4.0]), state)
      >>> print(updates)  # the middle entry is below the threshold
      [-1. -0.  1.]

    References:
      Ludwig, `CLASSP <https://arxiv.org/abs/2405.09637>`_, 2024.
    """
    return with_learning_rate(learning_rate, scale_by_classp(*args, **kwargs))
