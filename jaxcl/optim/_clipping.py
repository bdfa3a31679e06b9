"""Element-wise clipping of the final update (Hard ASH)."""

import jax
import jax.numpy as jnp
import optax

from jaxcl import _checks


def clip_updates(max_abs: jax.typing.ArrayLike) -> optax.GradientTransformationExtraArgs:
    r"""Clip every element of the update to :math:`[-\text{max\_abs}, \text{max\_abs}]`.

    .. math::

      u_i \leftarrow \min(\max(u_i, -c), c)

    Chain it *after* the optimizer, as the Hard ASH code does with ``c = 0.01``:
    ``optax.chain(optax.adagrad(2e-4, initial_accumulator_value=1e-6), clip_updates(0.01))``.
    This clips the step, not the gradient (for that, see :func:`optax.clip` before the
    optimizer). Stateless; extra arguments are ignored.

    Args:
      max_abs: the bound ``c``; > 0.

    Returns:
      A :class:`optax.GradientTransformationExtraArgs`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxcl.optim import clip_updates
      >>> updates, _ = clip_updates(0.01).update(jnp.array([0.5, -0.002, -3.0]), None)
      >>> print(updates)
      [ 0.01  -0.002 -0.01 ]

    References:
      Keskinen, `Hard ASH: Sparsity and the right optimizer make a continual learner
      <https://arxiv.org/abs/2404.17651>`_, 2024 (code: ``grad_clip=0.01``).
    """
    _checks.positive("max_abs", max_abs)

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        updates = jax.tree.map(lambda u: jnp.clip(u, -max_abs, max_abs).astype(u.dtype), updates)
        return updates, state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
