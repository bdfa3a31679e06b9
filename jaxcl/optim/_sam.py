r"""Sharpness-aware minimisation (SAM) and the first-order gradient-norm penalty (GNP).

Both wrap a base optimizer and spend two gradient evaluations on one real step: the
gradient ``g1`` the caller passes to ``update`` and a second one at perturbed parameters,
computed by ``grad_fn`` passed as an extra argument::

    grad_fn = lambda p: jax.grad(loss)(p, batch)
    updates, state = opt.update(grad_fn(params), state, params, grad_fn=grad_fn)

One ``update`` is one step, so the optimizer fits in a ``lax.scan`` over batches (unlike
the alternating "transparent" mode of :func:`optax.contrib.sam`). ``grad_fn`` takes the
parameters only (the batch is closed over), unlike :func:`optax.contrib.sam`'s
``grad_fn(params, i)``.

Transformations chained before (``optax.chain(pre, sam(base, rho))``) hand over
``u = pre(g1)``, not ``g1``. Both wrappers evaluate ``g1 = grad_fn(params)`` themselves,
take the ascent direction from it and add what the chain changed, ``d = u - g1``, to the
gradient they give ``base``: :math:`g = g_2 + d` for SAM. This is exact for terms added to
the gradient that depend on the weights only (``optax.add_decayed_weights``, an L2 penalty):
they act at :math:`w`, outside the sharpness term, as the weight decay of Foret et al.'s
objective :math:`L^{SAM}(w) + \lambda \lVert w \rVert_2^2` (eq. 1). Rescaling transforms
(clipping, normalisation) are not additive (``clip(g1) - g1 + g2`` is not ``clip(g2)``): put
them inside ``base`` (chained before, only their change to ``g1`` is carried over). With
nothing chained before, ``d = 0``. Under ``jit``, XLA's common-subexpression elimination
merges ``grad_fn(params)`` with the caller's identical computation of ``g1`` (checked on
:func:`jaxcl.learners.supervised`'s MLP step: as many matmuls in the compiled program as
before ``g1`` was re-evaluated).

Inside :func:`optax.masked` or :func:`optax.multi_transform` a wrapper would see only its
sub-tree of the parameters and could not call ``grad_fn``, which takes all of them: it
raises an error saying to wrap the whole transformation instead,
``sam(optax.multi_transform(transforms, labels), rho)`` (every parameter is perturbed, each
group's optimizer receives its part of the sharpness-aware gradient).

``grad_fn`` runs the model at perturbed weights. If the model keeps running statistics
(BatchNorm) or any other mutable collection, ``grad_fn`` must discard what it computes: only
the unperturbed forward pass that produced ``g1`` may update them, otherwise statistics of
perturbed weights leak into the model (the reason for :func:`optax.contrib.sam`'s opaque
mode).

With flax, pass ``grad_fn`` through ``nnx.Optimizer.update(model, grads, grad_fn=...)``
(its ``grad_fn`` takes the ``nnx.Param`` state as a pure pytree, the structure of
``grads``); ``flax.training.train_state.TrainState.apply_gradients`` cannot forward it:
call ``state.tx.update(grads, state.opt_state, state.params, grad_fn=...)`` and
``state.replace(...)`` instead. The README shows both.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxcl import _checks

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


def _gradients(updates, params, radius, grad_fn):
    """The first gradient, its direction, the gradient at the ascent point and the offset.

    ``g1 = grad_fn(params)``, ``direction = g1 / ||g1||`` (0 at ``g1 = 0``, so the ascent
    point is then ``params`` itself), ``g2 = grad_fn(params + radius * direction)`` and
    ``offset = updates - g1``, what transformations chained before changed. All in the
    dtypes of ``updates``.
    """
    g1 = jax.tree.map(lambda g, u: g.astype(u.dtype), grad_fn(params), updates)
    direction = _normalized(g1)
    perturbed = jax.tree.map(lambda p, d: (p + radius * d).astype(p.dtype), params, direction)
    g2 = jax.tree.map(lambda g, u: g.astype(u.dtype), grad_fn(perturbed), updates)
    offset = jax.tree.map(lambda u, g: u - g, updates, g1)
    return g1, direction, g2, offset


def _is_masked_node(x: Any) -> bool:
    return isinstance(x, optax.MaskedNode)


def _check_call(name: str, params: Any, grad_fn: GradFn | None) -> None:
    if grad_fn is None:
        _checks.fail(
            "grad_fn",
            f"passed to {name}'s update(): a function params -> grads evaluating the current "
            "batch's gradient (flax's TrainState.apply_gradients cannot pass it: see the "
            "docstring of jaxcl.optim.sam)",
            grad_fn,
        )
    if params is None:
        _checks.fail(
            "params", f"passed to {name}'s update(), to evaluate grad_fn near them", params
        )
    # optax.masked (and multi_transform, built on it) replaces the other groups' leaves.
    if any(map(_is_masked_node, jax.tree.leaves(params, is_leaf=_is_masked_node))):
        raise ValueError(
            f"params must be all the parameters, as grad_fn needs them: {name} cannot run "
            "inside optax.masked or optax.multi_transform. Wrap the whole transformation "
            f"instead, e.g. {name}(optax.multi_transform(transforms, labels), ...): every "
            "parameter is perturbed and each group's optimizer receives its part of the "
            "sharpness-aware gradient. Got a pytree with optax.MaskedNode leaves"
        )


def _wrapper(
    name: str,
    base: optax.GradientTransformation,
    state_type: type[SAMState] | type[GNPState],
    gradient: Callable[[optax.Updates, optax.Params, GradFn], optax.Updates],
) -> optax.GradientTransformationExtraArgs:
    """``base`` applied to ``gradient(updates, params, grad_fn)``, its state in ``state_type``."""
    base = optax.with_extra_args_support(base)

    def init_fn(params):
        return state_type(inner_state=base.init(params))

    def update_fn(updates, state, params=None, *, grad_fn=None, **extra_args):
        _check_call(name, params, grad_fn)
        g = gradient(updates, params, grad_fn)
        new_updates, inner = base.update(g, state.inner_state, params, **extra_args)
        return new_updates, state_type(inner_state=inner)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


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
    ``params`` after any transformation chained before; ``grad_fn(params) -> grads``
    evaluates the same batch's gradient at any weights. What the chain changed,
    :math:`d = \text{grads} - \nabla L(w)`, is added: :math:`u = \text{base}(g + d)`
    (module docstring; :math:`d = 0` when nothing is chained before). Other extra
    arguments (e.g. ``mask``) are forwarded to ``base``.

    Args:
      base: the optimizer that receives the sharpness-aware gradient (e.g. ``optax.sgd``).
      rho: the neighbourhood radius; >= 0 (0 gives ``base`` itself, at twice the cost).

    Returns:
      A :class:`optax.GradientTransformationExtraArgs` with state :class:`SAMState`.

    References:
      Foret et al., `Sharpness-Aware Minimization for Efficiently Improving Generalization
      <https://arxiv.org/abs/2010.01412>`_, 2021.
    .. warning::
      ``grad_fn`` runs the model at perturbed weights: see the module docstring for
      BatchNorm statistics and for gradient clipping.
    """
    _checks.non_negative("rho", rho)

    def gradient(updates, params, grad_fn):
        _, _, g2, offset = _gradients(updates, params, rho, grad_fn)
        return jax.tree.map(lambda a, d: a + d, g2, offset)

    return _wrapper("sam", base, SAMState, gradient)


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

    ``update(grads, state, params, *, grad_fn, **extra)`` as for :func:`sam`: the change
    :math:`d` made by transformations chained before is added to :math:`g`.

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
      ``grad_fn`` runs the model at perturbed weights: see the module docstring for
      BatchNorm statistics and for gradient clipping.
    """
    _checks.non_negative("r", r)
    _checks.in_range("alpha", alpha, 0, 1)

    def gradient(updates, params, grad_fn):
        g1, direction, g2, offset = _gradients(updates, params, r, grad_fn)
        first = direction if normalize_first else g1
        plain = jnp.asarray(r) == 0
        return jax.tree.map(
            lambda a, f, b, d: (jnp.where(plain, a, (1 - alpha) * f + alpha * b) + d).astype(
                a.dtype
            ),
            g1,
            first,
            g2,
            offset,
        )

    return _wrapper("gnp", base, GNPState, gradient)
