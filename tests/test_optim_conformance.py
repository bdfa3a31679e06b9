"""Conformance table for every registry entry, in the style of optax's ``alias_test.py``.

Each row is a registry name with the hyperparameters at which it is checked (the learning
rates are the documented ones: each minimises both targets within the given steps). Every
optimizer is called as the engine calls it: ``update(grads, state, params, grad_fn=...)``.
"""

import operator

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from jaxcl import optim as jo

# name: (hyperparameters, steps). The same learning rate solves both targets.
_ROWS = {
    "sgd": ({"learning_rate": 1e-3}, 10_000),
    "momentum": ({"learning_rate": 1e-3, "momentum": 0.9}, 10_000),
    "adam": ({"learning_rate": 1e-1}, 10_000),
    "adam_nobc": ({"learning_rate": 1e-2}, 10_000),
    "rmsprop": ({"learning_rate": 5e-3}, 10_000),
    "adagrad": ({"learning_rate": 1.0}, 10_000),
    # At p = 1 CLASSP's steps shrink like 1/t (g / Σ|g|): no single rate solves both.
    "classp": ({"learning_rate": 1.0, "threshold": 0.0, "power": 2.0}, 10_000),
    "masked_adam": ({"learning_rate": 1e-1}, 10_000),
    "sam": ({"learning_rate": 1e-3, "rho": 1e-3}, 10_000),
    "gnp": ({"learning_rate": 1e-3, "r": 1e-3, "alpha": 0.5}, 10_000),
}
_NAMES = list(_ROWS)


def test_table_covers_every_registered_optimizer():
    assert set(_NAMES) == set(jo.OPTIMIZERS)


def _parabola(dtype=jnp.float32):
    target = jnp.array([1.0, -1.0, 1.0], dtype)

    def objective(params):
        return jnp.sum(jnp.square(params - target))

    return jnp.array([-1.0, 10.0, 1.0], dtype), target, objective


def _rosenbrock(dtype=jnp.float32):
    def objective(params):
        return jnp.square(1.0 - params[0]) + 100.0 * jnp.square(params[1] - params[0] ** 2)

    return jnp.zeros(2, dtype), jnp.ones(2, dtype), objective


def _optimizer(name):
    return jo.get_optimizer(name, **_ROWS[name][0])


def _step(opt, objective):
    grad_fn = jax.grad(objective)

    def step(params, state):
        updates, state = opt.update(grad_fn(params), state, params, grad_fn=grad_fn)
        return optax.apply_updates(params, updates), state

    return step


def _run(opt, objective, params, steps, state=None):
    step = _step(opt, objective)
    state = opt.init(params) if state is None else state

    def body(carry, _):
        return step(*carry), None

    return jax.lax.scan(body, (params, state), length=steps)[0]


@pytest.mark.parametrize("target", [_parabola, _rosenbrock], ids=["parabola", "rosenbrock"])
@pytest.mark.parametrize("name", _NAMES)
def test_minimises(name, target):
    initial, solution, objective = target()
    params, _ = jax.jit(lambda p: _run(_optimizer(name), objective, p, _ROWS[name][1]))(initial)
    chex.assert_trees_all_close(params, solution, rtol=3e-2, atol=3e-2)


def _short_run(name, params, steps=3):
    return _run(_optimizer(name), _rosenbrock()[2], params, steps)


@pytest.mark.parametrize("name", _NAMES)
def test_vmap_over_initial_points_matches_single_runs(name):
    starts = jnp.array([[0.0, 0.0], [-1.0, 2.0], [0.5, 0.1]])
    batched = jax.jit(jax.vmap(lambda p: _short_run(name, p)))(starts)
    single = jax.jit(lambda p: _short_run(name, p))
    for i, start in enumerate(starts):
        row = jax.tree.map(operator.itemgetter(i), batched)
        chex.assert_trees_all_close(row, single(start), rtol=1e-6)


@pytest.mark.parametrize("name", _NAMES)
def test_a_step_under_lax_cond_is_taken_or_skipped(name):
    opt = _optimizer(name)
    step = _step(opt, _rosenbrock()[2])
    params, state = _short_run(name, jnp.array([-1.0, 2.0]))

    @jax.jit
    def maybe_step(take, params, state):
        return jax.lax.cond(take, step, lambda p, s: (p, s), params, state)

    chex.assert_trees_all_equal(maybe_step(False, params, state), (params, state))
    chex.assert_trees_all_close(maybe_step(True, params, state), jax.jit(step)(params, state))


@pytest.mark.parametrize("name", _NAMES)
def test_state_survives_an_orbax_round_trip(name, tmp_path):
    opt = _optimizer(name)
    objective = _rosenbrock()[2]
    params, state = _short_run(name, jnp.array([-1.0, 2.0]))
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "state", state)
        checkpointer.wait_until_finished()
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, opt.init(params))
        restored = checkpointer.restore(tmp_path / "state", abstract)
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    chex.assert_trees_all_equal(restored, state)
    resume = jax.jit(lambda p, s: _run(opt, objective, p, 5, s))
    chex.assert_trees_all_equal(resume(params, restored), resume(params, state))


@pytest.mark.parametrize("name", _NAMES)
def test_tree_map_params_reaches_every_per_parameter_buffer(name):
    opt = _optimizer(name)
    params, state = _short_run(name, jnp.array([-1.0, 2.0]))
    mapped = optax.tree.map_params(opt, lambda v: v.at[0].set(7), state)
    assert jax.tree.structure(mapped) == jax.tree.structure(state)
    for before, after in zip(jax.tree.leaves(state), jax.tree.leaves(mapped), strict=True):
        expected = before.at[0].set(7) if before.shape == params.shape else before
        np.testing.assert_array_equal(after, expected)


def _floating_leaves(tree):
    return [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]


@pytest.mark.parametrize("name", _NAMES)
def test_bfloat16_params_get_bfloat16_updates_and_float32_state(name):
    opt = _optimizer(name)
    initial, _, objective = _parabola(jnp.bfloat16)
    state = opt.init(initial)
    params, state = jax.jit(_step(opt, objective))(initial, state)
    assert params.dtype == jnp.bfloat16
    assert all(x.dtype == jnp.float32 for x in _floating_leaves(state)), jax.tree.map(
        lambda x: x.dtype, state
    )


def _last_update(name, dtype, steps=3000):
    """The update after ``steps`` constant gradients, at fixed parameters, as float32."""
    opt = _optimizer(name)
    params = jnp.ones(3, dtype)
    grads = jnp.array([0.5, 1.0, 2.0], dtype)

    def body(state, _):
        updates, state = opt.update(grads, state, params, grad_fn=lambda p: grads)
        return state, updates

    _, updates = jax.lax.scan(body, opt.init(params), length=steps)
    return updates[-1].astype(jnp.float32)


@pytest.mark.parametrize("name", _NAMES)
def test_a_long_bfloat16_run_follows_float32(name):
    # A bfloat16 accumulator stops growing: Adagrad's Σg² at 256 for g = 1 (one part in 2^8).
    bf16, f32 = jax.jit(
        lambda: (_last_update(name, jnp.bfloat16), _last_update(name, jnp.float32))
    )()
    np.testing.assert_allclose(bf16, f32, rtol=1e-2)
