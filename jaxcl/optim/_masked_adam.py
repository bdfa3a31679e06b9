"""Adam whose moments only move where an entry is active: no stale momentum."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax import tree as otu

from jaxcl.optim import _validation as v


class ScaleByMaskedAdamState(NamedTuple):
    """State of :func:`scale_by_masked_adam`.

    Attributes:
      count: per-element number of active steps; int32, same structure and shapes as the
        params. Each entry's bias correction uses its own count.
      mu: first moment, same structure, shapes and dtypes as the params.
      nu: second moment, same structure, shapes and dtypes as the params.
    """

    count: optax.Updates
    mu: optax.Updates
    nu: optax.Updates


def _default_activity(g, mask_by_gradient):
    return g != 0 if mask_by_gradient else jnp.ones(g.shape, bool)


def _resolve_mask(mask, updates, mask_by_gradient):
    if mask is None:
        return jax.tree.map(lambda g: _default_activity(g, mask_by_gradient), updates)
    # A None leaf in the mask (e.g. an unpruned bias) falls back to the default activity.
    return jax.tree.map(
        lambda m, g: _default_activity(g, mask_by_gradient) if m is None else m,
        mask,
        updates,
        is_leaf=lambda x: x is None,
    )


def scale_by_masked_adam(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    *,
    bias_correction: bool = True,
    mask_by_gradient: bool = True,
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

    Activity comes from ``update(..., mask=mask)``: a pytree with the structure and shapes
    of the updates, non-zero (or True) meaning active, e.g. a dynamic-sparse-training
    weight mask or a Top-K activation pattern; a ``None`` leaf falls back to the default
    below. With ``mask=None``:

    * ``mask_by_gradient=True`` (default): active means a non-zero gradient. A gradient
      that is exactly zero (a silent unit) freezes the entry.
    * ``mask_by_gradient=False``: every entry is active, which is plain dense Adam.

    With every entry active at every step this is :func:`optax.adam`'s rule.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: added to the denominator outside the root; >= 0.
      bias_correction: divide the moments by :math:`1-\beta^{n}` (per element).
      mask_by_gradient: what ``mask=None`` means (see above).

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
    v.check_decay("b1", b1)
    v.check_decay("b2", b2)
    v.check_nonnegative("eps", eps)

    def _one_minus_power(b, n):
        return -jnp.expm1(n * jnp.log(jnp.asarray(b, jnp.float32)))

    def init_fn(params):
        return ScaleByMaskedAdamState(
            count=otu.zeros_like(params, dtype=jnp.int32),
            mu=otu.zeros_like(params),
            nu=otu.zeros_like(params),
        )

    def leaf_update(g, active, n, m, nu):
        active = jnp.asarray(active) != 0
        new_n = jnp.where(active, optax.safe_increment(n), n)
        new_m = jnp.where(active, b1 * m + (1 - b1) * g, m)
        new_nu = jnp.where(active, b2 * nu + (1 - b2) * jnp.square(g), nu)
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


def masked_adam(
    learning_rate: optax.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    *,
    bias_correction: bool = True,
    mask_by_gradient: bool = True,
) -> optax.GradientTransformationExtraArgs:
    r"""Masked Adam: :func:`scale_by_masked_adam` then a learning rate.

    :math:`w_{t+1} = w_t - \eta\, u_t` with :math:`u_t` from :func:`scale_by_masked_adam`;
    pass the activity with ``opt.update(grads, state, params, mask=mask)``.

    Args:
      learning_rate: a scalar >= 0 or an optax schedule.
      b1, b2, eps, bias_correction, mask_by_gradient: as in :func:`scale_by_masked_adam`.

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
    if not callable(learning_rate):
        v.check_nonnegative("learning_rate", learning_rate)
    return optax.chain(
        scale_by_masked_adam(
            b1, b2, eps, bias_correction=bias_correction, mask_by_gradient=mask_by_gradient
        ),
        optax.scale_by_learning_rate(learning_rate),
    )


def became_active(old_mask: Any, new_mask: Any) -> Any:
    """Entries active in ``new_mask`` but not in ``old_mask`` (e.g. regrown weights).

    Args:
      old_mask: pytree of arrays, non-zero meaning active.
      new_mask: pytree with the same structure and shapes.

    Returns:
      A pytree of boolean arrays with the same structure.
    """
    return jax.tree.map(
        lambda o, n: (jnp.asarray(o) == 0) & (jnp.asarray(n) != 0), old_mask, new_mask
    )


def reset_moments(
    state: optax.OptState,
    newly_active: Any,
    *,
    fields: tuple[str, ...] | None = None,
) -> optax.OptState:
    """Zero an optimizer state's per-parameter buffers where entries became active.

    Works on any optax state (a chain, ``inject_hyperparams``, :func:`masked_adam`,
    :func:`optax.adam`, SGD momentum, ...) without knowing its types: every sub-tree of
    ``state`` whose tree structure and leaf shapes equal those of ``newly_active`` is a
    per-parameter buffer (``mu``, ``nu``, ``trace``, masked Adam's per-element ``count``,
    AdaGrad's ``sum_of_squares``, CLASSP's ``grad_sum``, ...), and is set to zero where
    ``newly_active`` is true. Scalars such as optax's global step count are left alone, so
    :func:`optax.adam` keeps bias-correcting regrown entries with the global step; masked
    Adam restarts their own count, which is the point of it.

    Args:
      state: an optimizer state.
      newly_active: pytree with the params' structure and shapes; non-zero (True) marks
        entries to reset, e.g. ``became_active(old_mask, new_mask)``.
      fields: if given, only buffers reached through a NamedTuple field (or dict key) with
        one of these names are reset, e.g. ``("mu", "nu", "count")`` to keep an
        accumulator such as ``sum_of_squares``.

    Returns:
      A state with the same structure, shapes and dtypes.

    .. warning::
      With a single-array (or scalar) parameter, every array of that shape in the state
      counts as a buffer, including a scalar step count when the parameter is a scalar.
      Use ``fields`` in that case.
    """
    target = jax.tree.structure(newly_active)
    shapes = [jnp.shape(x) for x in jax.tree.leaves(newly_active)]

    def is_buffer(node):
        leaves, treedef = jax.tree.flatten(node)
        return treedef == target and [jnp.shape(x) for x in leaves] == shapes

    def wanted(path):
        if fields is None:
            return True
        names = {getattr(k, "name", getattr(k, "key", None)) for k in path}
        return bool(names & set(fields))

    def reset(path, node):
        if not is_buffer(node) or not wanted(path):
            return node
        return jax.tree.map(
            lambda x, a: jnp.where(jnp.asarray(a) != 0, jnp.zeros_like(x), x), node, newly_active
        )

    return jax.tree_util.tree_map_with_path(reset, state, is_leaf=is_buffer)
