"""Tests for jaxcl.models.mlp: the weight-standardised Hard ASH MLP."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import activations
from jaxcl.models import MLP, StandardizedDense, standardize_weight


@pytest.fixture(scope="module")
def hard_ash_params():
    return jax.jit(MLP().init)(jax.random.key(0), jnp.zeros((1, 784)))


def test_parameter_shapes_and_count(hard_ash_params):
    shapes = jax.tree.map(jnp.shape, hard_ash_params)
    assert shapes == {
        "params": {"hidden_0": {"kernel": (784, 1000)}, "output": {"kernel": (1000, 10)}}
    }
    count = sum(p.size for p in jax.tree.leaves(hard_ash_params))
    assert count == 784 * 1000 + 1000 * 10


def _arange_init(key, shape, dtype=jnp.float32):
    del key  # deterministic: keeps the test free of RNG compilation
    return (jnp.arange(math.prod(shape)) % 7 - 3.0).reshape(shape).astype(dtype)


def test_configurable_depth_width_bias_and_init():
    model = MLP(hidden=(7, 5), num_classes=3, use_bias=True, kernel_init=_arange_init)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((784,)))["params"]
    assert sorted(params) == ["hidden_0", "hidden_1", "output"]
    assert params["hidden_1"]["kernel"].shape == (7, 5)
    assert params["output"]["bias"].shape == (3,)
    np.testing.assert_array_equal(
        np.asarray(params["output"]["kernel"]), _arange_init(None, (5, 3))
    )
    y = jax.jit(model.apply)({"params": params}, jnp.ones((2, 4, 784)))
    assert y.shape == (2, 4, 3)


def test_init_statistics_he_normal(hard_ash_params):
    for name, fan_in in [("hidden_0", 784), ("output", 1000)]:
        w = np.asarray(hard_ash_params["params"][name]["kernel"])
        assert abs(w.mean()) < 0.01 * math.sqrt(2.0 / fan_in) * 10
        np.testing.assert_allclose(w.std(), math.sqrt(2.0 / fan_in), rtol=0.02)
        # exact normal, not truncated: tails beyond 2 std exist (~4.6% of entries)
        assert np.mean(np.abs(w) > 2 * math.sqrt(2.0 / fan_in)) > 0.03


def test_standardized_weights_zero_mean_unit_norm(hard_ash_params):
    w = hard_ash_params["params"]["hidden_0"]["kernel"]
    w_std = standardize_weight(w)
    np.testing.assert_allclose(np.asarray(jnp.mean(w_std, axis=0)), 0.0, atol=1e-7)
    np.testing.assert_allclose(np.asarray(jnp.linalg.norm(w_std, axis=0)), 1.0, rtol=1e-5)
    # stored weights are unconstrained
    assert float(jnp.linalg.norm(w[:, 0])) > 1.2  # ≈ sqrt(784 · 2/784)


def test_forward_uses_standardized_hidden_and_plain_output(hard_ash_params):
    x = jnp.asarray(np.random.default_rng(1).standard_normal((3, 784)), jnp.float32)
    p = hard_ash_params["params"]
    w1, w2 = p["hidden_0"]["kernel"], p["output"]["kernel"]
    w1_ref = (w1 - w1.mean(axis=0, keepdims=True)) / jnp.linalg.norm(
        w1 - w1.mean(axis=0, keepdims=True), axis=0, keepdims=True
    )
    expected = jax.nn.relu(x @ w1_ref) @ w2
    y = jax.jit(MLP().apply)(hard_ash_params, x)
    np.testing.assert_allclose(np.asarray(y), np.asarray(expected), rtol=1e-4, atol=1e-5)
    y_plain = jax.jit(MLP(weight_standardize=False).apply)(hard_ash_params, x)
    np.testing.assert_allclose(np.asarray(y_plain), np.asarray(jax.nn.relu(x @ w1) @ w2), rtol=1e-4)


def test_gradient_flows_through_standardization():
    layer = StandardizedDense(2)
    x = jnp.array([[1.0, 2.0, 3.0]])
    params = {"params": {"kernel": jnp.array([[0.3, -1.0], [2.0, 0.5], [-0.7, 0.1]])}}
    g = jax.jit(jax.grad(lambda p: jnp.sum(layer.apply(p, x))))(params)["params"]["kernel"]
    # y = Σ_out x·W̃ is invariant to shifting or scaling a column of W, so the gradient is
    # orthogonal to both: zero column sum and zero inner product with each centred column.
    w = params["params"]["kernel"]
    np.testing.assert_allclose(np.asarray(g.sum(axis=0)), 0.0, atol=1e-5)
    centred = w - w.mean(axis=0, keepdims=True)
    np.testing.assert_allclose(np.asarray(jnp.sum(g * centred, axis=0)), 0.0, atol=1e-5)
    assert float(jnp.abs(g).max()) > 1e-3


def test_activation_is_applied(hard_ash_params):
    x = jnp.ones((2, 784))
    y = jax.jit(MLP(activation=jnp.zeros_like).apply)(hard_ash_params, x)
    np.testing.assert_array_equal(np.asarray(y), np.zeros((2, 10)))


def test_hard_ash_forward_vmapped_over_seeds(hard_ash_params):
    model = MLP(activation=activations.get_activation("hard_ash"))
    # A seed axis of 3 parameter sets (the second and third are transformed copies, which
    # avoids compiling a vmapped initialiser).
    params = jax.tree.map(lambda p: jnp.stack([p, -p, p[::-1]]), hard_ash_params)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 784)), jnp.float32)
    logits = jax.jit(jax.vmap(model.apply, in_axes=(0, None)))(params, x)
    assert logits.shape == (3, 5, 10)
    assert bool(jnp.all(jnp.isfinite(logits)))
    single = jax.jit(model.apply)(jax.tree.map(lambda p: p[1], params), x)
    np.testing.assert_allclose(np.asarray(logits[1]), np.asarray(single), rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(logits[0] - logits[1]).max()) > 1e-3  # seeds differ
    hidden = activations.hard_ash(x @ standardize_weight(params["params"]["hidden_0"]["kernel"][0]))
    assert 0.0 < float(jnp.mean(hidden > 0)) < 0.3  # sparse


def test_standardized_matmul_equals_matmul_with_the_standardized_kernel():
    from jaxcl.models.mlp import standardized_matmul

    kx, kw = jax.random.split(jax.random.PRNGKey(3))
    x = jax.random.normal(kx, (5, 7, 30))
    w = jax.random.normal(kw, (30, 11)) * 0.3 + 0.05  # a non-zero mean per unit
    expected = jnp.dot(x, standardize_weight(w))
    np.testing.assert_allclose(standardized_matmul(x, w), expected, rtol=1e-5, atol=1e-5)


def test_standardized_matmul_gradients_match_automatic_differentiation_per_seed():
    # Its written-out gradient against the plain formula's, vmapped over seeds.
    from jaxcl.models.mlp import standardized_matmul

    kx, kw = jax.random.split(jax.random.PRNGKey(4))
    x = jax.random.normal(kx, (3, 5, 7, 30))
    w = jax.random.normal(kw, (3, 30, 11)) * 0.3 + 0.05

    def grads(product):
        loss = lambda x, w: jnp.sum(jnp.sin(product(x, w)))  # noqa: E731
        return jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1))))(x, w)

    fast = grads(standardized_matmul)
    reference = grads(lambda x, w: jnp.dot(x, standardize_weight(w)))
    for actual, expected in zip(fast, reference, strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)
