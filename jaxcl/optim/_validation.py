"""Construction-time checks for optimizer hyperparameters."""

from collections.abc import Callable, Iterable
from typing import Any

import jax


def _concrete_float(value: Any) -> float | None:
    """``value`` as a Python float, or None when it cannot be checked now.

    Schedules (callables), traced values (``optax.inject_hyperparams`` calls factories under
    ``jit``) and non-scalar arrays are not checked: they are only known at run time.
    """
    if callable(value) or isinstance(value, jax.core.Tracer):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _check(name: str, value: Any, ok: Callable[[float], bool], allowed: str) -> None:
    v = _concrete_float(value)
    # `not ok(v)` rather than a negated comparison so that NaN is refused too.
    if v is not None and not ok(v):
        raise ValueError(f"{name} must be {allowed}, got {value!r}.")


def check_nonnegative(name: str, value: Any) -> None:
    _check(name, value, lambda v: v >= 0, ">= 0")


def check_positive(name: str, value: Any) -> None:
    _check(name, value, lambda v: v > 0, "> 0")


def check_decay(name: str, value: Any) -> None:
    """Moment decay rates (b1, b2, momentum): [0, 1)."""
    _check(name, value, lambda v: 0 <= v < 1, "in [0, 1)")


def check_fraction(name: str, value: Any) -> None:
    """Mixing weights such as GNP's alpha: [0, 1]."""
    _check(name, value, lambda v: 0 <= v <= 1, "in [0, 1]")


def check_choice(name: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")
