"""Optimizer aliases: a ``scale_by_*`` rescaling, then a learning rate (optax's alias form)."""

import inspect
from collections.abc import Callable

import optax

from jaxcl import _checks


def with_learning_rate(
    learning_rate: optax.ScalarOrSchedule, transform: optax.GradientTransformation
) -> optax.GradientTransformationExtraArgs:
    """``transform``, then :func:`optax.scale_by_learning_rate` (descent: ``-lr * u``).

    Args:
      learning_rate: a scalar >= 0 (checked) or an optax schedule (not checked).
      transform: the rescaling, e.g. :func:`jaxcl.optim.scale_by_classp`.
    """
    _checks.non_negative("learning_rate", learning_rate)
    return optax.chain(transform, optax.scale_by_learning_rate(learning_rate))


def alias_of(scale_by: Callable[..., optax.GradientTransformation]) -> Callable:
    """Decorator declaring ``alias(learning_rate, *args, **kwargs)`` as taking ``scale_by``'s.

    The decorated alias forwards ``*args, **kwargs`` to ``scale_by`` (written once, there);
    its declared signature, what :func:`inspect.signature`, ``help``, the optimizer
    registry and :func:`optax.inject_hyperparams` see, is ``learning_rate`` followed by
    ``scale_by``'s parameters.
    """
    signature = inspect.signature(scale_by)
    learning_rate = inspect.Parameter(
        "learning_rate",
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        annotation=optax.ScalarOrSchedule,
    )
    parameters = [learning_rate, *signature.parameters.values()]

    def declare(alias: Callable) -> Callable:
        alias.__signature__ = signature.replace(parameters=parameters)
        return alias

    return declare
