"""get_optimizer: names, hyperparameter errors, clipping, and the engine's extra arguments."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcl import optim as jo

_PARAMS = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array([0.3])}


def _grad_fn(params):
    return jax.grad(lambda p: jnp.sum(p["w"] ** 2) + jnp.sum((p["b"] - 1.0) ** 2))(params)


def _updates(opt, steps=3, params=_PARAMS, grads=None):
    state = opt.init(params)
    for _ in range(steps):
        g = _grad_fn(params) if grads is None else grads
        u, state = opt.update(g, state, params, grad_fn=_grad_fn, mask=None)
    return u


@pytest.mark.parametrize(
    "name, hparams, reference",
    [
        ("sgd", {"learning_rate": 0.1}, optax.sgd(0.1)),
        ("momentum", {"learning_rate": 1e-5, "momentum": 0.998}, optax.sgd(1e-5, 0.998)),
        (
            "adam",
            {"learning_rate": 1e-5, "b1": 0.98, "b2": 0.9995},
            optax.adam(1e-5, b1=0.98, b2=0.9995),
        ),
        ("rmsprop", {"learning_rate": 5.5e-6, "decay": 0.9993}, optax.rmsprop(5.5e-6, 0.9993)),
        (
            "adagrad",
            {"learning_rate": 2e-4, "initial_accumulator_value": 1e-6},
            optax.adagrad(2e-4, initial_accumulator_value=1e-6),
        ),
        ("classp", {"learning_rate": 0.2, "threshold": 0.5}, jo.classp(0.2, 0.5)),
        ("masked_adam", {"learning_rate": 1e-3}, jo.masked_adam(1e-3)),
        ("sam", {"learning_rate": 0.1, "rho": 0.05}, jo.sam(optax.sgd(0.1), 0.05)),
        ("gnp", {"learning_rate": 0.1, "r": 0.1, "alpha": 0.8}, jo.gnp(optax.sgd(0.1), 0.1, 0.8)),
    ],
)
def test_matches_the_direct_construction(name, hparams, reference):
    chex.assert_trees_all_close(
        _updates(jo.get_optimizer(name, **hparams)),
        _updates(optax.with_extra_args_support(reference)),
        rtol=1e-6,
    )


def test_adam_nobc_is_dense_adam_without_bias_correction():
    # A zero gradient still decays the moments (dense), unlike "masked_adam".
    b1, b2, eps = 0.9, 0.99, 1e-8
    opt = jo.get_optimizer("adam_nobc", learning_rate=1.0, b1=b1, b2=b2, eps=eps)
    g = {"w": jnp.array([1.0, 0.0, 0.0]), "b": jnp.array([0.0])}
    state = opt.init(_PARAMS)
    u1, state = opt.update(g, state, _PARAMS, mask=None)
    zeros = jax.tree.map(jnp.zeros_like, g)
    u2, state = opt.update(zeros, state, _PARAMS, mask=None)
    m1, v1 = (1 - b1) * 1.0, (1 - b2) * 1.0
    np.testing.assert_allclose(u1["w"][0], -m1 / (np.sqrt(v1) + eps), rtol=1e-5)
    np.testing.assert_allclose(u2["w"][0], -b1 * m1 / (np.sqrt(b2 * v1) + eps), rtol=1e-5)
    masked = jo.get_optimizer("masked_adam", learning_rate=1.0)
    s = masked.init(_PARAMS)
    _, s = masked.update(g, s, _PARAMS)
    u2_masked, _ = masked.update(zeros, s, _PARAMS)
    assert u2_masked["w"][0] == 0.0


def test_clipping_keywords():
    big = {"w": jnp.array([300.0, -400.0, 0.0]), "b": jnp.array([0.0])}  # norm 500
    u = _updates(jo.get_optimizer("sgd", learning_rate=1.0, clip_global_norm=5.0), 1, grads=big)
    np.testing.assert_allclose(u["w"], [-3.0, 4.0, 0.0], rtol=1e-6)
    u = _updates(jo.get_optimizer("sgd", learning_rate=1.0, clip_updates=0.5), 1, grads=big)
    np.testing.assert_allclose(u["w"], [-0.5, 0.5, 0.0])


def test_global_norm_clip_reaches_the_gradient_sam_evaluates():
    # grad_fn returns a huge gradient; with the clip inside SAM's base the step is bounded.
    def huge(p):
        return jax.tree.map(lambda x: 1e6 * jnp.ones_like(x), p)

    opt = jo.get_optimizer("sam", learning_rate=1.0, rho=0.1, clip_global_norm=1.0)
    u, _ = opt.update(huge(_PARAMS), opt.init(_PARAMS), _PARAMS, grad_fn=huge, mask=None)
    assert float(optax.tree.norm(u)) == pytest.approx(1.0, rel=1e-5)


def test_unknown_name_lists_the_valid_ones():
    valid = "'adagrad', 'adam', 'adam_nobc', 'classp', 'gnp', 'masked_adam', 'momentum', "
    with pytest.raises(ValueError, match=re.escape(f"optimizer must be one of {valid}")):
        jo.get_optimizer("adamw", learning_rate=0.1)


def test_unknown_hyperparameter_is_named():
    accepted = "'b1', 'b2', 'eps', 'learning_rate', got 'beta1'"
    with pytest.raises(TypeError, match=re.escape(f"of optimizer 'adam' must be among {accepted}")):
        jo.get_optimizer("adam", learning_rate=0.1, beta1=0.9)
    with pytest.raises(TypeError, match=re.escape("'momentum', 'rho', got '_pre'")):
        jo.get_optimizer("sam", learning_rate=0.1, rho=0.1, _pre=())


def test_missing_hyperparameter_is_named():
    missing = "must include 'learning_rate', 'threshold', got 'learning_rate'"
    with pytest.raises(TypeError, match=re.escape(f"of optimizer 'classp' {missing}")):
        jo.get_optimizer("classp", learning_rate=0.1)


@pytest.mark.parametrize(
    "name, hparams, match",
    [
        ("sgd", {"learning_rate": -1.0}, "learning_rate must be >= 0"),
        ("momentum", {"learning_rate": 0.1, "momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ("adam", {"learning_rate": 0.1, "b2": 1.0}, r"b2 must be in \[0, 1\)"),
        ("rmsprop", {"learning_rate": 0.1, "decay": -0.5}, r"decay must be in \[0, 1\)"),
        ("adagrad", {"learning_rate": 0.1, "eps": -1.0}, "eps must be >= 0"),
        ("gnp", {"learning_rate": 0.1, "r": 0.1, "alpha": 2.0}, r"alpha must be in \[0, 1\]"),
        ("sgd", {"learning_rate": 0.1, "clip_global_norm": 0.0}, "clip_global_norm must be > 0"),
        ("sgd", {"learning_rate": 0.1, "clip_updates": -1.0}, "max_abs must be > 0"),
    ],
)
def test_bad_hyperparameters_are_refused(name, hparams, match):
    with pytest.raises(ValueError, match=match):
        jo.get_optimizer(name, **hparams)


# Every registry entry with its required hyperparameters (and a momentum for sam/gnp).
_EVERY_ENTRY = {
    "sgd": {"learning_rate": 0.1},
    "momentum": {"learning_rate": 0.1},
    "adam": {"learning_rate": 0.01, "b1": 0.8},
    "adam_nobc": {"learning_rate": 0.01},
    "rmsprop": {"learning_rate": 0.01},
    "adagrad": {"learning_rate": 0.1},
    "classp": {"learning_rate": 0.1, "threshold": 0.01},
    "masked_adam": {"learning_rate": 0.01},
    "sam": {"learning_rate": 0.1, "rho": 0.05, "momentum": 0.9},
    "gnp": {"learning_rate": 0.1, "r": 0.1, "alpha": 0.8},
}


def test_every_entry_is_listed():
    assert set(_EVERY_ENTRY) == set(jo.OPTIMIZERS)


@pytest.mark.parametrize("name", jo.OPTIMIZERS)
def test_inject_hyperparams_changes_the_learning_rate_mid_run(name):
    hparams = _EVERY_ENTRY[name]
    injected = optax.inject_hyperparams(jo.get_optimizer)(name, **hparams)
    plain = jo.get_optimizer(name, **hparams)
    state = injected.init(_PARAMS)
    assert set(state.hyperparams) == {k for k, x in hparams.items() if not isinstance(x, bool)}
    step = jax.jit(lambda s: injected.update(_grad_fn(_PARAMS), s, _PARAMS, grad_fn=_grad_fn))
    for _ in range(2):
        u, state = step(state)
    chex.assert_trees_all_close(u, _updates(plain, steps=2), rtol=1e-6)
    # Doubling the rate doubles the next step: every entry is linear in its learning rate.
    state.hyperparams["learning_rate"] = 2 * hparams["learning_rate"]
    u, state = step(state)
    reference = jax.tree.map(lambda x: 2 * x, _updates(plain, steps=3))
    chex.assert_trees_all_close(u, reference, rtol=1e-6)


def test_inject_hyperparams_with_bfloat16_params():
    # inject_hyperparams casts the hyperparameters to the params' dtype before building.
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _PARAMS)
    opt = optax.inject_hyperparams(jo.get_optimizer)("adam", learning_rate=0.1)
    u, _ = opt.update(params, opt.init(params), params)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(u))


def test_inject_hyperparams_takes_schedules_and_clipping():
    schedule = optax.linear_schedule(1.0, 0.0, transition_steps=4)
    opt = optax.inject_hyperparams(jo.get_optimizer)(
        "sgd", learning_rate=schedule, clip_global_norm=1.0
    )
    state = opt.init(_PARAMS)
    norm = float(optax.tree.norm(_grad_fn(_PARAMS)))
    for lr in (1.0, 0.75, 0.5):
        u, state = opt.update(_grad_fn(_PARAMS), state, _PARAMS)
        assert float(optax.tree.norm(u)) == pytest.approx(lr * min(1.0, norm), rel=1e-6)
    assert float(state.hyperparams["clip_global_norm"]) == 1.0


@pytest.mark.parametrize(
    "value, error, match",
    [
        (float("inf"), ValueError, "learning_rate must be >= 0 and finite, got inf"),
        (float("nan"), ValueError, "learning_rate must be >= 0, got nan"),
        ("0.1", TypeError, "learning_rate must be a real number >= 0, got '0.1'"),
        (True, TypeError, "learning_rate must be a real number >= 0, got True"),
        (jnp.array([0.1, -0.2]), ValueError, r"learning_rate must be >= 0, got Array\(\[ 0.1"),
        (np.array([0.1, np.inf]), ValueError, r"learning_rate must be >= 0 and finite, got array"),
    ],
)
@pytest.mark.parametrize("name", jo.OPTIMIZERS)
def test_bad_learning_rates_are_refused(name, value, error, match):
    hparams = {**_EVERY_ENTRY[name], "learning_rate": value}
    with pytest.raises(error, match=match):
        jo.get_optimizer(name, **hparams)
