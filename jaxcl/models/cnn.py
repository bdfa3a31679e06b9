"""A small convolutional network for 28×28 images, without biases (every weight is a kernel).

The DST experiment's model on Split-(Fashion-)MNIST: each stage is a 3×3 stride-2
convolution (padding 1) and a ReLU, then dense ReLU layers and a linear head. No biases,
no pooling and no normalisation, so a masked subnetwork's output depends on its weights
only (with frozen weights, evaluations of earlier tasks are bit-identical).

The convolutions are computed as patches × kernel matrix products (:func:`conv2d`): under
the engine's ``vmap`` over seeds, XLA:CPU turns a native convolution with a per-seed
kernel into a grouped convolution that is several times slower than the batched matrix
product this gives.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcl.models.mlp import he_normal


def conv2d(x: jax.Array, kernel: jax.Array, *, stride: int = 1, padding: int = 0) -> jax.Array:
    """2-D cross-correlation as one matrix product: ``patches(x) @ kernel.reshape(-1, O)``.

    Equals ``lax.conv_general_dilated(x, kernel, (stride, stride), [(padding, padding)] * 2,
    dimension_numbers=("NHWC", "HWIO", "NHWC"))`` (PyTorch's symmetric zero padding).

    Args:
      x: ``[B, H, W, C]``.
      kernel: ``[kh, kw, C, O]``.
      stride: the same in both spatial dimensions.
      padding: zeros added on every side.

    Returns:
      ``[B, H', W', O]`` with ``H' = (H + 2·padding − kh) // stride + 1`` (same for W).
    """
    kh, kw, c, o = kernel.shape
    xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    h = (xp.shape[1] - kh) // stride + 1
    w = (xp.shape[2] - kw) // stride + 1
    # Patch features in (i, j, c) order, matching the kernel's HWIO layout.
    patches = jnp.concatenate(
        [
            xp[:, i : i + stride * (h - 1) + 1 : stride, j : j + stride * (w - 1) + 1 : stride]
            for i in range(kh)
            for j in range(kw)
        ],
        axis=-1,
    )
    y = patches.reshape(-1, kh * kw * c) @ kernel.reshape(kh * kw * c, o)
    return y.reshape(x.shape[0], h, w, o)


class Conv(nn.Module):
    """A bias-free 3×3-style convolution by :func:`conv2d`; parameter ``kernel [kh, kw, in,
    out]`` (the layout of :class:`flax.linen.Conv`), He-normal."""

    features: int
    kernel_size: int = 3
    stride: int = 1
    padding: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (self.kernel_size, self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", he_normal, shape)
        return conv2d(x, kernel, stride=self.stride, padding=self.padding)


class CNN(nn.Module):
    """``[B, H·W·C]`` flattened images → ``[B, num_classes]`` logits.

    Attributes:
      num_classes: number of logits.
      image_shape: ``(H, W, C)`` of the flattened inputs.
      channels: output channels of each 3×3 stride-2 convolution (padding 1, ReLU).
      hidden: widths of the dense ReLU layers after flattening.

    Parameters are named ``conv_0, …, dense_0, …, head``, each with a ``kernel`` (conv
    ``[3, 3, in, out]``, dense ``[in, out]``), He-normal initialised. The defaults map
    28×28×1 → 14×14×16 → 7×7×32 → 64 → 10 (105,744 weights).
    """

    num_classes: int = 10
    image_shape: tuple[int, int, int] = (28, 28, 1)
    channels: Sequence[int] = (16, 32)
    hidden: Sequence[int] = (64,)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0], *self.image_shape))
        for i, c in enumerate(self.channels):
            x = nn.relu(Conv(c, stride=2, name=f"conv_{i}")(x))
        x = x.reshape((x.shape[0], -1))
        for i, width in enumerate(self.hidden):
            x = nn.relu(
                nn.Dense(width, use_bias=False, kernel_init=he_normal, name=f"dense_{i}")(x)
            )
        return nn.Dense(self.num_classes, use_bias=False, kernel_init=he_normal, name="head")(x)
