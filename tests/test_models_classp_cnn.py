"""The PyTorch MNIST-example CNN of the CLASSP study, and dropout in supervised training."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcl import learners, types
from jaxcl.losses import masked_mean_cross_entropy
from jaxcl.models.classp_cnn import PyTorchMnistCNN, max_pool_2x2


@pytest.fixture(scope="module")
def params():
    return jax.jit(PyTorchMnistCNN().init)(jax.random.key(0), jnp.zeros((1, 784)))["params"]


def test_parameter_shapes_count_and_pytorch_init_bounds(params):
    shapes = jax.tree.map(jnp.shape, params)
    assert shapes == {
        "conv_0": {"kernel": (3, 3, 1, 32), "bias": (32,)},
        "conv_1": {"kernel": (3, 3, 32, 64), "bias": (64,)},
        "dense_0": {"kernel": (9216, 128), "bias": (128,)},
        "head": {"kernel": (128, 10), "bias": (10,)},
    }
    assert sum(p.size for p in jax.tree.leaves(params)) == 1_199_882  # torch's count
    for name, fan_in in [("conv_0", 9), ("conv_1", 288), ("dense_0", 9216), ("head", 128)]:
        for kind, leaf in params[name].items():  # U(−1/√fan_in, 1/√fan_in), both kinds
            reach = float(jnp.max(jnp.abs(leaf))) * fan_in**0.5
            assert reach <= 1.0 + 1e-6 and (kind == "bias" or reach > 0.95)


def test_pool_equals_the_native_op():
    x = jax.random.normal(jax.random.key(1), (2, 8, 6, 3))
    pooled = jax.jit(max_pool_2x2)(x)
    np.testing.assert_array_equal(pooled, nn.max_pool(x, (2, 2), strides=(2, 2)))


def test_dropout_acts_only_in_train_mode(params):
    apply = jax.jit(PyTorchMnistCNN().apply, static_argnames="train")
    x = jax.random.normal(jax.random.key(2), (4, 784))
    variables = {"params": params}
    np.testing.assert_array_equal(apply(variables, x), apply(variables, x))
    drop = [apply(variables, x, train=True, rngs={"dropout": jax.random.key(k)}) for k in (0, 1)]
    assert drop[0].shape == (4, 10)
    assert not np.allclose(drop[0], drop[1])
    assert not np.allclose(drop[0], apply(variables, x))


class _DropoutNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(3)(nn.Dropout(0.5, deterministic=not train)(x))


def test_supervised_learner_trains_with_dropout_and_predicts_without():
    learner = learners.supervised(_DropoutNet(), optax.sgd(0.0), input_dim=8)
    state = learner.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(3), (4, 8))
    batch = types.Batch(
        x=x,
        y=jnp.arange(4, dtype=jnp.int32) % 3,
        valid=jnp.ones((4,), bool),
        task=jnp.int32(0),
        logit_mask=jnp.ones((3,), bool),
        epoch=jnp.int32(0),
    )
    update = jax.jit(learner.update)
    losses = [float(update(state, batch, jax.random.key(k))[1]) for k in (0, 0, 1)]
    assert losses[0] == losses[1] != losses[2]  # the step's key drives the dropout masks
    np.testing.assert_array_equal(learner.predict(state, x, 0), learner.predict(state, x, 0))
    eval_loss = masked_mean_cross_entropy(learner.predict(state, x, 0), batch)
    assert float(eval_loss) not in losses
