"""The small CNN: shapes, parameters (kernels only), convolution as a matrix product."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl.models.cnn import CNN, conv2d


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (2, 0), (1, 0)])
def test_conv2d_matches_lax_convolution(stride, padding):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 7, 3)).astype(np.float32)
    k = rng.normal(size=(3, 3, 3, 5)).astype(np.float32)
    expected = jax.lax.conv_general_dilated(
        x, k, (stride, stride), [(padding, padding)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    actual = jax.jit(conv2d, static_argnames=("stride", "padding"))(
        x, k, stride=stride, padding=padding
    )
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_default_cnn_shapes_and_kernels_only():
    model = CNN()
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((2, 784)))
    shapes = jax.tree.map(lambda p: p.shape, variables["params"])
    assert shapes == {
        "conv_0": {"kernel": (3, 3, 1, 16)},
        "conv_1": {"kernel": (3, 3, 16, 32)},
        "dense_0": {"kernel": (7 * 7 * 32, 64)},
        "head": {"kernel": (64, 10)},
    }
    assert sum(p.size for p in jax.tree.leaves(variables)) == 105_744
    out = jax.eval_shape(model.apply, variables, jnp.zeros((5, 784)))
    assert out.shape == (5, 10)


def test_cnn_forward_on_a_tiny_preset():
    model = CNN(num_classes=3, image_shape=(8, 8, 2), channels=(4,), hidden=())
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 128))
    params = jax.jit(model.init)(jax.random.PRNGKey(1), x)
    logits = jax.jit(model.apply)(params, x)
    assert logits.shape == (6, 3) and bool(jnp.isfinite(logits).all())
