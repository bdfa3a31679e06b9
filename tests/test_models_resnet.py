"""The DST paper's ResNet-18: parameter count, no biases, batch-statistics BatchNorm."""

import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcl.models import resnet
from jaxcl.models._layers import torch_default_init
from jaxcl.models.resnet import ResNet, ResNet18, batch_norm


def test_resnet18_for_cifar100_has_the_papers_prunable_weight_count():
    variables = jax.eval_shape(ResNet18().init, jax.random.PRNGKey(0), jnp.zeros((2, 3072)))
    assert set(variables) == {"params"}
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(variables)]
    assert all(p.endswith("['kernel']") for p in paths)  # no biases, no BN parameters
    assert sum(math.prod(x.shape) for x in jax.tree.leaves(variables)) == 11_218_112
    params = variables["params"]
    assert params["stem"]["kernel"].shape == (7, 7, 3, 64)
    assert params["stage1_block0"]["shortcut"]["kernel"].shape == (1, 1, 64, 128)
    assert "shortcut" not in params["stage0_block0"] and len(params) == 10
    out = jax.eval_shape(ResNet18().apply, variables, jnp.zeros((4, 3072)))
    assert out.shape == (4, 100)


def test_tiny_resnet_forward_shapes():
    model = ResNet(stage_sizes=(1, 1), widths=(4, 8), num_classes=5, image_shape=(16, 16, 3))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 16 * 16 * 3)).astype(np.float32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(1), x)
    assert shapes["params"]["stage1_block0"]["conv1"]["kernel"].shape == (3, 3, 4, 8)
    params = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)
    logits = jax.jit(model.apply)(params, x)
    assert logits.shape == (3, 5) and bool(jnp.isfinite(logits).all())


def test_batch_norm_uses_the_batch_statistics_without_parameters():
    x = np.random.default_rng(0).normal(size=(8, 4, 4, 3)).astype(np.float32) * 5.0 + 2.0
    y = jax.jit(batch_norm)(x)
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 1, 2)), 1.0, atol=1e-3)
    # The same example is normalised differently in another batch (no running statistics).
    other = jax.jit(batch_norm)(jnp.concatenate([x[:1], 3.0 * x[1:]]))
    assert not np.allclose(y[0], other[0])


def _flax_conv(features, kernel, stride, name):
    pad = (kernel - 1) // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=torch_default_init,
        name=name,
    )


def test_resnet_equals_the_one_with_flax_convolutions(monkeypatch):
    # Same parameters from the same key, same logits and gradients up to float rounding.
    model = ResNet(stage_sizes=(1, 1), widths=(4, 8), num_classes=5, image_shape=(16, 16, 3))
    x = np.random.default_rng(0).normal(size=(6, 16 * 16 * 3)).astype(np.float32)
    params = model.init(jax.random.PRNGKey(1), x)

    def loss(p):
        return jnp.sum(jnp.tanh(model.apply(p, x)))

    ours = jax.jit(jax.value_and_grad(loss))(params)
    monkeypatch.setattr(resnet, "_conv", _flax_conv)
    chex.assert_trees_all_equal(model.init(jax.random.PRNGKey(1), x), params)
    theirs = jax.jit(jax.value_and_grad(loss))(params)
    chex.assert_trees_all_close(ours, theirs, rtol=1e-4, atol=1e-5)
