"""Sharpness-aware minimisation (SAM) and the first-order gradient-norm penalty (GNP).

Both wrap a base optimizer and spend two gradient evaluations on one real step: the
gradient ``g1`` the caller passes to ``update`` and a second one at perturbed parameters,
computed by ``grad_fn`` passed as an extra argument::

    grad_fn = lambda p: jax.grad(loss)(p, batch)
    updates, state = opt.update(grad_fn(params), state, params, grad_fn=grad_fn)

One ``update`` is one step, so the optimizer fits in a ``lax.scan`` over batches (unlike
the alternating "transparent" mode of :func:`optax.contrib.sam`).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxcl.optim import _validation as v

GradFn = Callable[[optax.Params], optax.Updates]


class SAMState(NamedTuple):
    """State of :func:`sam`: the base optimizer's state, unchanged in structure."""

    inner_state: optax.OptState


class GNPState(NamedTuple):
    """State of :func:`gnp`: the base optimizer's state, unchanged in structure."""

    inner_state: optax.OptState


def _global_norm(tree: Any) -> jax.Array:
    # float32 sums so that a bfloat16 gradient does not overflow or lose the norm.
    leaves = jax.tree.leaves(tree)
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))


def _normalized(tree: Any) -> Any:
    """``tree / ||tree||``, and zeros for a zero tree (no NaN)."""
    norm = _global_norm(tree)
    inv = jnp.where(norm > 0, 1 / jnp.where(norm > 0, norm, 1), 0)
    return jax.tree.map(lambda x: (x * inv).astype(x.dtype), tree)


def _gradient_at_ascent_point(grads, params, radius, grad_fn):
    """g2 = grad_fn(params + radius * g1 / ||g1||); at g1 = 0 the point is params itself."""
    direction = _normalized(grads)
    perturbed = jax.tree.map(lambda p, d: (p + radius * d).astype(p.dtype), params, direction)
    return direction, grad_fn(perturbed)


def _check_call(name: str, params: Any, grad_fn: GradFn | None) -> None:
    if grad_fn is None:
        raise ValueError(
            f"{name}: update() needs the keyword argument grad_fn, a function params -> grads "
            "evaluating the current batch's gradient."
        )
    if params is None:
        raise ValueError(f"{name}: update() needs params, to evaluate grad_fn near them.")


def sam(
    base: optax.GradientTransformation,
    rho: jax.typing.ArrayLike,
) -> optax.GradientTransformationExtraArgs:
    r"""Sharpness-aware minimisation: ``base`` applied to the gradient at the ascent point.

    .. math::

      \hat\epsilon = \rho\,\frac{g_1}{\lVert g_1 \rVert_2}, \qquad
      g = \nabla L(w + \hat\epsilon), \qquad u = \text{base}(g)

    with the global L2 norm over the whole pytree. For :math:`g_1 = 0`,
    :math:`\hat\epsilon = 0` and :math:`g = \nabla L(w)`: the update is finite (no NaN,
    unlike normalising by a zero norm).

    ``update(grads, state, params, *, grad_fn, **extra)``: ``grads`` is :math:`g_1` at
    ``params``; ``grad_fn(params) -> grads`` evaluates the same batch's gradient at other
    weights. Other extra arguments (e.g. ``mask``) are forwarded to ``base``.

    Args:
      base: the optimizer that receives the sharpness-aware gradient (e.g. ``optax.sgd``).
      rho: the neighbourhood radius; >= 0 (0 gives ``base`` itself, at twice the cost).

    Returns:
      A :class:`optax.GradientTransformationExtraArgs` with state :class:`SAMState`.

    References:
      Foret et al., `Sharpness-Aware Minimization for Efficiently Improving Generalization
      <https://arxiv.org/abs/2010.01412>`_, 2021.
    .. warning::
      ``grad_fn`` runs the model at perturbed weights. If the model keeps running
      statistics (BatchNorm) or any other mutable collection, ``grad_fn`` must discard
      what it computes: only the unperturbed forward pass that produced ``g1`` may update
      them, otherwise statistics of perturbed weights leak into the model (the reason for
      :func:`optax.contrib.sam`'s opaque mode). Put gradient clipping inside ``base``: a
      transformation chained before this one changes ``g1`` only, not what ``grad_fn``
      returns.
    """
    v.check_nonnegative("rho", rho)
    base = optax.with_extra_args_support(base)

    def init_fn(params):
        return SAMState(inner_state=base.init(params))

    def update_fn(updates, state, params=None, *, grad_fn=None, **extra_args):
        _check_call("sam", params, grad_fn)
        _, g2 = _gradient_at_ascent_point(updates, params, rho, grad_fn)
        g2 = jax.tree.map(lambda a, g: a.astype(g.dtype), g2, updates)
        new_updates, inner = base.update(g2, state.inner_state, params, **extra_args)
        return new_updates, SAMState(inner_state=inner)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def gnp(
    base: optax.GradientTransformation,
    r: jax.typing.ArrayLike,
    alpha: jax.typing.ArrayLike,
    *,
    normalize_first: bool = True,
) -> optax.GradientTransformationExtraArgs:
    r"""First-order gradient-norm penalty: ``base`` applied to a mix of two gradients.

    The penalised loss :math:`L(w) + \lambda \lVert \nabla L(w) \rVert_2` is followed with
    the official first-order implementation (``get_gnp_gradient``), with
    :math:`\alpha = \lambda / r`:

    .. math::

      g_2 = \nabla L\!\left(w + r\,\frac{g_1}{\lVert g_1 \rVert_2}\right), \qquad
      g = (1-\alpha)\,\hat g_1 + \alpha\, g_2, \qquad u = \text{base}(g),

    where :math:`\hat g_1 = g_1 / \lVert g_1 \rVert_2` when ``normalize_first`` (the
    official default, ``norm_perturbations=True``) and :math:`\hat g_1 = g_1` otherwise.
    :math:`\alpha = 1` is :func:`sam` with :math:`\rho = r`. As in the official code,
    :math:`r = 0` means plain training (:math:`g = g_1`). A zero :math:`g_1` gives
    :math:`\hat g_1 = 0` and a finite update.

    ``update(grads, state, params, *, grad_fn, **extra)`` as for :func:`sam`.

    Args:
      base: the optimizer that receives the mixed gradient.
      r: the perturbation radius; >= 0.
      alpha: the mixing weight, in [0, 1].
      normalize_first: mix the normalised first gradient (default) or the raw one.

    Returns:
      A :class:`optax.GradientTransformationExtraArgs` with state :class:`GNPState`.

    References:
      Zhao, Zhang & Hu, `Penalizing Gradient Norm for Efficiently Improving Generalization
      in Deep Learning <https://arxiv.org/abs/2202.03599>`_, 2022. Code:
      ``zhaoyang-0204/gnp``, ``training/training_core.py``.
    .. warning::
      ``grad_fn`` runs the model at perturbed weights. If the model keeps running
      statistics (BatchNorm) or any other mutable collection, ``grad_fn`` must discard
      what it computes: only the unperturbed forward pass that produced ``g1`` may update
      them, otherwise statistics of perturbed weights leak into the model (the reason for
      :func:`optax.contrib.sam`'s opaque mode). Put gradient clipping inside ``base``: a
      transformation chained before this one changes ``g1`` only, not what ``grad_fn``
      returns.
    """
    v.check_nonnegative("r", r)
    v.check_fraction("alpha", alpha)
    base = optax.with_extra_args_support(base)

    def init_fn(params):
        return GNPState(inner_state=base.init(params))

    def update_fn(updates, state, params=None, *, grad_fn=None, **extra_args):
        _check_call("gnp", params, grad_fn)
        direction, g2 = _gradient_at_ascent_point(updates, params, r, grad_fn)
        first = direction if normalize_first else updates
        plain = jnp.asarray(r) == 0
        mixed = jax.tree.map(
            lambda g1, f, b: jnp.where(plain, g1, (1 - alpha) * f + alpha * b).astype(g1.dtype),
            updates,
            first,
            g2,
        )
        new_updates, inner = base.update(mixed, state.inner_state, params, **extra_args)
        return new_updates, GNPState(inner_state=inner)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
