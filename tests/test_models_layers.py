"""The models' shared layers: convolution as a matrix product and PyTorch's default inits."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcl.models import Conv, conv2d, he_normal, torch_bias_init, torch_default_init
from jaxcl.models._layers import Dense, dense_dot_general, im2col, matmul


def _lax_conv(x, k, stride, padding):
    return jax.lax.conv_general_dilated(
        x, k, (stride, stride), [(padding, padding)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@pytest.mark.parametrize("patches", [True, False, None])
@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (2, 0), (1, 0)])
def test_conv2d_matches_lax_convolution(stride, padding, patches):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 7, 3)).astype(np.float32)
    k = rng.normal(size=(3, 3, 3, 5)).astype(np.float32)
    expected = _lax_conv(x, k, stride, padding)
    actual = jax.jit(conv2d, static_argnames=("stride", "padding", "patches"))(
        x, k, stride=stride, padding=padding, patches=patches
    )
    np.testing.assert_allclose(actual, expected, atol=1e-5)


@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (3, 2, 1), (1, 2, 0), (7, 2, 3)])
def test_conv2d_patches_and_their_gradients_match_lax_per_seed(kernel, stride, padding):
    # The engine's vmap over seeds: per-seed inputs and kernels.
    rng = np.random.default_rng(1)
    seeds = 3
    x = jnp.asarray(rng.normal(size=(seeds, 2, 10, 10, 4)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(seeds, kernel, kernel, 4, 6)), jnp.float32)

    def loss(conv):
        return lambda x, k: jnp.sum(jnp.sin(conv(x, k)))

    ours = jax.jit(
        jax.vmap(
            jax.value_and_grad(
                loss(lambda x, k: conv2d(x, k, stride=stride, padding=padding, patches=True)),
                argnums=(0, 1),
            )
        )
    )(x, k)
    theirs = jax.jit(
        jax.vmap(
            jax.value_and_grad(loss(lambda x, k: _lax_conv(x, k, stride, padding)), argnums=(0, 1))
        )
    )(x, k)
    for actual, expected in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


def _reach(values, fan_in):
    """max |w| in units of PyTorch's bound 1/√fan_in."""
    return float(jnp.max(jnp.abs(values))) * fan_in**0.5


def test_im2col_by_hand():
    # x[0, r, c, 0] = 3r + c on a 3×3 image. 2×2 windows, stride 1: each patch lists
    # (0,0), (0,1), (1,0), (1,1) of its window.
    x = jnp.arange(9.0).reshape(1, 3, 3, 1)
    np.testing.assert_array_equal(
        im2col(x, (2, 2))[0],
        [[[0, 1, 3, 4], [1, 2, 4, 5]], [[3, 4, 6, 7], [4, 5, 7, 8]]],
    )
    # Padding 1, stride 2: windows start at padded rows/columns 0 and 2.
    np.testing.assert_array_equal(
        im2col(x, (2, 2), stride=2, padding=1)[0],
        [[[0, 0, 0, 0], [0, 0, 1, 2]], [[0, 3, 0, 6], [4, 5, 7, 8]]],
    )


def test_pytorch_default_inits_are_uniform_within_one_over_root_fan_in():
    k1, k2 = jax.random.split(jax.random.key(0))
    kernel = torch_default_init(k1, (50, 2000))  # fan_in 50
    bias = torch_bias_init(50)(k2, (2000,))
    for values in (kernel, bias):
        assert 0.99 < _reach(values, 50) <= 1.0
        assert abs(float(jnp.mean(values))) < 0.01


def test_he_normal_is_an_exact_normal():
    w = he_normal(jax.random.key(1), (200, 1000))
    std = (2 / 200) ** 0.5
    assert float(jnp.std(w)) == pytest.approx(std, rel=0.01)
    assert float(jnp.max(jnp.abs(w))) > 3 * std  # not truncated at two standard deviations


def test_conv_layer_bias_uses_the_kernel_fan_in():
    layer = Conv(8, kernel_size=3, padding=0, use_bias=True, kernel_init=torch_default_init)
    x = jax.random.normal(jax.random.key(2), (2, 6, 6, 4))
    params = layer.init(jax.random.key(3), x)["params"]
    assert jax.tree.map(jnp.shape, params) == {"kernel": (3, 3, 4, 8), "bias": (8,)}
    assert _reach(params["bias"], 36) <= 1.0 < _reach(params["bias"], 36 * 4)
    y = layer.apply({"params": params}, x)
    np.testing.assert_array_equal(y, conv2d(x, params["kernel"]) + params["bias"][None, None, None])
    no_bias = Conv(8, kernel_size=3, stride=2).init(jax.random.key(3), x)["params"]
    assert jax.tree.map(jnp.shape, no_bias) == {"kernel": (3, 3, 4, 8)}


def _plain_matmul(x, kernel):
    return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


@pytest.mark.parametrize("lead", [(6,), (2, 3)])
def test_matmul_and_its_gradients_match_the_plain_product_per_seed(lead):
    rng = np.random.default_rng(0)
    seeds = 3
    x = jnp.asarray(rng.normal(size=(seeds, *lead, 5)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(seeds, 5, 4)), jnp.float32)
    target = jnp.asarray(rng.normal(size=(seeds, *lead, 4)), jnp.float32)

    def loss(product):
        return lambda x, k, t: jnp.sum(jnp.tanh(product(x, k)) * t)

    np.testing.assert_array_equal(jax.vmap(matmul)(x, kernel), jax.vmap(_plain_matmul)(x, kernel))
    grads = jax.jit(jax.vmap(jax.grad(loss(matmul), argnums=(0, 1))))(x, kernel, target)
    plain = jax.jit(jax.vmap(jax.grad(loss(_plain_matmul), argnums=(0, 1))))(x, kernel, target)
    for actual, expected in zip(grads, plain, strict=True):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def test_dense_is_flax_dense_with_the_same_parameters_and_outputs():
    x = jax.random.normal(jax.random.key(4), (3, 6))
    ours, theirs = Dense(5, name="d"), nn.Dense(5, name="d")
    params = ours.init(jax.random.key(5), x)
    chex.assert_trees_all_equal(params, theirs.init(jax.random.key(5), x))
    np.testing.assert_array_equal(ours.apply(params, x), theirs.apply(params, x))


def test_dense_dot_general_refuses_other_contractions():
    x, k = jnp.ones((2, 3)), jnp.ones((3, 4))
    with pytest.raises(ValueError, match="the contraction must be Dense's"):
        dense_dot_general(x, k.T, (((1,), (1,)), ((), ())))
    with pytest.raises(ValueError, match="the contraction must be Dense's"):
        dense_dot_general(x, k, (((1,), (0,)), ((), ())), precision=jax.lax.Precision.HIGHEST)


def test_dense_has_second_order_reverse_mode_but_no_forward_mode():
    # The README's promise: a Hessian-vector product reverse over reverse equals the one of
    # flax's Dense by forward over reverse; forward mode itself raises.
    x = jax.random.normal(jax.random.key(8), (5, 4))
    ours, flax_dense = Dense(3), nn.Dense(3)
    params = ours.init(jax.random.key(9), x)
    v = jax.tree.map(jnp.ones_like, params)

    def loss(module):
        return lambda p: jnp.sum(jnp.tanh(module.apply(p, x)) ** 2)

    hvp = jax.grad(lambda p: optax.tree.vdot(jax.grad(loss(ours))(p), v))(params)
    expected = jax.jvp(jax.grad(loss(flax_dense)), (params,), (v,))[1]
    chex.assert_trees_all_close(hvp, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(jax.grad(loss(ours)), (params,), (v,))
