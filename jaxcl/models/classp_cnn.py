"""The PyTorch MNIST-example CNN that the CLASSP vision experiment trains (1,199,882 weights).

``oswaldoludwig/CLASSP`` ``experiment_CV.py`` ``MyModel`` (L15-38): conv 3×3 (1→32),
ReLU, conv 3×3 (32→64), ReLU, 2×2 max-pool, ``Dropout2d(0.25)``, fc 9216→128, ReLU,
``Dropout2d(0.5)``, fc 128→10. Both convolutions are "VALID" with stride 1 (28→26→24→12).

Dropout follows PyTorch's semantics for those calls: ``Dropout2d`` on the 4-D conv output
drops whole feature maps (per example and channel), while on the 2-D fc activations it
degenerates to ordinary element-wise dropout. Dropout is active only with ``train=True``,
which needs a ``"dropout"`` PRNG stream (``rngs={"dropout": key}``);
:func:`jaxcl.learners.supervised` passes both in training steps.

Initialisation is PyTorch's default for ``Conv2d``/``Linear`` (weights and biases
U(−1/√fan_in, 1/√fan_in)), so the untrained network matches the authors' in distribution.

Speed: the convolutions are computed as patches × kernel matrix products
(:func:`patch_conv`) and the pooling as a reshape and max, the same maths as
``lax.conv_general_dilated`` and ``nn.max_pool``. On XLA:CPU the native convolution's
training step (and its seed-vmapped form, a grouped convolution) measured 10–20× slower
than this here; on accelerators the difference is small.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

# kaiming_uniform(a=√5) of PyTorch: bound = √(6 / ((1 + a²) fan_in)) = 1/√fan_in.
torch_default_kernel_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def patch_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A stride-1 "VALID" convolution as one matrix product over stacked shifted views.

    Args:
      x: ``[B, H, W, C_in]``.
      kernel: ``[kh, kw, C_in, C_out]`` (Flax's layout).

    Returns:
      ``[B, H − kh + 1, W − kw + 1, C_out]``, equal to ``lax.conv_general_dilated`` with
      NHWC/HWIO dimension numbers (cross-correlation, as every deep-learning framework).
    """
    kh, kw, c_in, c_out = kernel.shape
    h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    # Patch feature order (i, j, c) matches kernel.reshape(kh * kw * c_in, c_out).
    patches = jnp.concatenate(
        [x[:, i : i + h, j : j + w, :] for i in range(kh) for j in range(kw)], axis=-1
    )
    return jnp.dot(patches, kernel.reshape(kh * kw * c_in, c_out))


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2×2 max-pooling with stride 2 of ``[B, H, W, C]`` (H, W even) by reshape and max."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def torch_default_bias_init(fan_in: int) -> nn.initializers.Initializer:
    """PyTorch's default bias init, U(−1/√fan_in, 1/√fan_in) (Flax gives no fan-in)."""
    bound = 1.0 / fan_in**0.5

    def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class _PatchConv(nn.Module):
    """3×3 "VALID" convolution with bias (:func:`patch_conv`), PyTorch-initialised."""

    features: int
    fan_in: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (3, 3, x.shape[-1], self.features)
        kernel = self.param("kernel", torch_default_kernel_init, shape)
        bias = self.param("bias", torch_default_bias_init(self.fan_in), (self.features,))
        return patch_conv(x, kernel) + bias.reshape(1, 1, 1, -1)


class PyTorchMnistCNN(nn.Module):
    """``[B, 784]`` flattened 28×28 images → ``[B, num_classes]`` logits.

    Attributes:
      num_classes: number of logits (10: MNIST and Fashion-MNIST share one head).
      conv_dropout: rate of the channel-wise dropout after the pooling (0.25).
      dense_dropout: rate of the element-wise dropout after fc 128 (0.5).

    Parameters: ``conv_0`` (3, 3, 1, 32), ``conv_1`` (3, 3, 32, 64), ``dense_0``
    (9216, 128), ``head`` (128, 10), each with a bias.
    """

    num_classes: int = 10
    conv_dropout: float = 0.25
    dense_dropout: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits; ``train=True`` switches dropout on (needs the ``"dropout"`` rng)."""
        x = x.reshape((x.shape[0], 28, 28, 1))
        for i, (c_in, c_out) in enumerate([(1, 32), (32, 64)]):
            x = _PatchConv(c_out, 9 * c_in, name=f"conv_{i}")(x)
            x = nn.relu(x)
        x = max_pool_2x2(x)
        # Dropout2d: one draw per (example, channel), broadcast over height and width.
        x = nn.Dropout(self.conv_dropout, broadcast_dims=(1, 2), deterministic=not train)(x)
        x = x.reshape((x.shape[0], -1))
        fan_in = x.shape[-1]
        x = nn.Dense(
            128,
            kernel_init=torch_default_kernel_init,
            bias_init=torch_default_bias_init(fan_in),
            name="dense_0",
        )(x)
        x = nn.Dropout(self.dense_dropout, deterministic=not train)(nn.relu(x))
        return nn.Dense(
            self.num_classes,
            kernel_init=torch_default_kernel_init,
            bias_init=torch_default_bias_init(128),
            name="head",
        )(x)
