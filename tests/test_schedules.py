"""Schedules: SDM's k annealing (exact integers), the GABA switch, switch_at, step_decay."""

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import schedules


def authors_k(epoch, k_start, k_end, transition):
    # Top_K.get_curr_k in exact arithmetic: int(clip(k_max − (k_max − k_min)·e / E)).
    value = Fraction(k_start) - Fraction(k_start - k_end) * epoch / transition
    return int(min(k_start, max(value, k_end)))


@pytest.mark.parametrize("k_start,k_end,transition", [(1000, 10, 200), (1000, 1, 7), (64, 4, 3)])
def test_linear_k_matches_the_authors_formula_exactly(k_start, k_end, transition):
    epochs = jnp.arange(0, 3 * transition + 2)
    got = jax.jit(
        jax.vmap(
            lambda e: schedules.linear_k(
                e, k_start=k_start, k_end=k_end, transition_epochs=transition
            )
        )
    )(epochs)
    want = [authors_k(int(e), k_start, k_end, transition) for e in epochs]
    np.testing.assert_array_equal(got, want)
    assert got.dtype == jnp.int32


def test_linear_k_hand_values():
    k = lambda e: int(schedules.linear_k(e, k_start=1000, k_end=10, transition_epochs=200))  # noqa: E731
    assert [k(0), k(1), k(100), k(199), k(200), k(5000), k(-3)] == [
        1000,
        995,
        505,
        14,
        10,
        10,
        1000,
    ]


def test_gaba_coefficient_moves_from_excitation_to_inhibition():
    counts = jnp.array([0, 25, 50, 75, 100, 10**9])
    r = schedules.gaba_coefficient(counts, switch_count=100)
    np.testing.assert_allclose(r, [-1.0, -0.5, 0.0, 0.5, 1.0, 1.0])
    # Monotone in the count, so a count that only grows only moves towards inhibition.
    grid = schedules.gaba_coefficient(jnp.arange(0, 300), switch_count=200.0)
    assert bool(jnp.all(jnp.diff(grid) >= 0)) and float(grid[0]) == -1.0


@pytest.mark.parametrize("bad", [0, -1.0, float("nan")])
def test_bad_gaba_switch_count_refused(bad):
    with pytest.raises(ValueError, match=f"switch_count must be > 0, got {bad}"):
        schedules.gaba_coefficient(jnp.zeros(3), switch_count=bad)


def test_bad_linear_schedule_refused():
    with pytest.raises(ValueError, match="k_end must be a positive integer, got 0"):
        schedules.linear_k(0, k_start=10, k_end=0, transition_epochs=5)
    with pytest.raises(ValueError, match="k_start must be an integer >= k_end = 5, got 4"):
        schedules.linear_k(0, k_start=4, k_end=5, transition_epochs=5)
    with pytest.raises(ValueError, match="transition_epochs must be a positive integer, got 0"):
        schedules.linear_k(0, k_start=10, k_end=2, transition_epochs=0)
    with pytest.raises(TypeError, match=r"k_end must be a positive integer, got 2\.5"):
        schedules.linear_k(0, k_start=10, k_end=2.5, transition_epochs=3)


def test_switch_at_is_one_value_before_the_step_and_another_from_it_under_jit():
    threshold = jax.jit(schedules.switch_at(4, 0.5, 1e-6))
    np.testing.assert_array_equal(
        [float(threshold(jnp.int32(c))) for c in (0, 3, 4, 100)],
        np.float32([0.5, 0.5, 1e-6, 1e-6]),
    )
    on = schedules.switch_at(2, True, False)
    assert [bool(on(c)) for c in range(4)] == [True, True, False, False]
    with pytest.raises(TypeError, match=r"step must be an integer, got 2\.5"):
        schedules.switch_at(2.5, 0.0, 1.0)


def test_step_decay_multiplies_at_the_rounded_fractions():
    lr = schedules.step_decay(1e-3, total_steps=10)  # steps 5 and round(7.5) = 8
    values = [float(lr(c)) for c in range(10)]
    np.testing.assert_allclose(values, [1e-3] * 5 + [1e-4] * 3 + [1e-5] * 2, rtol=1e-6)
    # Fractions that round to one step multiply there once (a dict of boundaries).
    short = schedules.step_decay(1.0, total_steps=1)  # round(0.5) = 0, round(0.75) = 1
    assert [float(short(c)) for c in (0, 1)] == pytest.approx([0.1, 0.01])
    with pytest.raises(ValueError, match="total_steps must be a positive integer, got 0"):
        schedules.step_decay(1.0, total_steps=0)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"init_value": -1e-3}, "init_value must be >= 0, got -0.001"),
        ({"init_value": float("nan")}, "init_value must be >= 0, got nan"),
        ({"factor": -0.1}, "factor must be >= 0, got -0.1"),
        ({"fractions": (0.5, 1.5)}, r"fractions must be in \[0, 1\], got 1.5"),
    ],
)
def test_step_decay_refuses_a_negative_rate_or_a_step_after_the_task(kwargs, message):
    with pytest.raises(ValueError, match=message):
        schedules.step_decay(**{"init_value": 1e-3, "total_steps": 10, **kwargs})
