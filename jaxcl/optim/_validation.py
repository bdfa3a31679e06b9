"""Construction-time checks for optimizer hyperparameters."""

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from jaxcl._checks import concrete_real


def _check(name: str, value: Any, ok: Callable[[np.ndarray], np.ndarray], allowed: str) -> None:
    values = concrete_real(name, value, "a real number or an array of them")
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
