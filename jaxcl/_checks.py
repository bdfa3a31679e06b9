"""Argument checks shared by every module, with one error grammar.

Every refusal reads ``"<name> must be <what is allowed>, got <value>"`` (no final period),
e.g. ``"density must be in (0, 1], got 1.5"``; a name that is not in a registry or a set of
choices lists the valid ones, sorted: ``"growth must be one of 'gradient', 'momentum',
'random', 'unfired', got 'magnitude'"``. A wrong type raises ``TypeError``, a wrong value
``ValueError``. Shapes, ranks and dtypes of arrays are checked with ``chex`` where chex
says the thing.

Traced values: a range check lets a tracer pass (a grid's cells are checked on their
concrete values when the grid run is made, :func:`jaxcl.engine.make_run`); a check that
needs a concrete Python value (an int that sets a shape, a name, ``scalar=True``) refuses
a tracer with a ``TypeError``: such a hyperparameter is structural, not traceable.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

import chex
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "boolean",
    "concrete_real",
    "fail",
    "finite",
    "in_range",
    "integer",
    "non_negative",
    "non_negative_int",
    "one_of",
    "positive",
    "positive_int",
    "rank",
    "shape",
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


def integer(name: str, value: Any) -> int:
    """``value`` as an int (ints and numpy integers only; bools and floats refused)."""
    return _integer(name, value, "an integer")


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
    ``jit``, or the cells of a :func:`jaxcl.engine.grid`, whose concrete values were checked
    when the grid run was made) are not checked. Anything but real numbers is refused with
    a ``TypeError`` ``"<name> must be <allowed>, got <value>"``: ``True`` would act as 1,
    ``"0.1"`` would fail deep inside a traced function, a complex number has no order.
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


def boolean(name: str, value: Any) -> bool:
    """``value`` as a bool (Python and numpy bools only: ``1`` or ``"no"`` are refused)."""
    if not isinstance(value, bool | np.bool_):
        fail(name, "a bool", value, TypeError)
    return bool(value)


Predicate = Callable[[np.ndarray], np.ndarray]


def _real(name: str, value: Any, allowed: str, ok: Predicate, scalar: bool) -> Any:
    kind = f"a real number {allowed}"
    if scalar and (callable(value) or isinstance(value, jax.core.Tracer) or np.ndim(value) != 0):
        fail(name, kind, value, TypeError)
    values = concrete_real(name, value, kind)
    if values is None:
        return None
    # `not ok(v)` rather than a negated comparison, so that NaN is refused too.
    if not np.all(ok(values)):
        fail(name, allowed, value)
    if not np.all(np.isfinite(values)):
        fail(name, f"{allowed} and finite", value)
    return float(values) if scalar else values


def _bound(x: float) -> str:
    return f"{x:g}"


def in_range(
    name: str,
    value: Any,
    low: float,
    high: float,
    bounds: str = "[]",
    *,
    scalar: bool = False,
) -> Any:
    """Finite real numbers in the interval from ``low`` to ``high``, e.g. ``"[)"`` for [0, 1).

    Args:
      name: the argument's name, for the message.
      value: a real number or an array of them; a schedule (callable) or a traced value is
        known only at run time and passes unchecked (None is returned).
      low, high: the interval's ends.
      bounds: ``"[]"``, ``"[)"``, ``"(]"`` or ``"()"``: which ends are included.
      scalar: require one concrete number (no array, schedule or traced value) and return
        it as a float.

    Returns:
      ``value`` as a float64 array, or None when it is known only at run time; a float
      when ``scalar``.

    Raises:
      TypeError: anything but real numbers (``True``, ``"0.1"``, a complex number).
      ValueError: ``"<name> must be in [0, 1), got 1.0"`` (NaN included), or ``"... and
        finite"`` for an infinite value inside the interval (``high=math.inf``).
    """
    one_of("bounds", bounds, ("[]", "[)", "(]", "()"))
    above = np.greater_equal if bounds[0] == "[" else np.greater
    below = np.less_equal if bounds[1] == "]" else np.less
    allowed = f"in {bounds[0]}{_bound(low)}, {_bound(high)}{bounds[1]}"
    return _real(name, value, allowed, lambda v: above(v, low) & below(v, high), scalar)


def non_negative(name: str, value: Any, *, scalar: bool = False) -> Any:
    """Finite real numbers >= 0 (see :func:`in_range` for ``value``, ``scalar`` and errors)."""
    return _real(name, value, ">= 0", lambda v: v >= 0, scalar)


def positive(name: str, value: Any, *, scalar: bool = False) -> Any:
    """Finite real numbers > 0 (see :func:`in_range` for ``value``, ``scalar`` and errors)."""
    return _real(name, value, "> 0", lambda v: v > 0, scalar)


def finite(name: str, value: Any, *, scalar: bool = False) -> Any:
    """Finite real numbers of any sign (see :func:`in_range`)."""
    return _real(name, value, "finite", np.isfinite, scalar)


def shape(name: str, array: Any, expected: Sequence[Any], allowed: str | None = None) -> None:
    """ValueError unless ``array``'s shape is ``expected`` (``chex.assert_shape``).

    ``expected`` may hold ``...`` (any number of axes), ``None`` (any size) or sets of
    sizes, as chex allows; ``allowed`` describes it in the message (default: ``expected``).
    """
    chex.assert_shape(
        array,
        tuple(expected),
        custom_message=_message(name, f"of shape {allowed or tuple(expected)}", jnp.shape(array)),
        exception_type=ValueError,
        include_default_message=False,
    )


def rank(name: str, array: Any, expected: int | set[int], allowed: str | None = None) -> None:
    """ValueError unless ``array`` has rank ``expected`` (``chex.assert_rank``)."""
    chex.assert_rank(
        array,
        expected,
        custom_message=_message(name, allowed or f"of rank {expected}", jnp.shape(array)),
        exception_type=ValueError,
        include_default_message=False,
    )


def _message(name: str, allowed: str, value: Any) -> str:
    return f"{name} must be {allowed}, got {value!r}"
