"""The small CNN: shapes and parameters (kernels only)."""

import jax
import jax.numpy as jnp

from jaxcl.models.cnn import CNN


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
