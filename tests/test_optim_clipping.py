"""clip_updates: element-wise clip of the final update."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcl import optim as jo


def test_clips_each_element_to_the_bound():
    opt = jo.clip_updates(0.01)
    u, state = opt.update(
        {"a": jnp.array([0.5, -0.002, -3.0]), "b": jnp.array(0.0)}, opt.init(None)
    )
    np.testing.assert_allclose(u["a"], [0.01, -0.002, -0.01])
    assert u["b"] == 0.0
    assert state == optax.EmptyState()


def test_keeps_bfloat16():
    u, _ = jo.clip_updates(0.5).update(jnp.array([1.0, -0.25], jnp.bfloat16), optax.EmptyState())
    assert u.dtype == jnp.bfloat16
    np.testing.assert_allclose(u.astype(jnp.float32), [0.5, -0.25])


def test_hard_ash_chain_clips_the_step_not_the_gradient():
    # Adagrad's first step is ±lr whatever |g|; a bound below lr clips it, one above does not.
    params = jnp.zeros(2)
    g = jnp.array([100.0, -0.1])
    for bound, expected in [(1e-4, [-1e-4, 1e-4]), (0.01, [-2e-4, 2e-4])]:
        opt = optax.chain(
            optax.adagrad(2e-4, initial_accumulator_value=1e-6), jo.clip_updates(bound)
        )
        u, _ = opt.update(g, opt.init(params), params)
        np.testing.assert_allclose(u, expected, rtol=1e-3)


@pytest.mark.parametrize("bad", [0.0, -0.01, float("nan")])
def test_non_positive_bound_is_refused(bad):
    with pytest.raises(ValueError, match="max_abs must be > 0"):
        jo.clip_updates(bad)
