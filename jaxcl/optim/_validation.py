"""Construction-time checks for optimizer hyperparameters."""

from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _concrete_values(name: str, value: Any) -> np.ndarray | None:
    """``value`` as a float64 array, or None when it cannot be checked now.

    Schedules (callables) and traced values (``optax.inject_hyperparams`` calls factories
    under ``jit``) are only known at run time. Booleans and strings are refused: ``True``
    would train at learning rate 1, ``"0.1"`` would fail deep inside a traced update.
    """
    if callable(value) or isinstance(value, jax.core.Tracer):
        return None
    array = np.asarray(value)
    # jnp.issubdtype knows bfloat16 (numpy's dtype.kind calls it "V"); bool is no integer.
    if not (jnp.issubdtype(array.dtype, jnp.integer) or jnp.issubdtype(array.dtype, jnp.floating)):
        raise TypeError(f"{name} must be a real number or an array of them, got {value!r}.")
    return array.astype(np.float64)


def _check(name: str, value: Any, ok: Callable[[np.ndarray], np.ndarray], allowed: str) -> None:
    values = _concrete_values(name, value)
    if values is None:
        return
    # `not ok(v)` rather than a negated comparison so that NaN is refused too.
    if not np.all(ok(values)):
        raise ValueError(f"{name} must be {allowed}, got {value!r}.")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} must be {allowed} and finite, got {value!r}.")


def check_nonnegative(name: str, value: Any) -> None:
    _check(name, value, lambda v: v >= 0, ">= 0")


def check_positive(name: str, value: Any) -> None:
    _check(name, value, lambda v: v > 0, "> 0")


def check_decay(name: str, value: Any) -> None:
    """Moment decay rates (b1, b2, momentum): [0, 1)."""
    _check(name, value, lambda v: (v >= 0) & (v < 1), "in [0, 1)")


def check_fraction(name: str, value: Any) -> None:
    """Mixing weights such as GNP's alpha: [0, 1]."""
    _check(name, value, lambda v: (v >= 0) & (v <= 1), "in [0, 1]")


def check_choice(name: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")
