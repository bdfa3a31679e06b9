"""Properties every jaxcl optimizer shares, checked over one table of configurations.

Each optimizer is called exactly as the engine calls it:
``opt.update(grads, state, params, grad_fn=grad_fn, mask=None)``.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcl import optim as jo

# Small hyperparameters that exercise each mode; registry entries use their required ones.
_REGISTRY_HPARAMS = {
    "sgd": {"learning_rate": 0.1},
    "momentum": {"learning_rate": 0.1, "momentum": 0.9},
    "adam": {"learning_rate": 0.01},
    "adam_nobc": {"learning_rate": 0.01, "b1": 0.98, "b2": 0.9995},
    "rmsprop": {"learning_rate": 0.01, "decay": 0.99},
    "adagrad": {"learning_rate": 0.01, "initial_accumulator_value": 1e-6},
    "classp": {"learning_rate": 0.1, "threshold": 0.01},
    "masked_adam": {"learning_rate": 0.01},
    "sam": {"learning_rate": 0.1, "rho": 0.05},
    "gnp": {"learning_rate": 0.1, "r": 0.1, "alpha": 0.8},
}

_OPTIMIZERS_UNDER_TEST = (
    ("scale_by_classp", lambda: jo.scale_by_classp(0.01, 2.0)),
    ("classp_code", lambda: jo.classp(0.1, 0.5, mode="code")),
    (
        "classp_paper_previous_sum",
        lambda: jo.classp(0.1, 0.01, 2.0, include_current=False, initial_accumulator_value=0.1),
    ),
    ("classp_accumulate_schedule", lambda: jo.classp(0.1, 0.0, accumulate_only=lambda c: c < 1)),
    ("scale_by_masked_adam", lambda: jo.scale_by_masked_adam()),
    ("masked_adam", lambda: jo.masked_adam(0.01)),
    (
        "masked_adam_nobc_dense",
        lambda: jo.masked_adam(0.01, bias_correction=False, mask_by_gradient=False),
    ),
    ("sam", lambda: jo.sam(optax.sgd(0.1), 0.05)),
    ("gnp", lambda: jo.gnp(jo.masked_adam(0.01), 0.1, 0.8)),
    ("gnp_raw_first", lambda: jo.gnp(optax.sgd(0.1, 0.9), 0.1, 0.5, normalize_first=False)),
    ("clip_updates", lambda: jo.clip_updates(0.01)),
    (
        "chain_clip_classp_masked_adam",
        lambda: optax.chain(
            optax.clip_by_global_norm(1.0), jo.scale_by_classp(0.0), jo.masked_adam(0.01)
        ),
    ),
    *(
        (f"registry_{name}", lambda name=name, hp=hp: jo.get_optimizer(name, **hp))
        for name, hp in _REGISTRY_HPARAMS.items()
    ),
)
_NAMES = [name for name, _ in _OPTIMIZERS_UNDER_TEST]
_FACTORIES = dict(_OPTIMIZERS_UNDER_TEST)


def test_table_covers_every_registered_optimizer():
    assert {f"registry_{n}" for n in jo.OPTIMIZERS} <= set(_NAMES)


def _params(dtype=jnp.float32, key=None):
    if key is None:
        w = jnp.array([[0.5, -1.0, 0.0], [2.0, 0.25, -0.5]])
    else:
        w = jax.random.normal(key, (2, 3))
    return {"w": w.astype(dtype), "b": jnp.array([0.1, -0.2], dtype)}


def _loss(params):
    # The last column of w gets no gradient: optimizers see exact zeros, as with silent units.
    x = jnp.array([1.0, -2.0, 0.0], params["w"].dtype)
    pred = params["w"] @ x + params["b"]
    return jnp.sum(jnp.square(pred - 1.0)) + 0.1 * jnp.sum(jnp.square(params["w"][:, :2]))


_grad_fn = jax.grad(_loss)


def _step(opt):
    def step(params, state):
        grads = _grad_fn(params)
        updates, state = opt.update(grads, state, params, grad_fn=_grad_fn, mask=None)
        return optax.apply_updates(params, updates), state, updates

    return step


def _assert_same_structure_and_dtypes(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert jnp.shape(x) == jnp.shape(y)
        assert jnp.asarray(x).dtype == jnp.asarray(y).dtype


@pytest.mark.parametrize("name", _NAMES)
def test_finite_state_and_update_shapes(name):
    opt = _FACTORIES[name]()
    params = _params()
    state = opt.init(params)
    step = jax.jit(_step(opt))
    for _ in range(3):
        params, state, updates = step(params, state)
        chex.assert_trees_all_equal_shapes(updates, params)
        chex.assert_tree_all_finite(updates)
        chex.assert_tree_all_finite(state)
        chex.assert_tree_all_finite(params)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("name", _NAMES)
def test_preserves_dtype(name, dtype):
    opt = _FACTORIES[name]()
    params = _params(dtype)
    state0 = opt.init(params)
    _, state, updates = jax.jit(_step(opt))(params, state0)
    chex.assert_trees_all_equal_dtypes(updates, params)
    _assert_same_structure_and_dtypes(state, state0)


@pytest.mark.parametrize("name", _NAMES)
def test_no_recompilation_on_second_call(name):
    chex.clear_trace_counter()  # chex counts traces per code object, shared by all cases
    opt = _FACTORIES[name]()
    step = jax.jit(chex.assert_max_traces(_step(opt), n=1))
    params = _params()
    state = opt.init(params)
    params, state, _ = step(params, state)
    params, state, _ = step(params, state)  # would raise on a second trace


@pytest.mark.parametrize("name", _NAMES)
def test_state_is_a_stable_scan_carry(name):
    opt = _FACTORIES[name]()
    step = _step(opt)
    params = _params()
    state = opt.init(params)

    def body(carry, _):
        p, s = carry
        p, s, _ = step(p, s)
        return (p, s), None

    (params_scan, state_scan), _ = jax.jit(lambda c: jax.lax.scan(body, c, length=3))(
        (params, state)
    )
    # lax.cond needs both branches to return identical structures and dtypes.
    skipped = jax.jit(lambda p, s, pred: jax.lax.cond(pred, lambda: step(p, s)[1], lambda: s))(
        params, state, jnp.array(True)
    )
    _assert_same_structure_and_dtypes(skipped, state)

    p, s = params, state
    for _ in range(3):
        p, s, _ = jax.jit(step)(p, s)
    chex.assert_trees_all_close(params_scan, p, rtol=1e-5, atol=1e-6)
    _assert_same_structure_and_dtypes(state_scan, s)


@pytest.mark.parametrize("name", _NAMES)
def test_vmap_over_seeds_matches_single_runs(name):
    opt = _FACTORIES[name]()
    step = _step(opt)

    def run(key):
        params = _params(key=key)
        state = opt.init(params)
        for _ in range(2):
            params, state, _ = step(params, state)
        return params

    keys = jax.random.split(jax.random.key(0), 3)
    batched = jax.jit(jax.vmap(run))(keys)
    single = jax.jit(run)(keys[1])
    np.testing.assert_allclose(batched["w"][1], single["w"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batched["b"][1], single["b"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "factory, args, hparams",
    [
        (jo.classp, (), {"learning_rate": 0.1, "threshold": 0.01, "power": 2.0}),
        (jo.masked_adam, (), {"learning_rate": 0.01, "b1": 0.8}),
        (jo.sam, (optax.sgd(0.1),), {"rho": 0.05}),
        (jo.gnp, (jo.masked_adam(0.01),), {"r": 0.1, "alpha": 0.8}),
        (jo.clip_updates, (), {"max_abs": 0.01}),
    ],
    ids=["classp", "masked_adam", "sam", "gnp", "clip_updates"],
)
def test_inject_hyperparams_wraps_every_factory(factory, args, hparams):
    injected = optax.inject_hyperparams(factory)(*args, **hparams)
    assert set(hparams) <= set(injected.init(_params()).hyperparams)
    step_injected, step_direct = jax.jit(_step(injected)), jax.jit(_step(factory(*args, **hparams)))
    p, s = _params(), injected.init(_params())
    q, t = _params(), factory(*args, **hparams).init(_params())
    for _ in range(3):
        p, s, _ = step_injected(p, s)
        q, t, _ = step_direct(q, t)
    # Traced hyperparameters round differently from constant-folded ones.
    chex.assert_trees_all_close(p, q, rtol=1e-5)
