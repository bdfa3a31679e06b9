"""SAM and GNP: hand-computed steps on a quadratic, α = 1 is SAM, zero gradients, scan."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcl import optim as jo

# L(w) = ½ (1·x² + 4·y²): ∇L = (x, 4y). Two leaves, so the norm must be global.
_PARAMS = {"x": jnp.array([1.0]), "y": jnp.array([1.0])}
_G1 = np.array([1.0, 4.0])
_NORM = np.sqrt(17.0)


def _loss(p):
    return 0.5 * (jnp.sum(p["x"] ** 2) + 4.0 * jnp.sum(p["y"] ** 2))


_grad_fn = jax.grad(_loss)


def _grad_at(point):  # ∇L at (x, y), by hand
    return np.array([point[0], 4.0 * point[1]])


def _one_update(opt, params=_PARAMS, grad_fn=_grad_fn, **extra):
    state = opt.init(params)
    updates, _ = opt.update(grad_fn(params), state, params, grad_fn=grad_fn, **extra)
    return np.array([updates["x"][0], updates["y"][0]])


def test_sam_step_by_hand():
    rho, lr = 0.1, 0.5
    g2 = _grad_at(np.ones(2) + rho * _G1 / _NORM)  # gradient at w + ρ g1/‖g1‖
    np.testing.assert_allclose(_one_update(jo.sam(optax.sgd(lr), rho)), -lr * g2, rtol=1e-6)


@pytest.mark.parametrize("normalize_first", [True, False])
def test_gnp_step_by_hand(normalize_first):
    r, alpha, lr = 0.1, 0.8, 0.5
    g2 = _grad_at(np.ones(2) + r * _G1 / _NORM)
    first = _G1 / _NORM if normalize_first else _G1
    expected = -lr * ((1 - alpha) * first + alpha * g2)
    opt = jo.gnp(optax.sgd(lr), r, alpha, normalize_first=normalize_first)
    np.testing.assert_allclose(_one_update(opt), expected, rtol=1e-6)


def test_gnp_with_zero_radius_is_plain_training():
    np.testing.assert_allclose(_one_update(jo.gnp(optax.sgd(0.5), 0.0, 0.8)), -0.5 * _G1)


def test_gnp_alpha_one_is_sam_over_a_scan():
    # Several steps with a stateful base: the whole trajectory must coincide.
    def run(opt):
        def body(carry, _):
            p, s = carry
            u, s = opt.update(_grad_fn(p), s, p, grad_fn=_grad_fn)
            return (optax.apply_updates(p, u), s), u

        (p, _), us = jax.lax.scan(body, (_PARAMS, opt.init(_PARAMS)), length=5)
        return p, us

    p_sam, u_sam = jax.jit(lambda: run(jo.sam(jo.masked_adam(0.05), 0.1)))()
    p_gnp, u_gnp = jax.jit(lambda: run(jo.gnp(jo.masked_adam(0.05), 0.1, 1.0)))()
    chex.assert_trees_all_close(u_sam, u_gnp, rtol=1e-6, atol=1e-9)
    chex.assert_trees_all_close(p_sam, p_gnp, rtol=1e-6)


@pytest.mark.parametrize(
    "opt",
    [
        jo.sam(optax.sgd(0.1), 0.05),
        jo.gnp(optax.sgd(0.1), 0.1, 0.8),
        jo.gnp(optax.sgd(0.1), 0.1, 0.8, normalize_first=False),
    ],
    ids=["sam", "gnp", "gnp_raw"],
)
def test_zero_gradient_gives_a_finite_zero_update(opt):
    zeros = jax.tree.map(jnp.zeros_like, _PARAMS)
    u = _one_update(opt, grad_fn=lambda p: jax.tree.map(jnp.zeros_like, p))
    np.testing.assert_array_equal(u, [0.0, 0.0])
    # And at a stationary point reached exactly (w = 0, so g1 = 0 and ε̂ = 0).
    u = _one_update(opt, params=zeros)
    np.testing.assert_array_equal(u, [0.0, 0.0])


def test_extra_arguments_reach_the_base_optimizer():
    opt = jo.sam(jo.masked_adam(1.0), 0.1)
    u = _one_update(opt, mask={"x": jnp.array([False]), "y": jnp.array([True])})
    assert u[0] == 0.0 and u[1] < 0.0


def test_sam_trains_inside_a_vmapped_scan_over_batches():
    # Least squares on 4 batches, 2 seeds: one update per batch, loss goes down.
    xs = jax.random.normal(jax.random.key(0), (4, 8, 3))
    ys = xs @ jnp.array([1.0, -2.0, 0.5])
    opt = jo.sam(optax.sgd(0.1), 0.05)

    def batch_loss(w, x, y):
        return jnp.mean(jnp.square(x @ w - y))

    def run(key):
        w = jax.random.normal(key, (3,))

        def body(carry, batch):
            w, s = carry
            x, y = batch

            def grad_fn(p):
                return jax.grad(batch_loss)(p, x, y)

            u, s = opt.update(grad_fn(w), s, w, grad_fn=grad_fn)
            return (optax.apply_updates(w, u), s), None

        for _ in range(5):
            (w, _), _ = jax.lax.scan(body, (w, opt.init(w)), (xs, ys))
        return batch_loss(jax.random.normal(key, (3,)), xs[0], ys[0]), batch_loss(w, xs[0], ys[0])

    before, after = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(1), 2))
    assert bool(jnp.all(after < 0.1 * before))


def test_update_needs_grad_fn_and_params():
    opt = jo.sam(optax.sgd(0.1), 0.05)
    state = opt.init(_PARAMS)
    with pytest.raises(ValueError, match="grad_fn"):
        opt.update(_grad_fn(_PARAMS), state, _PARAMS)
    with pytest.raises(ValueError, match=r"params must be passed to sam's update\(\)"):
        opt.update(_grad_fn(_PARAMS), state, grad_fn=_grad_fn)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: jo.sam(optax.sgd(0.1), -0.05), "rho must be >= 0, got -0.05"),
        (lambda: jo.gnp(optax.sgd(0.1), -0.1, 0.5), "r must be >= 0, got -0.1"),
        (lambda: jo.gnp(optax.sgd(0.1), 0.1, 1.5), r"alpha must be in \[0, 1\], got 1.5"),
        (lambda: jo.gnp(optax.sgd(0.1), 0.1, -0.2), r"alpha must be in \[0, 1\]"),
        (lambda: jo.gnp(optax.sgd(0.1), 0.1, float("nan")), r"alpha must be in \[0, 1\]"),
    ],
)
def test_bad_hyperparameters_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


_WD = 0.1


@pytest.mark.parametrize(
    "wrapper, descent_gradient",
    [
        (lambda base: jo.sam(base, 0.1), lambda g1, g2: g2),
        (lambda base: jo.gnp(base, 0.1, 0.8), lambda g1, g2: 0.2 * g1 / _NORM + 0.8 * g2),
    ],
    ids=["sam", "gnp"],
)
def test_weight_decay_chained_before_is_added_at_the_unperturbed_weights(wrapper, descent_gradient):
    # g = g2 + λw (Foret et al. eq. 1): the ascent direction is g1's, not (g1 + λw)'s.
    lr = 0.5
    g2 = _grad_at(np.ones(2) + 0.1 * _G1 / _NORM)
    expected = -lr * (descent_gradient(_G1, g2) + _WD * np.ones(2))
    chained = optax.chain(optax.add_decayed_weights(_WD), wrapper(optax.sgd(lr)))
    np.testing.assert_allclose(_one_update(chained), expected, rtol=1e-6)
    inside = wrapper(optax.chain(optax.add_decayed_weights(_WD), optax.sgd(lr)))
    np.testing.assert_allclose(_one_update(inside), expected, rtol=1e-6)


def test_a_clip_chained_before_sam_adds_its_change_to_the_gradient():
    # Documented: d = clip(g1) - g1 is added to g2 (put clipping inside base to clip g2).
    lr, rho = 0.5, 0.1
    g2 = _grad_at(np.ones(2) + rho * _G1 / _NORM)
    clipped = _G1 / _NORM
    opt = optax.chain(optax.clip_by_global_norm(1.0), jo.sam(optax.sgd(lr), rho))
    np.testing.assert_allclose(_one_update(opt), -lr * (g2 + clipped - _G1), rtol=1e-6)


def _masked_and_multi_transform(wrapped):
    labels = {"x": "a", "y": "b"}
    return [
        optax.masked(wrapped, {"x": True, "y": False}),
        optax.multi_transform({"a": wrapped, "b": optax.sgd(0.1)}, labels),
    ]


@pytest.mark.parametrize(
    "opt",
    [
        *_masked_and_multi_transform(jo.sam(optax.sgd(0.1), 0.05)),
        *_masked_and_multi_transform(jo.gnp(optax.sgd(0.1), 0.1, 0.8)),
    ],
    ids=["sam_masked", "sam_multi_transform", "gnp_masked", "gnp_multi_transform"],
)
def test_inside_masked_or_multi_transform_says_to_wrap_the_whole_transformation(opt):
    state = opt.init(_PARAMS)
    with pytest.raises(ValueError, match=r"cannot run inside optax.masked.*Wrap the whole"):
        opt.update(_grad_fn(_PARAMS), state, _PARAMS, grad_fn=_grad_fn)


@pytest.mark.parametrize("wrapper", [lambda b: jo.sam(b, 0.1), lambda b: jo.gnp(b, 0.1, 1.0)])
def test_wrapping_a_multi_transform_gives_each_group_the_sharpness_aware_gradient(wrapper):
    g2 = _grad_at(np.ones(2) + 0.1 * _G1 / _NORM)  # the whole tree is perturbed
    groups = optax.multi_transform({"a": optax.sgd(0.5), "b": optax.sgd(2.0)}, {"x": "a", "y": "b"})
    np.testing.assert_allclose(_one_update(wrapper(groups)), [-0.5, -2.0] * g2, rtol=1e-6)


def test_trainstate_apply_gradients_fails_pointing_to_the_recipe():
    from flax.training import train_state

    state = train_state.TrainState.create(
        apply_fn=None, params=_PARAMS, tx=jo.sam(optax.sgd(0.1), 0.05)
    )
    with pytest.raises(ValueError, match=r"TrainState\.apply_gradients cannot pass it"):
        state.apply_gradients(grads=_grad_fn(_PARAMS))


def test_nnx_optimizer_passes_grad_fn_over_the_param_state():
    from flax import nnx

    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    x, y = jnp.array([[1.0, 2.0], [-1.0, 0.5]]), jnp.array([[1.0], [0.0]])
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(params):
        return jnp.mean((nnx.merge(graphdef, params)(x) - y) ** 2)

    rho, lr = 0.05, 0.1
    grad_fn = jax.grad(loss)
    sam = jo.sam(optax.sgd(lr), rho)
    reference, _ = sam.update(grad_fn(params), sam.init(params), params, grad_fn=grad_fn)
    expected = optax.apply_updates(nnx.to_pure_dict(params), nnx.to_pure_dict(reference))
    optimizer = nnx.Optimizer(model, sam, wrt=nnx.Param)
    optimizer.update(model, grad_fn(params), grad_fn=grad_fn)
    chex.assert_trees_all_close(nnx.to_pure_dict(nnx.state(model, nnx.Param)), expected)
