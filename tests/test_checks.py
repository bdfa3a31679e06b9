"""The one error grammar: '<name> must be <allowed>, got <value>'."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import _checks


@pytest.mark.parametrize(
    "check, error, message",
    [
        (
            lambda: _checks.one_of("mode", "x", ("b", "a")),
            ValueError,
            "mode must be one of 'a', 'b', got 'x'",
        ),
        (lambda: _checks.positive_int("k", 0), ValueError, "k must be a positive integer, got 0"),
        (
            lambda: _checks.positive_int("k", True),
            TypeError,
            "k must be a positive integer, got True",
        ),
        (
            lambda: _checks.non_negative_int("n", -1),
            ValueError,
            "n must be an integer >= 0, got -1",
        ),
        (lambda: _checks.integer("axis", 1.0), TypeError, "axis must be an integer, got 1.0"),
        (lambda: _checks.boolean("flag", 1), TypeError, "flag must be a bool, got 1"),
        (lambda: _checks.non_negative("lr", -0.1), ValueError, "lr must be >= 0, got -0.1"),
        (lambda: _checks.non_negative("lr", math.nan), ValueError, "lr must be >= 0, got nan"),
        (
            lambda: _checks.non_negative("lr", math.inf),
            ValueError,
            "lr must be >= 0 and finite, got inf",
        ),
        (
            lambda: _checks.non_negative("lr", "0.1"),
            TypeError,
            "lr must be a real number >= 0, got '0.1'",
        ),
        (lambda: _checks.positive("eps", 0.0), ValueError, "eps must be > 0, got 0.0"),
        (lambda: _checks.finite("z", -math.inf), ValueError, "z must be finite, got -inf"),
        (
            lambda: _checks.in_range("b1", 1.0, 0, 1, "[)"),
            ValueError,
            "b1 must be in [0, 1), got 1.0",
        ),
        (lambda: _checks.in_range("d", 0, 0, 1, "(]"), ValueError, "d must be in (0, 1], got 0"),
        (lambda: _checks.in_range("d", 0.5, 0, 1, "[["), ValueError, "bounds must be one of"),
        (
            lambda: _checks.positive("beta", np.ones(2), scalar=True),
            TypeError,
            "beta must be a real number > 0, got array([1., 1.])",
        ),
        (
            lambda: _checks.shape("R", jnp.zeros((2, 3)), (..., 3, 3), "[..., T, T]"),
            ValueError,
            "R must be of shape [..., T, T], got (2, 3)",
        ),
        (
            lambda: _checks.rank("x", jnp.zeros(3), 2),
            ValueError,
            "x must be of rank 2, got (3,)",
        ),
    ],
)
def test_messages(check, error, message):
    with pytest.raises(error, match=re.escape(message)):
        check()


def test_values_known_only_at_run_time_pass_unless_a_scalar_is_required():
    assert _checks.non_negative("lr", lambda count: 0.1) is None  # a schedule
    seen = []
    jax.jit(lambda x: seen.append(_checks.in_range("b1", x, 0, 1, "[)")) or x)(2.0)  # traced
    assert seen == [None]
    with pytest.raises(TypeError, match="lr must be a real number >= 0, got <function"):
        _checks.non_negative("lr", lambda count: 0.1, scalar=True)


def test_accepted_values_come_back():
    np.testing.assert_array_equal(_checks.in_range("b", [0.0, 0.5], 0, 1, "[)"), [0.0, 0.5])
    assert _checks.in_range("d", np.float32(0.25), 0, 1, "(]", scalar=True) == 0.25
    assert _checks.integer("axis", np.int64(-1)) == -1 and _checks.boolean("f", np.True_)
