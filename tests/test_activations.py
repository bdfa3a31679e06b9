"""Tests for jaxcl.activations: hand-computed values, gradients, ties, axes, dtypes, errors.

Each test evaluates its cases inside one ``jax.jit`` call: one compilation per test is much
cheaper on CPU than op-by-op dispatch. Random inputs come from NumPy (no RNG compilation).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import activations as act

X5 = np.array([3.0, -1.0, 2.0, 0.5, 5.0], np.float32)  # distinct; sorted: 5, 3, 2, 0.5, −1


def _np(y):
    return np.asarray(y, dtype=np.float64)


def _normal(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------------------------- hard_ash / ash

_HARD_ASH_CASES = [
    # x = [1, 3]: μ = 2, σ = 1, τ = μ + z_k σ, gate = clip(α(x − τ)/6 + ½, 0, 1).
    (3.0, 0.0, "code", [0.0, 2.0]),  # gate [0, 1], clip(x, 0, 2) = [1, 2]
    (3.0, 0.0, "comment", [0.0, 3.0]),
    (3.0, -1.0, "code", [0.5, 2.0]),  # gate [½, 1]
    (3.0, -1.0, "comment", [0.5, 3.0]),
    (1.0, 0.5, "code", [0.25, 2.0 * (0.5 / 6 + 0.5)]),  # gate [¼, 7/12]
    (1.0, 0.5, "comment", [0.25, 3.0 * (0.5 / 6 + 0.5)]),
]


def test_hard_ash_and_ash_hand_computed():
    @jax.jit
    def run(x, x2):
        cases = [act.hard_ash(x, alpha=a, z_k=z, variant=v) for a, z, v, _ in _HARD_ASH_CASES]
        per_row = act.hard_ash(x2, alpha=3.0, z_k=-1.0)
        return cases, per_row, act.ash(x, alpha=1.0, z_k=0.0), act.hard_ash(jnp.ones(5))

    x2 = np.array([[1.0, 3.0], [11.0, 13.0]], np.float32)  # row 2: μ = 12, σ = 1
    cases, per_row, ash_y, equal = run(np.array([1.0, 3.0], np.float32), x2)
    for y, (*_, expected) in zip(cases, _HARD_ASH_CASES, strict=True):
        np.testing.assert_allclose(_np(y), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(_np(per_row), [[0.5, 2.0], [1.0, 2.0]], rtol=1e-6)
    sig = 1.0 / (1.0 + math.exp(-1.0))  # ash gate = sigmoid([−1, 1])
    np.testing.assert_allclose(_np(ash_y), [1.0 - sig, 3.0 * sig], rtol=1e-6)
    # all-equal input: σ = 0, gate = hardsigmoid(0) = ½, value finite
    np.testing.assert_allclose(_np(equal), np.full(5, 0.5))


def _hard_ash_reference(x, alpha, z_k):
    mu = jnp.sum(x) / x.size
    sigma = jnp.sqrt(jnp.sum((x - mu) ** 2) / x.size)
    gate = jnp.clip(alpha * (x - mu - z_k * sigma) / 6.0 + 0.5, 0.0, 1.0)
    return jnp.clip(x, 0.0, 2.0) * gate


def _hard_ash_detached(x, alpha, z_k):
    mu = jax.lax.stop_gradient(jnp.mean(x))
    sigma = jax.lax.stop_gradient(jnp.std(x))
    return jnp.clip(x, 0.0, 2.0) * jnp.clip(alpha * (x - mu - z_k * sigma) / 6 + 0.5, 0.0, 1.0)


def test_hard_ash_gradient_flows_through_mean_and_std():
    x, w = 1.5 * _normal((64,), 0), _normal((64,), 1)

    @jax.jit
    def grads(x):
        def g(f):
            return jax.grad(lambda x: jnp.sum(w * f(x)))(x)

        return (
            g(lambda x: act.hard_ash(x, alpha=1.0, z_k=0.5)),
            g(lambda x: _hard_ash_reference(x, 1.0, 0.5)),
            g(lambda x: _hard_ash_detached(x, 1.0, 0.5)),
        )

    g, g_ref, g_detached = grads(x)
    np.testing.assert_allclose(_np(g), _np(g_ref), rtol=1e-5, atol=1e-6)
    assert np.max(np.abs(_np(g) - _np(g_detached))) > 1e-3  # μ, σ do carry gradient


def test_hard_ash_sparsity_on_standard_normal():
    # τ = μ + 2.3σ: ~1.07% of units lie above τ (gate > ½). With α = 3 the gate is already
    # positive from τ − 1, so ~9.7% of units are non-zero (P(Z > 1.3) = 0.0968).
    x = _normal((100_000,))
    y = _np(jax.jit(act.hard_ash)(x))
    gate_above_half = (y >= 0.5 * np.clip(x, 0, 2)) & (x > 0)
    assert abs(np.mean(gate_above_half) - 0.0107) < 0.0015
    assert abs(np.mean(y > 0) - 0.0968) < 0.004


# ----------------------------------------------------------------------------- top-k


def test_kth_largest_both_paths():
    cases = [(1, 5.0, 4), (2, 3.0, 0), (3, 2.0, 2), (4, 0.5, 3), (5, -1.0, 1)]  # k > 3: min-path

    @jax.jit
    def run(x):
        values = [act.kth_largest(x, k=k) for k, _, _ in cases]
        grads = [jax.grad(lambda x, k=k: act.kth_largest(x, k=k)[0])(x) for k, _, _ in cases]
        return values, grads

    values, grads = run(X5)
    for v, g, (_, expected, index) in zip(values, grads, cases, strict=True):
        assert v.shape == (1,)
        assert float(v[0]) == expected
        np.testing.assert_array_equal(_np(g), np.eye(5)[index])


def test_kth_largest_with_a_traced_k_equals_the_static_path_and_clips():
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 7))
    traced = jax.jit(jax.vmap(lambda k: act.kth_largest(x, k=k)))(jnp.arange(0, 9))
    for k in range(0, 9):  # 0 and 8 lie outside [1, 7]: clipped, as a traced k can't be checked
        np.testing.assert_array_equal(traced[k], act.kth_largest(x, k=min(max(k, 1), 7)))
    mask = jax.jit(lambda k: act.topk_mask(x, k=k))(jnp.int32(3))
    np.testing.assert_array_equal(mask, act.topk_mask(x, k=3))


def test_topk_subtract_hand_computed():
    r = np.array([1.0, 0.0, -1.0, 1.0, 0.5], np.float32)
    x4 = np.array([-1.0, -2.0, -3.0, 1.0], np.float32)  # k = 3: v = −2, or 0 after ReLU

    @jax.jit
    def run(x, r, x4):
        return (
            act.topk_subtract(x, k=3, stop_gradient=False, clip_max=2.0),  # Hard ASH code
            act.topk_subtract(x, k=3),
            act.topk_subtract(x, k=3, relu_first=True),  # SDM
            act.topk_subtract(x4, k=3),
            act.topk_subtract(x4, k=3, relu_first=True),
            act.topk_subtract(x, k=3, relu_first=True, coefficient=r),
            act.topk_subtract(jnp.stack([x, x + 1.0]), k=3, relu_first=True, coefficient=r),
            act.topk_subtract(jnp.stack([x, x]).T, k=3, relu_first=True, coefficient=r, axis=0),
        )

    hard_ash, plain, sdm, neg, neg_relu, coef, coef_rows, coef_axis0 = run(X5, r, x4)
    # k = 3 -> v = 2; x − v = [1, −3, 0, −1.5, 3]; k − 1 = 2 units stay active
    np.testing.assert_allclose(_np(hard_ash), [1.0, 0.0, 0.0, 0.0, 2.0])
    np.testing.assert_allclose(_np(plain), [1.0, 0.0, 0.0, 0.0, 3.0])
    np.testing.assert_allclose(_np(sdm), [1.0, 0.0, 0.0, 0.0, 3.0])
    np.testing.assert_allclose(_np(neg), [1.0, 0.0, 0.0, 3.0])
    np.testing.assert_allclose(_np(neg_relu), [0.0, 0.0, 0.0, 1.0])
    # per-unit r: a = [3, 0, 2, 0.5, 5], v = 2, a − r v = [1, 0, 4, −1.5, 4]
    np.testing.assert_allclose(_np(coef), [1.0, 0.0, 4.0, 0.0, 4.0])
    np.testing.assert_allclose(_np(coef_rows[0]), _np(coef))
    np.testing.assert_allclose(_np(coef_axis0[:, 0]), _np(coef))


def test_topk_subtract_gaba_keff_leaves_exactly_k():
    x = _normal((4, 50), 3)
    ks = (1, 5, 10)
    ys = jax.jit(lambda x: [act.topk_subtract(x, k=k + 1, relu_first=True) for k in ks])(x)
    for k, y in zip(ks, ys, strict=True):
        np.testing.assert_array_equal(_np(jnp.sum(y > 0, axis=-1)), np.full(4, k))


def test_topk_subtract_stop_gradient_switch():
    def loss(x, sg):
        return jnp.sum(act.topk_subtract(x, k=3, stop_gradient=sg))

    g_sg, g_flow = jax.jit(lambda x: (jax.grad(loss)(x, True), jax.grad(loss)(x, False)))(X5)
    # y = relu(x − v) with v = x[2]: active units 0 and 4 -> d/dx[2] = −2 unless detached.
    np.testing.assert_allclose(_np(g_sg), [1, 0, 0, 0, 1])
    np.testing.assert_allclose(_np(g_flow), [1, 0, -2, 0, 1])


def test_topk_mask_and_ties():
    @jax.jit
    def run(x, neg, equal, three):
        return (
            act.topk_mask(x, k=3),
            act.topk_mask(neg, k=2),
            act.topk_mask(equal, k=2),
            act.topk_subtract(equal, k=2),
            act.topk_mask(three, k=1),
            act.topk_subtract(three, k=3),
            act.topk_subtract(three, k=4),
        )

    neg = np.array([-1.0, -2.0, -3.0, -4.0], np.float32)
    three = np.array([2.0, 2.0, 2.0, 1.0], np.float32)
    mask, mask_neg, mask_eq, sub_eq, mask_three, sub3, sub4 = run(X5, neg, np.full(5, 2.0), three)
    np.testing.assert_allclose(_np(mask), [3.0, 0.0, 2.0, 0.0, 5.0])
    np.testing.assert_allclose(_np(mask_neg), [-1.0, -2.0, 0.0, 0.0])  # no ReLU
    np.testing.assert_allclose(_np(mask_eq), np.full(5, 2.0))  # every tie at v kept
    np.testing.assert_allclose(_np(sub_eq), np.zeros(5))  # strict: ties at v zeroed
    np.testing.assert_allclose(_np(mask_three), [2.0, 2.0, 2.0, 0.0])
    np.testing.assert_allclose(_np(sub3), np.zeros(4))
    np.testing.assert_allclose(_np(sub4), [1.0, 1.0, 1.0, 0.0])


# ----------------------------------------------------------------------------- lwta


def test_lwta_hand_computed_and_ties():
    @jax.jit
    def run(x):
        grad = jax.grad(lambda x: jnp.sum(act.lwta(x, groups=2)))(x)
        g2, g3, g6 = (act.lwta(x, groups=g) for g in (2, 3, 6))
        return g2, g3, g6, act.lwta(jnp.ones(6), groups=3), grad

    g2, g3, g6, equal, grad = run(np.array([1.0, 3.0, 2.0, 2.0, 5.0, 0.0], np.float32))
    np.testing.assert_allclose(_np(g2), [0, 3, 0, 0, 5, 0])
    np.testing.assert_allclose(_np(g3), [0, 3, 2, 0, 5, 0])  # tie in group 2: first wins
    np.testing.assert_allclose(_np(g6), [1, 3, 2, 2, 5, 0])
    np.testing.assert_allclose(_np(equal), [1, 0, 1, 0, 1, 0])
    np.testing.assert_allclose(_np(grad), [0, 1, 0, 0, 1, 0])


# ----------------------------------------------------------------------------- elementwise


def test_elementwise_hand_computed():
    @jax.jit
    def run(e, x):
        return (
            act.elephant(e),
            act.elephant(jnp.array([2.0]), a=1.0, d=2.5),
            act.gumbel(jnp.array([0.0, -1.0])),
            [f(x) for f in (act.relu, act.hard_sigmoid, act.sigmoid, act.swish)],
            jax.grad(act.elephant)(0.0),
        )

    e = np.array([0.0, 0.16, 0.32, -0.16], np.float32)
    x = np.array([-4.0, -1.0, 0.0, 1.0, 4.0], np.float32)
    eleph, eleph_d, gum, (relu, hsig, sig_y, swish), g0 = run(e, x)
    np.testing.assert_allclose(_np(eleph), [1.0, 0.5, 1.0 / 17.0, 0.5], rtol=1e-5)
    np.testing.assert_allclose(_np(eleph_d), [1 / (1 + 2**2.5)], rtol=1e-6)
    np.testing.assert_allclose(_np(gum), [math.exp(-1.0), math.exp(-math.e)], rtol=1e-6)
    np.testing.assert_allclose(_np(relu), [0, 0, 0, 1, 4])
    np.testing.assert_allclose(_np(hsig), [0, 1 / 3, 0.5, 2 / 3, 1], rtol=1e-6)
    sig = 1.0 / (1.0 + np.exp(-_np(x)))
    np.testing.assert_allclose(_np(sig_y), sig, rtol=1e-6)
    np.testing.assert_allclose(_np(swish), _np(x) * sig, rtol=1e-6)
    assert float(g0) == 0.0


# ----------------------------------------------------------------------------- axes, dtypes

_AXIS_CASES = [
    ("hard_ash", {}),
    ("ash", {}),
    ("topk_subtract_hard_ash", {"k": 2}),
    ("topk_subtract_sdm", {"k": 4}),
    ("topk_mask", {"k": 3}),
    ("lwta", {"groups": 2}),
]


def test_axis_and_batch_handling():
    @jax.jit
    def run(x):
        out = []
        for name, hparams in _AXIS_CASES:
            f = act.get_activation(name, **hparams)
            f_axis0 = act.get_activation(name, axis=0, **hparams)
            f_axis_neg = act.get_activation(name, axis=-2, **hparams)
            out.append((f(x), jax.vmap(f)(x), f_axis0(x.T).T, f_axis_neg(x.T).T))
        return out

    for (name, _), (y, y_vmap, y0, y_neg) in zip(_AXIS_CASES, run(_normal((3, 6), 1)), strict=True):
        np.testing.assert_allclose(_np(y_vmap), _np(y), rtol=1e-6, atol=1e-7, err_msg=name)
        np.testing.assert_allclose(_np(y0), _np(y), rtol=1e-6, atol=1e-7, err_msg=name)
        np.testing.assert_array_equal(_np(y_neg), _np(y0), err_msg=name)


_ALL_CASES = {
    "hard_ash": {},
    "ash": {},
    "topk_subtract": {"k": 3},
    "topk_subtract_hard_ash": {"k": 3},
    "topk_subtract_sdm": {"k": 3},
    "topk_mask": {"k": 3},
    "lwta": {"groups": 2},
    "elephant": {},
    "relu": {},
    "swish": {},
    "sigmoid": {},
    "hard_sigmoid": {},
    "gumbel": {},
}


def test_every_registered_activation_is_tested():
    assert set(_ALL_CASES) == set(act.ACTIVATIONS)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dtype_and_shape_preserved_under_jit(dtype):
    x = jnp.asarray(_normal((2, 8), 2), dtype)
    ys = jax.jit(lambda x: {n: act.get_activation(n, **h)(x) for n, h in _ALL_CASES.items()})(x)
    for name, y in ys.items():
        assert y.dtype == dtype, name
        assert y.shape == x.shape, name
        assert bool(jnp.all(jnp.isfinite(y))), name


# ----------------------------------------------------------------------------- edge inputs

# Rows on which a gradient used to be NaN: constant rows (σ = 0), a variance that underflows,
# exp(−x) or |x/a|^d overflowing, and ties.
_EDGE_ROWS = {
    "zeros": [[0.0, 0.0, 0.0, 0.0]] * 2,
    "constant": [[1.5, 1.5, 1.5, 1.5], [-100.0, -100.0, -100.0, -100.0]],
    "tiny variance": [[1e-30, 0.0, 0.0, 0.0], [0.0, -1e-25, 0.0, 0.0]],
    "very negative": [[-1e4, -200.0, -100.0, -1e15], [-90.0, -1e15, -1e15, -1e15]],
    "very positive": [[1e4, 200.0, 1e15, 100.0], [1e15, 1e15, 1e15, 90.0]],
    "ties": [[1.0, 1.0, 0.0, 0.0], [2.0, 2.0, 2.0, -1.0]],
}
_W = np.array([[1.0, -2.0, 0.5, 3.0]], np.float32)  # cotangent weights: no cancellation


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_every_activation_has_finite_gradients_on_edge_inputs(dtype):
    @jax.jit
    def grads(xs):
        out = {}
        for name, hparams in _ALL_CASES.items():
            f = act.get_activation(name, **hparams)
            for case, x in xs.items():
                out[name, case] = jax.grad(lambda x, f=f: jnp.sum(_W * f(x)).astype(x.dtype))(x)
        return out

    xs = {
        case: jnp.asarray(np.asarray(rows, np.float32), dtype) for case, rows in _EDGE_ROWS.items()
    }
    bad = [key for key, g in grads(xs).items() if not np.all(np.isfinite(_np(g)))]
    assert bad == []


def _ash_with_jnp_std(x, *, alpha, z_k, gate, clip):
    """Hard ASH / ASH as first written, with jnp.std (NaN gradient at σ = 0)."""
    u = alpha * (x - jnp.mean(x, -1, keepdims=True) - z_k * jnp.std(x, -1, keepdims=True))
    return (jnp.clip(x, 0.0, 2.0) if clip else x) * gate(u)


_VALUE_REFERENCES = {
    "hard_ash": (
        act.hard_ash,
        lambda x: _ash_with_jnp_std(x, alpha=3.0, z_k=2.3, gate=jax.nn.hard_sigmoid, clip=True),
    ),
    "hard_ash comment": (
        lambda x: act.hard_ash(x, alpha=1.0, z_k=-0.5, variant="comment"),
        lambda x: _ash_with_jnp_std(x, alpha=1.0, z_k=-0.5, gate=jax.nn.hard_sigmoid, clip=False),
    ),
    "ash": (
        act.ash,
        lambda x: _ash_with_jnp_std(x, alpha=3.0, z_k=2.3, gate=jax.nn.sigmoid, clip=False),
    ),
    "elephant": (act.elephant, lambda x: 1.0 / (1.0 + jnp.abs(x / 0.16) ** 4)),
    "elephant d=2.5": (
        lambda x: act.elephant(x, a=0.5, d=2.5),
        lambda x: 1.0 / (1.0 + jnp.abs(x / 0.5) ** 2.5),
    ),
    "elephant d=0.5": (
        lambda x: act.elephant(x, d=0.5),
        lambda x: 1.0 / (1.0 + jnp.abs(x / 0.16) ** 0.5),
    ),
    "gumbel": (act.gumbel, lambda x: jnp.exp(-jnp.exp(-x))),
}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_values_are_the_formulas_bit_for_bit(dtype):
    rows = [_normal((8, 16), 3), 10 * _normal((8, 16), 4), _normal((8, 16), 5) - 20]
    rows += [np.pad(np.asarray(r, np.float32), ((0, 0), (0, 12))) for r in _EDGE_ROWS.values()]
    xs = [jnp.asarray(x, dtype) for x in rows]

    @jax.jit
    def run(xs):
        return {k: [(f(x), ref(x)) for x in xs] for k, (f, ref) in _VALUE_REFERENCES.items()}

    for name, pairs in run(xs).items():
        for y, y_ref in pairs:
            np.testing.assert_array_equal(_np(y), _np(y_ref), err_msg=name)


def test_edge_gradients_are_the_limits():
    x_const = np.full((4,), 1.5, np.float32)
    e = np.array([0.0, 0.3, -2.0, 1e15, -1e15], np.float32)
    g = np.array([-1e4, -100.0, -20.0, -5.0, 0.0, 3.0], np.float32)

    @jax.jit
    def run():
        def grad(f, x):
            return jax.grad(lambda x: jnp.sum(f(x)))(x)

        def sigma_held(x):  # σ = 0 held fixed: its subgradient 0 at a constant row
            mu = jnp.mean(x)
            sigma = jax.lax.stop_gradient(jnp.std(x))
            return jnp.clip(x, 0.0, 2.0) * jax.nn.hard_sigmoid(3.0 * (x - mu - 2.3 * sigma))

        return (
            grad(act.hard_ash, x_const),
            grad(sigma_held, x_const),
            grad(lambda x: act.elephant(x, d=0.5), e),
            grad(lambda x: act.elephant(x, d=4.0), e),
            grad(act.gumbel, g),
        )

    g_ash, g_held, g_e05, g_e4, g_gum = map(_np, run())
    np.testing.assert_array_equal(g_ash, g_held)
    assert np.all(g_ash != 0)  # the gate's own gradient still flows

    def elephant_slope(x, a, d):  # dy/dx = −(d/a) sign(x) r^(d−1) / (1 + r^d)², r = |x/a|
        r = np.abs(x / a)
        return -(d / a) * np.sign(x) * r ** (d - 1) / (1 + r**d) ** 2

    e64 = e.astype(np.float64)
    np.testing.assert_allclose(g_e05[1:], elephant_slope(e64[1:], 0.16, 0.5), rtol=1e-5)
    np.testing.assert_allclose(g_e4[:3], elephant_slope(e64[:3], 0.16, 4.0), rtol=1e-5)
    assert g_e05[0] == 0.0  # the cusp at 0 (infinite slope for d < 1): subgradient 0
    assert np.all(g_e4[3:] == 0.0)  # r^4 overflows: y = 0 and its gradient underflows to 0
    g64 = g.astype(np.float64)
    with np.errstate(over="ignore"):  # exp(1e4) = inf: the exact slope exp(−inf) = 0
        slope = np.exp(-g64 - np.exp(-g64))
    np.testing.assert_allclose(g_gum, slope, rtol=1e-5, atol=1e-30)


# ----------------------------------------------------------------------------- errors


def test_bad_k_refused():
    with pytest.raises(ValueError, match=r"k must be at most x.shape\[0\] = 5, got 6"):
        act.topk_subtract(X5, k=6)
    with pytest.raises(ValueError, match=r"k must be a positive integer, got 0"):
        act.topk_mask(X5, k=0)
    with pytest.raises(TypeError, match=r"k must be a positive integer, got 2\.5"):
        act.topk_mask(X5, k=2.5)
    f = act.get_activation("topk_mask", k=64)  # width checked when traced
    with pytest.raises(ValueError, match=r"k must be at most x.shape\[0\] = 5, got 64"):
        jax.jit(f)(X5)
    with pytest.raises(ValueError, match="k must be a positive integer, got -1"):
        act.get_activation("topk_subtract", k=-1)


def test_bad_groups_refused():
    x = jnp.ones(6)
    with pytest.raises(ValueError, match=r"groups must be a divisor of x.shape\[0\] = 6, got 4"):
        act.lwta(x, groups=4)
    with pytest.raises(ValueError, match=r"groups must be a divisor of .*, got 7"):
        act.lwta(x, groups=7)
    with pytest.raises(ValueError, match="groups must be a positive integer, got 0"):
        act.get_activation("lwta", groups=0)


def test_bad_names_and_hparams_refused():
    with pytest.raises(
        ValueError, match=r"activation must be one of 'ash', 'elephant', .*, got 'hardash'"
    ):
        act.get_activation("hardash")
    with pytest.raises(
        TypeError, match=r"of activation 'hard_ash' must be among 'alpha', .*, got 'beta'"
    ):
        act.get_activation("hard_ash", beta=1.0)
    with pytest.raises(
        TypeError, match="hyperparameters of activation 'relu' must be none, got 'k'"
    ):
        act.get_activation("relu", k=3)
    with pytest.raises(TypeError, match="of activation 'topk_mask' must include 'k', got nothing"):
        act.get_activation("topk_mask")
    with pytest.raises(ValueError, match="variant must be one of 'code', 'comment', got 'paper'"):
        act.get_activation("hard_ash", variant="paper")
    with pytest.raises(ValueError, match=r"variant must be one of .*, got 'paper'"):
        act.hard_ash(X5, variant="paper")
    with pytest.raises(ValueError, match=r"axis must be in \[-1, 1\) for x of shape \(5,\), got 2"):
        act.hard_ash(X5, axis=2)
    with pytest.raises(
        ValueError, match=r"coefficient.shape must be \(\) or \(5,\) .*, got \(3,\)"
    ):
        act.topk_subtract(X5, k=2, coefficient=jnp.ones(3))


_BAD_HPARAMS = [
    # (activation, hyperparameters, error, message)
    ("hard_ash", {"alpha": math.nan}, ValueError, "alpha must be > 0, got nan"),
    ("hard_ash", {"alpha": math.inf}, ValueError, "alpha must be > 0 and finite, got inf"),
    ("hard_ash", {"alpha": 0.0}, ValueError, "alpha must be > 0, got 0.0"),
    ("hard_ash", {"alpha": np.array([1.0, -1.0])}, ValueError, r"alpha must be > 0, got array"),
    ("hard_ash", {"alpha": "3"}, TypeError, "alpha must be a real number > 0, got '3'"),
    ("hard_ash", {"alpha": True}, TypeError, "alpha must be a real number > 0, got True"),
    ("hard_ash", {"z_k": math.nan}, ValueError, "z_k must be finite, got nan"),
    ("ash", {"z_k": -math.inf}, ValueError, "z_k must be finite, got -inf"),
    ("ash", {"alpha": -3.0}, ValueError, "alpha must be > 0, got -3.0"),
    ("elephant", {"a": 0.0}, ValueError, "a must be > 0, got 0.0"),
    ("elephant", {"a": math.nan}, ValueError, "a must be > 0, got nan"),
    ("elephant", {"d": 0.0}, ValueError, "d must be > 0, got 0.0"),
    ("elephant", {"d": -4.0}, ValueError, "d must be > 0, got -4.0"),
    ("elephant", {"d": math.inf}, ValueError, "d must be > 0 and finite, got inf"),
    ("topk_subtract", {"k": 2, "clip_max": 0.0}, ValueError, "clip_max must be > 0, got 0.0"),
    ("topk_subtract", {"k": 2, "clip_max": math.nan}, ValueError, "clip_max must be > 0, got nan"),
    ("topk_subtract", {"k": 2, "stop_gradient": "no"}, TypeError, "stop_gradient must be a bool"),
    ("topk_subtract_sdm", {"k": True}, TypeError, "k must be a positive integer, got True"),
    ("topk_mask", {"k": 2, "axis": 0.0}, TypeError, "axis must be an integer, got 0.0"),
    ("lwta", {"groups": True}, TypeError, "groups must be a positive integer, got True"),
]


@pytest.mark.parametrize(("name", "hparams", "error", "message"), _BAD_HPARAMS)
def test_degenerate_hparams_refused_at_construction_and_call(name, hparams, error, message):
    with pytest.raises(error, match=message):
        act.get_activation(name, **hparams)
    with pytest.raises(error, match=message):
        act.ACTIVATIONS[name](X5, **hparams)


def test_traced_hparams_are_not_checked():
    @jax.jit
    def run(alpha, z_k, a, d):
        return (
            act.hard_ash(X5, alpha=alpha, z_k=z_k),
            act.ash(X5, alpha=alpha, z_k=z_k),
            act.elephant(X5, a=a, d=d),
        )

    got = run(3.0, 2.3, 0.16, 4.0)
    expected = act.hard_ash(X5), act.ash(X5), act.elephant(X5)
    for y, y_ref in zip(got, expected, strict=True):
        np.testing.assert_allclose(_np(y), _np(y_ref), rtol=1e-6)


def test_get_activation_binds_and_overrides_presets():
    f = act.get_activation("topk_subtract_hard_ash", k=3, clip_max=None)
    np.testing.assert_allclose(_np(jax.jit(f)(X5)), [1.0, 0.0, 0.0, 0.0, 3.0])
    assert act.get_activation("relu") is act.relu
