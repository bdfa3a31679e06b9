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
    masks = [jnp.array([True, False]), jnp.array([True, True])]
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
        masks = [jax.tree.map(lambda x: jnp.ones(x.shape, bool), g) for g in grads]
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
    old = {
        "w": jax.random.bernoulli(jax.random.key(0), 0.5, shape),
        "b": jnp.array([True, False, False]),
    }
    new = {
        "w": jax.random.bernoulli(jax.random.key(1), 0.5, shape),
        "b": jnp.array([True, True, False]),
    }
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
    old, new = jnp.array([False, True, False, True]), jnp.array([True, True, False, False])
    out = jo.became_active({"a": old}, {"a": new})
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


# --- masks with None leaves, and mask validation ------------------------------------------

_PARAMS = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
_GRADS = {"w": jnp.full((2, 3), 0.4), "b": jnp.full(3, 0.4)}


def _trained_state(mask):
    opt = jo.masked_adam(0.1)
    state = opt.init(_PARAMS)
    for _ in range(2):
        _, state = opt.update(_GRADS, state, _PARAMS, mask=mask)
    return state


def test_reset_moments_with_none_leaves_resets_the_masked_leaves():
    # masked Adam's own convention: the bias is unmasked (None). On main this reset was a
    # silent no-op (mu = 0.0768, count = 2 were left in place).
    # Trained with every weight active, then pruned to `old` and regrown to `new`.
    new = {"w": jnp.ones((2, 3), bool), "b": None}
    old = {"w": jnp.array([[True, False, True], [False, False, True]]), "b": None}
    state = _trained_state(new)
    activated = jo.became_active(old, new)
    assert activated["b"] is None
    reset = jax.jit(jo.reset_moments)(state, activated)[0]
    where = np.asarray(activated["w"])
    for buf, before in ((reset.mu, state[0].mu), (reset.count, state[0].count)):
        np.testing.assert_array_equal(np.asarray(buf["w"])[where], 0)
        np.testing.assert_array_equal(np.asarray(buf["w"])[~where], np.asarray(before["w"])[~where])
        np.testing.assert_array_equal(buf["b"], before["b"])  # None: nothing reset
    np.testing.assert_array_equal(state[0].count["w"], 2)  # all trained before the reset
    np.testing.assert_array_equal(reset.count["b"], [2, 2, 2])
    assert float(reset.mu["b"][0]) > 0


@pytest.mark.parametrize(
    "newly_active, error, match",
    [
        (
            {"w": jnp.ones(3, bool), "b": None},
            ValueError,
            r"newly_active\['w'\] must be of the parameter's shape \(2, 3\) .*, got \(3,\)",
        ),
        ({"w": jnp.ones((3, 2), bool), "b": None}, ValueError, r"shape \(2, 3\) .*, got \(3, 2\)"),
        (
            {"w": jnp.ones((2, 3), bool)},
            ValueError,
            "newly_active must be of the structure of a per-parameter buffer",
        ),
        ({"w": jnp.ones((2, 3)), "b": None}, TypeError, r"newly_active\['w'\] must be a boolean"),
    ],
)
def test_reset_moments_refuses_a_mask_that_matches_no_buffer(newly_active, error, match):
    state = _trained_state(None)
    with pytest.raises(error, match=match):
        jo.reset_moments(state, newly_active)


def test_reset_moments_refuses_fields_that_name_no_buffer():
    with pytest.raises(ValueError, match=r"fields must be .*'count', 'mu', 'nu', got \('trace',\)"):
        jo.reset_moments(_trained_state(None), jax.tree.map(jnp.isnan, _PARAMS), fields=("trace",))


def test_became_active_checks_its_masks():
    ok = {"w": jnp.ones((2, 3), bool), "b": None}
    with pytest.raises(ValueError, match=r"None only in new_mask\['b'\]"):
        jo.became_active({**ok, "b": jnp.ones(3, bool)}, ok)
    with pytest.raises(ValueError, match=r"old_mask\['w'\] must be of .* shape \(2, 3\)"):
        jo.became_active({**ok, "w": jnp.ones(3, bool)}, ok)
    with pytest.raises(
        TypeError, match=r"new_mask\['w'\] must be a boolean array, got dtype int32"
    ):
        jo.became_active(ok, {**ok, "w": jnp.ones((2, 3), jnp.int32)})
    with pytest.raises(ValueError, match=r"old_mask must have the parameters' structure"):
        jo.became_active({"w": ok["w"]}, ok)


@pytest.mark.parametrize(
    "mask, error, match",
    [
        # A (3,) mask for a (2, 3) parameter was broadcast silently on main.
        ({"w": jnp.ones(3, bool), "b": None}, ValueError, r"mask\['w'\] must be .*, got \(3,\)"),
        ({"w": jnp.ones((2, 3)), "b": None}, TypeError, r"mask\['w'\] must be a boolean array"),
        ({"w": jnp.ones((2, 3), bool)}, ValueError, r"missing leaves \[\"\['b'\]\"\]"),
        (
            {"w": jnp.ones((2, 3), bool), "b": None, "c": None},
            ValueError,
            r"unexpected leaves \[\"\['c'\]\"\]",
        ),
    ],
)
def test_update_refuses_a_bad_mask_at_trace_time(mask, error, match):
    opt = jo.masked_adam(0.1)
    state = opt.init(_PARAMS)
    with pytest.raises(error, match=match):
        jax.jit(lambda m: opt.update(_GRADS, state, _PARAMS, mask=m))(mask)


def test_traced_masks_under_vmap():
    # Masks are checked by shape and dtype only, so a batch of traced masks works.
    opt = jo.scale_by_masked_adam()
    masks = jax.random.bernoulli(jax.random.key(0), 0.5, (4, 3))
    grads = jnp.ones((4, 3))

    def one(g, m):
        return opt.update(g, opt.init(g), mask=m)[1].count

    counts = jax.jit(jax.vmap(one))(grads, masks)
    np.testing.assert_array_equal(counts, masks.astype(jnp.int32))


# --- inside optax.multi_transform and optax.masked ----------------------------------------


def _wrapped(kind):
    if kind == "multi_transform":
        return optax.multi_transform(
            {"adam": jo.masked_adam(0.1), "sgd": optax.sgd(0.1)}, {"w": "adam", "b": "sgd"}
        )
    if kind == "partition_compatible":
        return optax.partition(
            {"adam": jo.masked_adam(0.1), "sgd": optax.sgd(0.1)},
            {"w": "adam", "b": "sgd"},
            mask_compatible_extra_args=True,
        )
    return optax.masked(jo.masked_adam(0.1), {"w": True, "b": False})


@pytest.mark.parametrize("bias_mask", [None, jnp.array([True, False, True])])
@pytest.mark.parametrize("kind", ["multi_transform", "partition_compatible", "masked"])
def test_inner_transform_of_multi_transform_and_masked(kind, bias_mask):
    # The mask covers all the parameters; the wrapper hides "b" from masked Adam, so only
    # mask["w"] is used, exactly as masked Adam on "w" alone.
    keys = jax.random.split(jax.random.key(2), 3)
    grads = [jax.tree.map(lambda p, k=k: jax.random.normal(k, p.shape), _PARAMS) for k in keys]
    masks = [
        {"w": jax.random.bernoulli(jax.random.fold_in(k, 1), 0.5, (2, 3)), "b": bias_mask}
        for k in keys
    ]
    opt, ref = _wrapped(kind), jo.masked_adam(0.1)
    state, ref_state = opt.init(_PARAMS), ref.init({"w": _PARAMS["w"]})
    update = jax.jit(opt.update)
    for g, m in zip(grads, masks, strict=True):
        u, state = update(g, state, _PARAMS, mask=m)
        u_ref, ref_state = ref.update({"w": g["w"]}, ref_state, mask={"w": m["w"]})
        np.testing.assert_allclose(u["w"], u_ref["w"], rtol=1e-6)
        expected_b = g["b"] if kind == "masked" else -0.1 * g["b"]
        np.testing.assert_allclose(u["b"], expected_b, rtol=1e-6)
    # reset_moments finds masked Adam's buffers inside the wrapper's state.
    reset = jo.reset_moments(state, {"w": jnp.ones((2, 3), bool), "b": None})
    counts = [x for x in jax.tree.leaves(reset) if x.dtype == jnp.int32 and x.shape == (2, 3)]
    assert len(counts) == 1
    np.testing.assert_array_equal(counts[0], 0)


def test_mask_of_the_wrong_structure_inside_multi_transform_is_named():
    opt = _wrapped("multi_transform")
    with pytest.raises(ValueError, match=r"mask must have the parameters' structure"):
        opt.update(_GRADS, opt.init(_PARAMS), _PARAMS, mask={"v": jnp.ones((2, 3), bool)})


# --- weight decay chained before masked Adam ----------------------------------------------


def test_weight_decay_before_masked_adam_activates_zero_gradients_unless_masked():
    # As documented: add_decayed_weights makes g + wd·w non-zero, so a silent entry (zero
    # loss gradient) is active and moves; passing the loss gradient's activity keeps it
    # frozen (no Adam step, no decay).
    opt = optax.chain(optax.add_decayed_weights(0.1), jo.masked_adam(1.0))
    params, grads = jnp.array([1.0, 1.0]), jnp.array([1.0, 0.0])
    u, state = opt.update(grads, opt.init(params), params)
    np.testing.assert_allclose(u, [-1.0, -1.0], rtol=1e-5)
    np.testing.assert_array_equal(state[1][0].count, [1, 1])
    u, state = opt.update(grads, opt.init(params), params, mask=grads != 0)
    np.testing.assert_allclose(u, [-1.0, 0.0], rtol=1e-5)
    np.testing.assert_array_equal(state[1][0].count, [1, 0])


# --- low-precision parameters -------------------------------------------------------------


def _scan_updates(opt, grads):
    def step(state, g):
        u, state = opt.update(g, state, mask=g != 0)
        return state, u

    return jax.jit(lambda gs: jax.lax.scan(step, opt.init(gs[0]), gs))(grads)


def test_bf16_long_run_keeps_float32_moments_and_matches_float32():
    # 3000 steps of positive-mean gradients that are exact in bfloat16: scale 1 for 500
    # steps, then 0.01, with random silences. The second moment must then decay by b2 =
    # 0.999 per active step, which a bfloat16 nu cannot do (0.999·v rounds back to v).
    key_g, key_m = jax.random.split(jax.random.key(4))
    scale = jnp.where(jnp.arange(3000) < 500, 1.0, 0.01)[:, None]
    grads = (1 + 0.5 * jax.random.normal(key_g, (3000, 4))) * scale
    grads = jnp.where(jax.random.bernoulli(key_m, 0.8, (3000, 4)), grads, 0.0)
    grads = grads.astype(jnp.bfloat16)

    opt = jo.scale_by_masked_adam()
    state32, u32 = _scan_updates(opt, grads.astype(jnp.float32))
    state16, u16 = _scan_updates(opt, grads)
    assert u16.dtype == jnp.bfloat16 and state16.mu.dtype == state16.nu.dtype == jnp.float32
    # The same float32 arithmetic (up to XLA's fusion); only the output is rounded.
    chex.assert_trees_all_close(state16, state32, rtol=1e-5, atol=1e-10)
    np.testing.assert_allclose(np.asarray(u16, np.float32), u32, rtol=2**-8, atol=1e-10)

    # What main did (state in the parameters' dtype): late updates ~3x too small.
    _, u_low = _scan_updates(jo.scale_by_masked_adam(accumulator_dtype=jnp.bfloat16), grads)
    late32 = np.abs(np.asarray(u32[-500:])).mean()
    assert np.abs(np.asarray(u_low[-500:], np.float32)).mean() < late32 / 2


def test_accumulator_dtype_is_validated():
    with pytest.raises(ValueError, match="accumulator_dtype must be None or a floating dtype"):
        jo.masked_adam(0.1, accumulator_dtype=jnp.int32)
