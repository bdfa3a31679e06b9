"""Masked Adam: hand-computed steps, equivalence with optax.adam, moment reset."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcl import optim as jo

# b1 = 0.5, b2 = 0.75, eps = 0 keep the hand computations exact.
_B1, _B2 = 0.5, 0.75


def _run(opt, grads_seq, params, masks=None):
    state = opt.init(params)
    out = []
    for i, g in enumerate(grads_seq):
        mask = None if masks is None else masks[i]
        u, state = opt.update(g, state, params, mask=mask)
        out.append(u)
    return out, state


def test_inactive_entries_freeze_and_count_their_own_steps():
    # Step 1, g = [2, 0]: entry 0 has n=1, m=1, v=1, m̂=2, v̂=4 -> u=1; entry 1 is silent.
    # Step 2, g = [0, 4]: entry 0 untouched; entry 1 has n=1, m=2, v=4, m̂=4, v̂=16 -> u=1.
    # Step 3, g = [1, 4]: entry 0: n=2, m=1, v=1, m̂=4/3, v̂=16/7 -> u=sqrt(7)/3;
    #                     entry 1: n=2, m=3, v=7, m̂=4, v̂=16 -> u=1.
    opt = jo.scale_by_masked_adam(_B1, _B2, 0.0)
    grads = [jnp.array([2.0, 0.0]), jnp.array([0.0, 4.0]), jnp.array([1.0, 4.0])]
    (u1, u2, u3), state = _run(opt, grads, jnp.zeros(2))
    np.testing.assert_allclose(u1, [1.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(u2, [0.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(u3, [np.sqrt(7) / 3, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(state.count, [2, 2])
    np.testing.assert_allclose(state.mu, [1.0, 3.0], rtol=1e-6)
    np.testing.assert_allclose(state.nu, [1.0, 7.0], rtol=1e-6)


def test_without_bias_correction():
    opt = jo.scale_by_masked_adam(_B1, _B2, 0.0, bias_correction=False)
    grads = [jnp.array([2.0, 0.0]), jnp.array([0.0, 4.0]), jnp.array([1.0, 4.0])]
    (u1, u2, u3), _ = _run(opt, grads, jnp.zeros(2))
    np.testing.assert_allclose(u1, [1.0, 0.0], rtol=1e-6)  # m / sqrt(v) = 1 / 1
    np.testing.assert_allclose(u2, [0.0, 1.0], rtol=1e-6)  # 2 / 2
    np.testing.assert_allclose(u3, [1.0, 3 / np.sqrt(7)], rtol=1e-6)


def test_explicit_mask_overrides_the_gradient():
    # Step 1: entry 1 has a gradient but is masked out. Step 2: entry 0 is active with a
    # zero gradient, so its moments decay (m = .25, v = .1875) and its count advances.
    opt = jo.scale_by_masked_adam(_B1, _B2, 0.0)
    grads = [jnp.array([1.0, 1.0]), jnp.array([0.0, 1.0])]
    masks = [jnp.array([True, False]), jnp.array([1.0, 1.0])]
    (u1, u2), state = _run(opt, grads, jnp.zeros(2), masks)
    np.testing.assert_allclose(u1, [1.0, 0.0], rtol=1e-6)
    np.testing.assert_array_equal(state.count, [2, 1])
    np.testing.assert_allclose(state.mu, [0.25, 0.5])
    np.testing.assert_allclose(state.nu, [0.1875, 0.25])
    np.testing.assert_allclose(u2, [(0.25 / 0.75) / np.sqrt(0.1875 / 0.4375), 1.0], rtol=1e-6)


def test_none_leaf_in_mask_falls_back_to_gradient_activity():
    params = {"w": jnp.zeros(2), "b": jnp.zeros(2)}
    g = {"w": jnp.array([1.0, 1.0]), "b": jnp.array([1.0, 0.0])}
    mask = {"w": jnp.array([True, False]), "b": None}
    (_,), state = _run(jo.scale_by_masked_adam(), [g], params, [mask])
    np.testing.assert_array_equal(state.count["w"], [1, 0])
    np.testing.assert_array_equal(state.count["b"], [1, 0])


def test_mask_by_gradient_false_is_dense():
    opt = jo.scale_by_masked_adam(_B1, _B2, 0.0, mask_by_gradient=False)
    (_, _), state = _run(opt, [jnp.array([2.0]), jnp.array([0.0])], jnp.zeros(1))
    np.testing.assert_array_equal(state.count, [2])
    np.testing.assert_allclose(state.mu, [0.5])  # decayed by the zero gradient


@pytest.mark.parametrize("b1, b2", [(0.9, 0.999), (0.98, 0.9995)])
@pytest.mark.parametrize("how", ["ones_mask", "dense", "nonzero_gradients"])
def test_all_active_equals_optax_adam(b1, b2, how):
    keys = jax.random.split(jax.random.key(1), 8)
    params = {"w": jnp.zeros((3, 4)), "b": jnp.zeros(4)}
    grads = [
        {"w": jax.random.normal(k, (3, 4)), "b": jax.random.normal(jax.random.fold_in(k, 1), (4,))}
        for k in keys
    ]
    masks = None
    if how == "ones_mask":
        masks = [jax.tree.map(jnp.ones_like, g) for g in grads]
    opt = jo.masked_adam(1e-3, b1, b2, mask_by_gradient=how != "dense")
    ours, _ = _run(opt, grads, params, masks)
    ref_opt = optax.adam(1e-3, b1, b2)
    state = ref_opt.init(params)
    for g, u in zip(grads, ours, strict=True):
        ref, state = ref_opt.update(g, state, params)
        # optax's float32 1 − b2ⁿ (a pow) loses up to ~1e-5 relative to cancellation; ours
        # (−expm1(n·log b)) does not, so the two differ by that much.
        chex.assert_trees_all_close(u, ref, rtol=2e-5, atol=1e-10)


@pytest.mark.parametrize("b", [0.9, 0.999, 0.9995])
def test_bias_correction_is_as_accurate_as_optax(b):
    # With b1 = b2 and a constant gradient g, m̂ = g and v̂ = g² exactly, so u = 1 up to
    # float32 rounding of the moment recursions and of the corrections 1 − bⁿ (3000 steps).
    def errors(opt):
        def step(state, _):
            u, state = opt.update(jnp.float32(0.5), state)
            return state, u

        _, us = jax.lax.scan(step, opt.init(jnp.zeros(())), length=3000)
        return np.abs(np.asarray(us) - 1.0)

    ours, ref = errors(jo.scale_by_masked_adam(b, b, 0.0)), errors(optax.scale_by_adam(b, b, 0.0))
    assert ours.max() <= ref.max() and ours.max() < 3e-5


@pytest.mark.parametrize("silence", [1, 10, 100])
def test_reactivation_after_silence_is_not_stale(silence):
    def reactivation_update(opt):
        grads = jnp.concatenate([jnp.full(3, 0.2), jnp.zeros(silence), jnp.array([0.2])])
        state = opt.init(jnp.zeros(()))
        for g in grads:
            u, state = opt.update(g, state)
        return float(u)

    no_silence = reactivation_update(jo.scale_by_masked_adam())
    # Three equal gradients, then the same gradient again: the update is exactly 1 (m̂ = g,
    # v̂ = g²), whatever the silence in between.
    grads = jnp.full(4, 0.2)
    state = jo.scale_by_masked_adam().init(jnp.zeros(()))
    for g in grads:
        u, state = jo.scale_by_masked_adam().update(g, state)
    np.testing.assert_allclose(float(u), no_silence, rtol=1e-6)
    np.testing.assert_allclose(no_silence, 1.0, rtol=2e-5)  # float32 rounding of 1 - b**n
    # Dense Adam's update after the same silence is not 1.
    assert abs(reactivation_update(optax.scale_by_adam()) - 1.0) > 1e-3


# --- reset of newly active entries --------------------------------------------------------


_SHAPES = [(5,), (4, 5), (2, 9, 1), (2, 2, 4, 4)]
_RESET_CASES = {
    "masked_adam": (lambda: jo.masked_adam(0.1), ("mu", "nu", "count")),
    "optax_adam": (lambda: optax.adam(0.1), ("mu", "nu")),
    "sgd_momentum": (lambda: optax.sgd(0.1, momentum=0.9), ("trace",)),
    "injected_masked_adam": (
        lambda: optax.chain(optax.inject_hyperparams(jo.masked_adam)(learning_rate=0.1)),
        ("mu", "nu", "count"),
    ),
    "classp": (lambda: jo.classp(0.1, 0.0), ("grad_sum",)),
}


@pytest.mark.parametrize("shape", _SHAPES)
@pytest.mark.parametrize("case", sorted(_RESET_CASES))
def test_reset_moments_zeroes_exactly_the_newly_active_entries(case, shape):
    factory, fields = _RESET_CASES[case]
    params = {"w": jnp.zeros(shape), "b": jnp.zeros(3)}
    state = jax.tree.map(jnp.ones_like, factory().init(params))  # every buffer = 1
    old = {"w": jax.random.bernoulli(jax.random.key(0), 0.5, shape), "b": jnp.array([1, 0, 0])}
    new = {"w": jax.random.bernoulli(jax.random.key(1), 0.5, shape), "b": jnp.array([1, 1, 0])}
    activated = jo.became_active(old, new)
    assert bool(jnp.any(activated["w"])) and bool(jnp.any(~activated["w"]))

    reset = jax.jit(jo.reset_moments)(state, activated)
    chex.assert_trees_all_equal_structs(reset, state)
    chex.assert_trees_all_equal_dtypes(reset, state)
    for field in fields:
        # Per-parameter buffers are the dict-valued fields (a scalar `count` is not one).
        buffer = optax.tree.get(reset, field, filtering=lambda _, v: isinstance(v, dict))
        for name in ("w", "b"):
            values, where = np.asarray(buffer[name]), np.asarray(activated[name])
            np.testing.assert_array_equal(values[where], 0)
            np.testing.assert_array_equal(values[~where], 1)
    # Scalars (optax's global count, injected hyperparameters) are not per-entry buffers.
    for leaf in jax.tree.leaves(reset):
        if jnp.ndim(leaf) == 0:
            assert leaf == 1


def test_reset_moments_fields_filter():
    params = {"w": jnp.zeros(3)}
    state = jax.tree.map(jnp.ones_like, jo.masked_adam(0.1).init(params))
    reset = jo.reset_moments(state, {"w": jnp.array([True, False, True])}, fields=("mu",))
    np.testing.assert_array_equal(reset[0].mu["w"], [0, 1, 0])
    np.testing.assert_array_equal(reset[0].nu["w"], [1, 1, 1])
    np.testing.assert_array_equal(reset[0].count["w"], [1, 1, 1])


def test_reset_restarts_bias_correction_of_regrown_entries():
    # After a reset, a regrown entry's first step is a fresh Adam step: update = sign(g).
    opt = jo.masked_adam(1.0)
    state = opt.init(jnp.zeros(2))
    for g in (jnp.array([1.0, 3.0]), jnp.array([-2.0, 1.0])):
        _, state = opt.update(g, state)
    state = jo.reset_moments(state, jnp.array([False, True]), fields=("mu", "nu", "count"))
    u, _ = opt.update(jnp.array([1.0, -5.0]), state)
    np.testing.assert_allclose(u[1], 1.0, rtol=2e-5)


def test_became_active():
    out = jo.became_active({"a": jnp.array([0, 1, 0, 1])}, {"a": jnp.array([1.0, 1.0, 0.0, 0.0])})
    np.testing.assert_array_equal(out["a"], [True, False, False, False])


# --- hyperparameter validation ------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"b1": 1.0}, r"b1 must be in \[0, 1\), got 1.0"),
        ({"b1": -0.1}, r"b1 must be in \[0, 1\)"),
        ({"b2": 1.5}, r"b2 must be in \[0, 1\), got 1.5"),
        ({"eps": -1e-8}, "eps must be >= 0"),
    ],
)
def test_bad_hyperparameters_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jo.scale_by_masked_adam(**kwargs)
    with pytest.raises(ValueError, match=match):
        jo.masked_adam(1e-3, **kwargs)


def test_negative_learning_rate_is_refused():
    with pytest.raises(ValueError, match="learning_rate must be >= 0"):
        jo.masked_adam(-1e-3)
