"""Argument checks shared by every module, with one error grammar.

Every refusal reads ``"<name> must be <what is allowed>, got <value>"`` (no final period),
e.g. ``"density must be in (0, 1], got 1.5"``; a name that is not in a registry or a set of
choices lists the valid ones, sorted: ``"growth must be one of 'gradient', 'momentum',
'random', 'unfired', got 'magnitude'"``. A wrong type raises ``TypeError``, a wrong value
``ValueError``. Shapes, ranks and dtypes of arrays are checked with ``chex`` where chex
says the thing.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any, NoReturn

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "concrete_real",
    "fail",
    "non_negative_int",
    "one_of",
    "positive_int",
]


def fail(name: str, allowed: str, value: Any, error: type[Exception] = ValueError) -> NoReturn:
    """Raises ``error("<name> must be <allowed>, got <value!r>")``."""
    raise error(f"{name} must be {allowed}, got {value!r}")


def one_of(name: str, value: Any, valid: Iterable[Any]) -> Any:
    """``value`` if it is among ``valid``, else ValueError listing the valid values sorted."""
    choices = sorted(valid, key=str)
    if not isinstance(value, str | int | float | bool | None) or value not in choices:
        fail(name, "one of " + ", ".join(map(repr, choices)), value)
    return value


def _integer(name: str, value: Any, allowed: str) -> int:
    if isinstance(value, bool | np.bool_):  # True would act as 1
        fail(name, allowed, value, TypeError)
    try:
        return operator.index(value)
    except TypeError:
        fail(name, allowed, value, TypeError)


def positive_int(name: str, value: Any) -> int:
    """``value`` as an int >= 1 (ints and numpy integers only; bools and floats refused)."""
    number = _integer(name, value, "a positive integer")
    if number < 1:
        fail(name, "a positive integer", value)
    return number


def non_negative_int(name: str, value: Any) -> int:
    """``value`` as an int >= 0 (ints and numpy integers only; bools and floats refused)."""
    number = _integer(name, value, "an integer >= 0")
    if number < 0:
        fail(name, "an integer >= 0", value)
    return number


def concrete_real(name: str, value: Any, allowed: str) -> np.ndarray | None:
    """``value`` as a float64 array, or None when it is known only at run time.

    Schedules (callables) and traced values (e.g. ``optax.inject_hyperparams`` builds under
    ``jit``) are not checked. Anything but real numbers is refused with a ``TypeError``
    ``"<name> must be <allowed>, got <value>"``: ``True`` would act as 1, ``"0.1"`` would
    fail deep inside a traced function, a complex number has no order.
    """
    if callable(value) or isinstance(value, jax.core.Tracer):
        return None
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        array = np.asarray(None)
    # jnp.issubdtype knows bfloat16 (numpy's dtype.kind calls it "V"); bool is no integer.
    if not (jnp.issubdtype(array.dtype, jnp.integer) or jnp.issubdtype(array.dtype, jnp.floating)):
        fail(name, allowed, value, TypeError)
    return array.astype(np.float64)
