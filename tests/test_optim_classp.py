"""CLASSP: hand-computed steps, equivalence with optax.adagrad, the accumulate-only phase."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcl import optim as jo


def _run(opt, grads_seq, params):
    state = opt.init(params)
    out = []
    for g in grads_seq:
        u, state = opt.update(g, state, params)
        out.append(u)
    return out, state


# --- paper mode, by hand ------------------------------------------------------------------


def test_paper_mode_gates_elementwise_and_includes_current_gradient():
    # p = 2, eps = 0, threshold 0.5. Step 1: g² = [9, .25, 16] -> gate [1, 0, 1], S = [9, 0, 16].
    # Step 2: g² = [16, 1, 0] -> gate [1, 1, 0], S = [25, 1, 16].
    opt = jo.scale_by_classp(0.5, 2.0, 0.0)
    (u1, u2), state = _run(
        opt, [jnp.array([3.0, 0.5, -4.0]), jnp.array([4.0, 1.0, 0.0])], jnp.zeros(3)
    )
    np.testing.assert_allclose(u1, [1.0, 0.0, -1.0])
    np.testing.assert_allclose(u2, [4 / 5, 1.0, 0.0])
    np.testing.assert_allclose(state.grad_sum, [25.0, 1.0, 16.0])
    assert state.count == 2


def test_paper_mode_previous_sum_is_the_papers_formula():
    # S_0 = 1: step 1 divides by sqrt(1) (not by the current g), then S = [10, 1, 17];
    # step 2 divides by sqrt(S_1) = [sqrt 10, 1, -].
    opt = jo.scale_by_classp(0.5, 2.0, 0.0, include_current=False, initial_accumulator_value=1.0)
    (u1, u2), state = _run(
        opt, [jnp.array([3.0, 0.5, -4.0]), jnp.array([4.0, 1.0, 0.0])], jnp.zeros(3)
    )
    np.testing.assert_allclose(u1, [3.0, 0.0, -4.0])
    np.testing.assert_allclose(u2, [4 / np.sqrt(10.0), 1.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(state.grad_sum, [26.0, 2.0, 17.0])


def test_paper_mode_power_one_with_eps():
    opt = jo.scale_by_classp(0.0, 1.0, 1e-5)
    (u,), state = _run(opt, [jnp.array([0.2, -0.1, 0.0])], jnp.zeros(3))
    np.testing.assert_allclose(u, [0.2 / 0.20001, -0.1 / 0.10001, 0.0], rtol=1e-6)
    np.testing.assert_allclose(state.grad_sum, [0.2, 0.1, 0.0], rtol=1e-6)


def test_zero_denominator_gives_zero_update_not_nan():
    opt = jo.scale_by_classp(0.0, 2.0, 0.0, include_current=False)
    (u,), _ = _run(opt, [jnp.array([1.0, 0.0])], jnp.zeros(2))
    np.testing.assert_array_equal(u, [0.0, 0.0])


def test_alias_applies_negative_learning_rate():
    (u,), _ = _run(jo.classp(0.1, 0.5, 2.0, 0.0), [jnp.array([3.0, 0.5, -4.0])], jnp.zeros(3))
    np.testing.assert_allclose(u, [-0.1, 0.0, 0.1])


# --- code mode, by hand -------------------------------------------------------------------


def test_code_mode_gate_is_per_tensor_and_sums_abs_gradient_whatever_power():
    # Tensor "a" has a non-zero entry: (True > 0.5) opens the whole tensor, including the
    # entry whose gradient is tiny. Tensor "b" is all zero: (False > 0.5) keeps it frozen.
    # The accumulator is Σ|g| although p = 2; the rescaling still takes the square root.
    params = {"a": jnp.zeros(2), "b": jnp.zeros(2)}
    g = {"a": jnp.array([0.3, 0.01]), "b": jnp.zeros(2)}
    opt = jo.scale_by_classp(0.5, 2.0, 1e-5, mode="code")
    (u,), state = _run(opt, [g], params)
    np.testing.assert_allclose(state.grad_sum["a"], [0.3, 0.01], rtol=1e-6)
    np.testing.assert_allclose(u["a"], [0.3 / np.sqrt(0.30001), 0.01 / np.sqrt(0.01001)], rtol=1e-5)
    np.testing.assert_array_equal(u["b"], [0.0, 0.0])
    np.testing.assert_array_equal(state.grad_sum["b"], [0.0, 0.0])


def test_code_mode_differs_from_paper_mode_below_threshold():
    g = jnp.array([0.3, 0.01])  # 0.01² < 0.5: paper mode skips it, code mode does not
    (u_code,), _ = _run(jo.scale_by_classp(0.5, mode="code"), [g], jnp.zeros(2))
    (u_paper,), _ = _run(jo.scale_by_classp(0.5, mode="paper"), [g], jnp.zeros(2))
    assert u_code[1] != 0 and u_paper[1] == 0 and u_paper[0] == 0  # 0.3² < 0.5 too


def test_code_mode_threshold_of_one_or_more_freezes_everything():
    (u,), state = _run(jo.scale_by_classp(1.0, mode="code"), [jnp.array([5.0, -2.0])], jnp.zeros(2))
    np.testing.assert_array_equal(u, [0.0, 0.0])
    np.testing.assert_array_equal(state.grad_sum, [0.0, 0.0])


# --- equivalence with optax.adagrad -------------------------------------------------------


@pytest.mark.parametrize(
    "initial, eps",
    [(0.1, 1e-7), (1e-6, 1e-7), (0.0, 1e-7)],  # optax default, Hard ASH, empty accumulator
)
def test_threshold_zero_power_two_paper_mode_is_adagrad(initial, eps):
    keys = jax.random.split(jax.random.key(3), 6)
    params = {"w": jnp.zeros((3, 4)), "b": jnp.zeros(4)}

    def sparse_grads(key):
        kw, kb, km = jax.random.split(key, 3)
        keep = jax.random.bernoulli(km, 0.6, (3, 4))
        return {"w": jax.random.normal(kw, (3, 4)) * keep, "b": jax.random.normal(kb, (4,))}

    grads = [sparse_grads(k) for k in keys]
    ours, _ = _run(jo.classp(0.01, 0.0, 2.0, eps, initial_accumulator_value=initial), grads, params)
    ref, _ = _run(optax.adagrad(0.01, initial_accumulator_value=initial, eps=eps), grads, params)
    for a, b in zip(ours, ref, strict=True):
        chex.assert_trees_all_close(a, b, rtol=1e-6, atol=1e-9)


# --- accumulate-only phase ----------------------------------------------------------------


def test_accumulate_only_is_sgd_while_the_sum_accumulates():
    opt = jo.classp(0.2, 0.5, mode="code", accumulate_only=True)
    (u,), state = _run(opt, [jnp.array([0.3, -0.1])], jnp.zeros(2))
    np.testing.assert_allclose(u, [-0.06, 0.02], rtol=1e-6)
    np.testing.assert_allclose(state[0].grad_sum, [0.3, 0.1], rtol=1e-6)


def test_accumulate_only_schedule_switches_phase_inside_one_scan():
    # Constant g = 1, p = 1, eps = 0: SGD steps while count < 2 (S = 1, 2), then g / S.
    opt = jo.scale_by_classp(0.0, 1.0, 0.0, mode="code", accumulate_only=lambda count: count < 2)

    def body(state, g):
        u, state = opt.update(g, state)
        return state, u

    state, us = jax.jit(lambda s: jax.lax.scan(body, s, jnp.ones((4, 1))))(opt.init(jnp.zeros(1)))
    np.testing.assert_allclose(us[:, 0], [1.0, 1.0, 1 / 3, 1 / 4], rtol=1e-6)
    np.testing.assert_allclose(state.grad_sum, [4.0])


def test_accumulate_only_as_traced_value():
    opt = jo.scale_by_classp(0.0, 1.0, 0.0, accumulate_only=jnp.array(True))
    (u,), _ = _run(opt, [jnp.array([2.0])], jnp.zeros(1))
    np.testing.assert_allclose(u, [2.0])

    @jax.jit
    def step(flag, state, g):
        return jo.scale_by_classp(0.0, 1.0, 0.0, accumulate_only=flag).update(g, state)

    state = opt.init(jnp.zeros(1))
    u, state = step(jnp.array(1.0), state, jnp.array([2.0]))
    np.testing.assert_allclose(u, [2.0])
    u, state = step(jnp.array(0.0), state, jnp.array([2.0]))
    np.testing.assert_allclose(u, [0.5])  # 2 / (2 + 2)


def test_phase_switch_through_inject_hyperparams_does_not_recompile():
    chex.clear_trace_counter()
    opt = optax.inject_hyperparams(jo.classp)(
        learning_rate=1.0, threshold=0.0, power=1.0, eps=0.0, mode="code", accumulate_only=1.0
    )

    def step(state, g):
        return opt.update(g, state, jnp.zeros(1))

    step = jax.jit(chex.assert_max_traces(step, n=1))
    state = opt.init(jnp.zeros(1))
    u, state = step(state, jnp.array([1.0]))
    np.testing.assert_allclose(u, [-1.0])  # plain SGD, S = 1
    state.hyperparams["accumulate_only"] = jnp.zeros_like(state.hyperparams["accumulate_only"])
    u, state = step(state, jnp.array([1.0]))
    np.testing.assert_allclose(u, [-0.5])  # rescaled by S = 2


def test_authors_vision_schedule():
    # Task 1 (2 steps here): SGD lr 0.2 while Σ|g| accumulates; task 2: lr / Σ|g|.
    opt = jo.classp(0.2, 0.5, 1.0, 1e-5, mode="code", accumulate_only=lambda c: c < 2)
    grads = [jnp.array([0.5]), jnp.array([0.5]), jnp.array([1.0])]
    (u1, u2, u3), _ = _run(opt, grads, jnp.zeros(1))
    np.testing.assert_allclose([u1[0], u2[0]], [-0.1, -0.1], rtol=1e-6)
    np.testing.assert_allclose(u3, [-0.2 * 1.0 / (2.0 + 1e-5)], rtol=1e-6)


# --- hyperparameter validation ------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"threshold": -0.1}, "threshold must be >= 0, got -0.1"),
        ({"threshold": float("nan")}, "threshold must be >= 0"),
        ({"threshold": 0.0, "power": 0.0}, "power must be > 0, got 0.0"),
        ({"threshold": 0.0, "power": -2.0}, "power must be > 0"),
        ({"threshold": 0.0, "eps": -1e-5}, "eps must be >= 0"),
        (
            {"threshold": 0.0, "initial_accumulator_value": -1.0},
            "initial_accumulator_value must be >= 0",
        ),
        ({"threshold": 0.0, "mode": "code_compat"}, "mode must be one of 'code', 'paper', got"),
        (
            {"threshold": 0.0, "mode": "code", "include_current": False},
            r"include_current must be True in mode='code' .*, got False",
        ),
    ],
)
def test_bad_hyperparameters_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jo.scale_by_classp(**kwargs)
    with pytest.raises(ValueError, match=match):
        jo.classp(0.1, **kwargs)


def test_negative_learning_rate_is_refused():
    with pytest.raises(ValueError, match=re.escape("learning_rate must be >= 0, got -0.1")):
        jo.classp(-0.1, 0.5)
    jo.classp(optax.constant_schedule(0.1), 0.5)  # schedules are not checked


# --- NaN gradients ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode, include_current", [("paper", True), ("paper", False), ("code", True)]
)
def test_nan_gradient_propagates(mode, include_current):
    # On main the gate (g² > threshold) was false for NaN, and a NaN denominator was
    # treated as zero: the update was 0 and the divergence went unseen.
    opt = jo.scale_by_classp(0.5, 2.0, 1e-5, mode=mode, include_current=include_current)
    grads = [jnp.array([jnp.nan, 3.0]), jnp.array([1.0, 3.0])]
    (u1, u2), state = _run(opt, grads, jnp.zeros(2))
    assert np.isnan(u1[0]) and np.isfinite(u1[1])
    assert np.isnan(u2[0]) and np.isnan(state.grad_sum[0])  # the accumulator keeps it
    assert np.isfinite(state.grad_sum[1])


def test_nan_gradient_propagates_through_the_alias():
    (u,), _ = _run(jo.classp(0.1, 0.0), [jnp.array([jnp.nan])], jnp.zeros(1))
    assert np.isnan(u[0])


# --- low-precision parameters -------------------------------------------------------------


def _scan_updates(opt, grads):
    def step(state, g):
        u, state = opt.update(g, state)
        return state, u

    return jax.jit(lambda gs: jax.lax.scan(step, opt.init(gs[0]), gs))(grads)


@pytest.mark.parametrize("mode", ["paper", "code"])
def test_bf16_long_run_keeps_a_float32_accumulator(mode):
    # p = 1, a constant unit gradient for 3000 steps: S_t = t and u_t = 1 / (eps + t). A
    # bfloat16 S stops at 256 (256 + 1 rounds to 256), making the last step ~12x too large.
    grads = jnp.ones((3000, 2), jnp.bfloat16)
    opt = jo.scale_by_classp(0.0, 1.0, 1e-5, mode=mode)
    state16, u16 = _scan_updates(opt, grads)
    state32, u32 = _scan_updates(opt, grads.astype(jnp.float32))
    assert u16.dtype == jnp.bfloat16 and state16.grad_sum.dtype == jnp.float32
    np.testing.assert_array_equal(state16.grad_sum, [3000.0, 3000.0])
    chex.assert_trees_all_close(state16, state32)
    np.testing.assert_allclose(np.asarray(u16, np.float32), u32, rtol=2**-8)
    np.testing.assert_allclose(np.asarray(u16[-1], np.float32), 1 / 3000, rtol=2**-8)

    # What main did (state in the parameters' dtype), still available on request.
    low = jo.scale_by_classp(0.0, 1.0, 1e-5, mode=mode, accumulator_dtype=jnp.bfloat16)
    state_low, u_low = _scan_updates(low, grads)
    np.testing.assert_array_equal(state_low.grad_sum, [256.0, 256.0])
    assert float(u_low[-1, 0]) > 10 / 3000


def test_accumulator_dtype_is_validated():
    with pytest.raises(ValueError, match="accumulator_dtype must be None or a floating dtype"):
        jo.classp(0.1, 0.5, accumulator_dtype="int8")
