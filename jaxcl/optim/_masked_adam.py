"""Adam whose moments only move where an entry is active: no stale momentum."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax import tree as otu

from jaxcl import _checks
from jaxcl.optim._alias import alias_of, with_learning_rate
from jaxcl.optim._dtypes import accumulator_like, check_accumulator_dtype
from jaxcl.optim._masks import check_boolean, check_mask, is_none, subset_like


class ScaleByMaskedAdamState(NamedTuple):
    """State of :func:`scale_by_masked_adam`.

    Attributes:
      count: per-element number of active steps; int32, same structure and shapes as the
        params. Each entry's bias correction uses its own count.
      mu: first moment, same structure and shapes as the params; float32 by default (see
        ``accumulator_dtype``).
      nu: second moment, like ``mu``.
    """

    count: optax.Updates
    mu: optax.Updates
    nu: optax.Updates


def _default_activity(g, mask_by_gradient):
    return g != 0 if mask_by_gradient else jnp.ones(g.shape, bool)


def _resolve_mask(mask, updates, mask_by_gradient):
    if mask is None:
        return jax.tree.map(lambda g: _default_activity(g, mask_by_gradient), updates)
    # Inside optax.masked / multi_transform the updates have MaskedNode sub-trees while
    # extra arguments arrive whole: subset the mask the same way, then check it.
    mask = subset_like(mask, updates)
    check_mask(mask, updates, name="mask", allow_none=True)
    # A None leaf in the mask (e.g. an unpruned bias) falls back to the default activity.
    return jax.tree.map(
        lambda m, g: _default_activity(g, mask_by_gradient) if m is None else m,
        mask,
        updates,
        is_leaf=is_none,
    )


def scale_by_masked_adam(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    *,
    bias_correction: bool = True,
    mask_by_gradient: bool = True,
    accumulator_dtype: jax.typing.DTypeLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Rescale updates by Adam, advancing each entry only while it is active.

    With an activity indicator :math:`a_t` (per element) and per-element counts
    :math:`n_t = n_{t-1} + a_t`:

    .. math::

      m_t &= a_t\,(\beta_1 m_{t-1} + (1-\beta_1) g_t) + (1 - a_t)\, m_{t-1} \\
      v_t &= a_t\,(\beta_2 v_{t-1} + (1-\beta_2) g_t^2) + (1 - a_t)\, v_{t-1} \\
      u_t &= a_t\, \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}, \qquad
      \hat m_t = \frac{m_t}{1-\beta_1^{n_t}}, \quad \hat v_t = \frac{v_t}{1-\beta_2^{n_t}}.

    An inactive entry gets a zero update and its moments and count are left untouched, so
    when it becomes active again its first step sees neither momentum accumulated before the
    silence nor a second moment that decayed during it (dense Adam applies both). With
    ``bias_correction=False`` the hats are dropped: :math:`u_t = a_t m_t / (\sqrt{v_t} +
    \epsilon)` ("Adam without bias correction", as in the Hard ASH study).

    Activity comes from ``update(..., mask=mask)``: a pytree of boolean arrays with the
    structure and exact shapes of the updates, True meaning active, e.g. a
    dynamic-sparse-training weight mask or a Top-K activation pattern; a ``None`` leaf (an
    unpruned bias, say) falls back to the default below. The structure, shapes and dtype
    are checked at trace time (a ``ValueError`` or ``TypeError`` names the leaf); nothing is
    broadcast. With ``mask=None``:

    * ``mask_by_gradient=True`` (default): active means a non-zero gradient *as this
      transform receives it*. A gradient that is exactly zero (a silent unit) freezes the
      entry.
    * ``mask_by_gradient=False``: every entry is active, which is plain dense Adam.

    With every entry active at every step this is :func:`optax.adam`'s rule.

    A transform chained before this one changes what "non-zero gradient" means:
    ``optax.chain(optax.add_decayed_weights(wd), masked_adam(lr))`` adds ``wd * w`` to the
    gradient, so every non-zero weight is active at every step, silent units included (and
    its moments decay). To keep activity from the loss gradient, pass it explicitly; a
    chain hands ``mask=`` to every member and the others ignore it::

      opt = optax.chain(optax.add_decayed_weights(1e-4), masked_adam(1e-3))
      updates, state = opt.update(
          grads, state, params, mask=jax.tree.map(lambda g: g != 0, grads)
      )

    Entries inactive by the mask then get no update at all: neither the Adam step nor the
    weight decay.

    Inside :func:`optax.multi_transform` (or :func:`optax.partition`) and
    :func:`optax.masked`, pass ``mask=`` with the structure of *all* the parameters: the
    sub-trees the wrapper hides from this transform are dropped from the mask as they are
    from the updates.

    The moments are kept in ``accumulator_dtype``: by default (``None``) the parameters'
    dtype promoted to at least float32, so bfloat16 parameters get float32 moments
    (:math:`\beta_2 v` rounds back to :math:`v` in bfloat16, and the second moment stops
    decaying). The updates have the dtype of the incoming updates (bfloat16 in, bfloat16
    out). The counts are int32.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the root; >= 0.
      bias_correction: divide the moments by :math:`1-\beta^{n}` (per element).
      mask_by_gradient: what ``mask=None`` means (see above).
      accumulator_dtype: dtype of ``mu`` and ``nu``; ``None`` (default) means the
        parameter's dtype promoted to at least float32; a float dtype such as
        ``jnp.bfloat16`` forces it (like the ``mu_dtype`` of :func:`optax.adam`).

    Returns:
      A :class:`optax.GradientTransformationExtraArgs` whose ``update`` accepts the keyword
      argument ``mask`` and ignores any other extra argument.

    References:
      Kingma & Ba, `Adam: A Method for Stochastic Optimization
      <https://arxiv.org/abs/1412.6980>`_, 2015. Bricken et al., `Sparse Distributed Memory
      is a Continual Learner <https://arxiv.org/abs/2303.11934>`_, 2023 (App. D, stale
      momentum).

    .. warning::
      A weight that is pruned and later regrown is "newly active" but keeps its old
      moments unless you reset them: call :func:`reset_moments` on the whole optimizer
      state with the newly active entries.
    """
    _checks.in_range("b1", b1, 0, 1, "[)")
    _checks.in_range("b2", b2, 0, 1, "[)")
    _checks.non_negative("eps", eps)
    check_accumulator_dtype(accumulator_dtype)

    def _one_minus_power(b, n):
        return -jnp.expm1(n * jnp.log(jnp.asarray(b, jnp.float32)))

    def init_fn(params):
        return ScaleByMaskedAdamState(
            count=otu.zeros_like(params, dtype=jnp.int32),
            mu=accumulator_like(params, 0.0, accumulator_dtype),
            nu=accumulator_like(params, 0.0, accumulator_dtype),
        )

    def leaf_update(g, active, n, m, nu):
        g_acc = g.astype(m.dtype)
        new_n = jnp.where(active, optax.safe_increment(n), n)
        new_m = jnp.where(active, b1 * m + (1 - b1) * g_acc, m)
        new_nu = jnp.where(active, b2 * nu + (1 - b2) * jnp.square(g_acc), nu)
        m_hat, nu_hat = new_m, new_nu
        if bias_correction:
            # Entries never active have n = 0 and a zero correction; their update is masked
            # out below, the max only keeps the unused branch finite. 1 − bⁿ is taken as
            # −expm1(n·log b) in float32: an element-wise pow costs ~9x more on CPU, and
            # float32 keeps bfloat16 from rounding bⁿ to 1 (as optax does).
            n_safe = jnp.maximum(new_n, 1).astype(jnp.float32)
            m_hat = new_m / _one_minus_power(b1, n_safe).astype(m.dtype)
            nu_hat = new_nu / _one_minus_power(b2, n_safe).astype(nu.dtype)
        u = jnp.where(active, m_hat / (jnp.sqrt(nu_hat) + eps), 0)
        return (
            u.astype(g.dtype),
            new_n,
            new_m.astype(m.dtype),
            new_nu.astype(nu.dtype),
        )

    def update_fn(updates, state, params=None, *, mask=None, **extra_args):
        del params, extra_args
        mask = _resolve_mask(mask, updates, mask_by_gradient)
        out = jax.tree.map(leaf_update, updates, mask, state.count, state.mu, state.nu)
        new_updates, count, mu, nu = jax.tree.transpose(
            jax.tree.structure(updates), jax.tree.structure((0,) * 4), out
        )
        return new_updates, ScaleByMaskedAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@alias_of(scale_by_masked_adam)
def masked_adam(
    learning_rate: optax.ScalarOrSchedule, *args, **kwargs
) -> optax.GradientTransformationExtraArgs:
    r"""Masked Adam: :func:`scale_by_masked_adam` then a learning rate.

    :math:`w_{t+1} = w_t - \eta\, u_t` with :math:`u_t` from :func:`scale_by_masked_adam`;
    pass the activity with ``opt.update(grads, state, params, mask=mask)``.

    Args:
      learning_rate: a scalar >= 0 or an optax schedule.
      *args, **kwargs: ``b1, b2, eps, *, bias_correction, mask_by_gradient,
        accumulator_dtype``, as in :func:`scale_by_masked_adam` (moments in float32 by
        default).

    Returns:
      A :class:`optax.GradientTransformationExtraArgs`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from jaxcl.optim import masked_adam
      >>> opt = masked_adam(0.1)
      >>> state = opt.init(jnp.zeros(2))
      >>> updates, state = opt.update(jnp.array([0.5, 0.0]), state)
      >>> print(np.asarray(updates).round(4), state[0].count)  # silent entry: no move, no count
      [-0.1 -0. ] [1 0]
    """
    return with_learning_rate(learning_rate, scale_by_masked_adam(*args, **kwargs))


def became_active(old_mask: Any, new_mask: Any) -> Any:
    """Entries active in ``new_mask`` but not in ``old_mask`` (e.g. regrown weights).

    Args:
      old_mask: pytree of boolean arrays, True meaning active; ``None`` leaves (unmasked
        parameters, as in :func:`scale_by_masked_adam`'s ``mask=``) are allowed.
      new_mask: pytree with the same structure, shapes and ``None`` leaves.

    Returns:
      A pytree of boolean arrays with the same structure, ``None`` where the masks are
      ``None`` (nothing there became active).

    Raises:
      ValueError: the structures, shapes or ``None`` leaves differ.
      TypeError: a leaf is not boolean.
    """
    check_mask(old_mask, new_mask, name="old_mask", allow_none=True)
    check_boolean(new_mask, name="new_mask")

    def leaf(path, o, n):
        if o is None and n is None:
            return None
        if o is None or n is None:
            raise ValueError(
                f"old_mask and new_mask must have None at the same leaves, got None only in "
                f"{'old_mask' if o is None else 'new_mask'}{jax.tree_util.keystr(path)}"
            )
        return ~o & n

    return jax.tree_util.tree_map_with_path(leaf, old_mask, new_mask, is_leaf=is_none)


def reset_moments(
    state: optax.OptState,
    newly_active: Any,
    *,
    fields: tuple[str, ...] | None = None,
) -> optax.OptState:
    """Zero an optimizer state's per-parameter buffers where entries became active.

    Works on any optax state (a chain, ``inject_hyperparams``, :func:`optax.multi_transform`,
    :func:`optax.masked`, :func:`masked_adam`, :func:`optax.adam`, SGD momentum, ...)
    without knowing its types: every sub-tree of ``state`` whose tree structure and leaf
    shapes equal those of ``newly_active`` is a per-parameter buffer (``mu``, ``nu``,
    ``trace``, masked Adam's per-element ``count``, AdaGrad's ``sum_of_squares``, CLASSP's
    ``grad_sum``, ...), and is set to zero where ``newly_active`` is true. Sub-trees that
    :func:`optax.masked` or :func:`optax.multi_transform` replaced by
    :class:`optax.MaskedNode` are skipped, and a ``None`` leaf of ``newly_active`` resets
    nothing in that leaf. Scalars such as optax's global step count are left alone, so
    :func:`optax.adam` keeps bias-correcting regrown entries with the global step; masked
    Adam restarts their own count, which is the point of it.

    Args:
      state: an optimizer state.
      newly_active: pytree of boolean arrays with the params' structure and shapes
        (``None`` leaves allowed); True marks entries to reset, e.g.
        ``became_active(old_mask, new_mask)``.
      fields: if given, only buffers reached through a NamedTuple field (or dict key) with
        one of these names are reset, e.g. ``("mu", "nu", "count")`` to keep an
        accumulator such as ``sum_of_squares``.

    Returns:
      A state with the same structure, shapes and dtypes.

    Raises:
      ValueError: no sub-tree of ``state`` has the structure and shapes of
        ``newly_active`` (the message names the leaf whose shape differs, if any), or
        ``fields`` names none of the buffers found.
      TypeError: a leaf of ``newly_active`` is not boolean.

    .. warning::
      With a single-array (or scalar) parameter, every array of that shape in the state
      counts as a buffer, including a scalar step count when the parameter is a scalar.
      Use ``fields`` in that case.
    """
    check_boolean(newly_active, name="newly_active")

    def same_structure(node):
        if not jax.tree.leaves(node):  # an empty state, or a MaskedNode hidden by a wrapper
            return False
        mask = subset_like(newly_active, node)
        return jax.tree.structure(mask, is_leaf=is_none) == jax.tree.structure(node)

    def is_buffer(node):
        if not same_structure(node):
            return False
        mask = subset_like(newly_active, node)
        pairs = zip(jax.tree.leaves(mask, is_leaf=is_none), jax.tree.leaves(node), strict=True)
        return all(a is None or jnp.shape(a) == jnp.shape(x) for a, x in pairs)

    def names(path):
        return {getattr(k, "name", getattr(k, "key", None)) for k in path}

    def wanted(path):
        return fields is None or bool(names(path) & set(fields))

    buffers = [
        path
        for path, node in jax.tree_util.tree_leaves_with_path(state, is_leaf=is_buffer)
        if is_buffer(node)
    ]
    if not buffers:
        _explain_missing_buffer(state, newly_active, same_structure)
    if not any(wanted(p) for p in buffers):
        found = sorted({str(n) for p in buffers for n in names(p) if n is not None})
        _checks.fail(
            "fields",
            "names among the fields that hold a per-parameter buffer, "
            + ", ".join(map(repr, found)),
            fields,
        )

    def reset_leaf(x, a):
        return x if a is None else jnp.where(a, jnp.zeros_like(x), x)

    def reset(path, node):
        if not is_buffer(node) or not wanted(path):
            return node
        return jax.tree.map(reset_leaf, node, subset_like(newly_active, node))

    return jax.tree_util.tree_map_with_path(reset, state, is_leaf=is_buffer)


def _explain_missing_buffer(state, newly_active, same_structure) -> None:
    """Raises the ValueError of :func:`reset_moments` when no buffer matches."""
    candidates = [n for n in jax.tree.leaves(state, is_leaf=same_structure) if same_structure(n)]
    if candidates:  # right structure, wrong shapes: name the first leaf that differs
        node = candidates[0]
        check_mask(subset_like(newly_active, node), node, name="newly_active", allow_none=True)
    _checks.fail(
        "newly_active",
        "of the structure of a per-parameter buffer of the state (mu, trace, ...)",
        jax.tree.structure(newly_active),
    )
