"""The DST paper's ResNet-18 for 32×32 images (``CL-with-DST`` ``models.py`` ``ResNet18``).

Differences from the ImageNet ResNet-18: a 7×7 stride-2 stem (padding 3) *without*
max-pooling, no biases anywhere, and BatchNorm without affine parameters that always
normalises with the statistics of the current batch (PyTorch ``affine=False,
track_running_stats=False``), at training and at evaluation. Four stages of two basic
blocks, widths 64/128/256/512, strides 1/2/2/2, 1×1 convolution + BN shortcuts where the
shape changes, global average pooling and a bias-free linear head. With 100 classes it has
11,218,112 weights, all prunable (``core.py`` ``Masking.add_module`` masks every parameter
but biases and BatchNorm, and this network has neither).

The convolutions are :class:`jaxcl.models._layers.Conv`: on CPU patches × kernel matrix
products, ~17× faster than XLA:CPU's native convolutions for a training step (their
gradients at stride 2 and, under the engine's ``vmap`` over seeds, grouped convolutions are
slow there); native on accelerators. Parameters are those of :class:`flax.linen.Conv`.

Because normalisation uses batch statistics, a prediction depends on the other examples in
its batch: evaluations of frozen subnetworks are not bit-identical across batchings.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcl.models._layers import Conv, Dense, torch_default_init

__all__ = ["BasicBlock", "ResNet", "ResNet18", "batch_norm"]


def batch_norm(x: jax.Array, *, eps: float = 1e-5) -> jax.Array:
    """``(x − mean) / √(var + eps)`` per channel over every other axis; no parameters.

    The biased (population) variance, as PyTorch's BatchNorm uses to normalise.
    """
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=axes, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def _conv(features: int, kernel: int, stride: int, name: str) -> Conv:
    pad = (kernel - 1) // 2  # PyTorch's symmetric padding, not "SAME" (asymmetric at stride 2)
    return Conv(features, kernel, stride, pad, kernel_init=torch_default_init, name=name)


class BasicBlock(nn.Module):
    """``relu(bn(conv3(relu(bn(conv3(x))))) + shortcut(x))``; the shortcut is 1×1 conv + BN
    when the stride or width changes, else the identity."""

    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.relu(batch_norm(_conv(self.features, 3, self.stride, "conv1")(x)))
        y = batch_norm(_conv(self.features, 3, 1, "conv2")(y))
        if self.stride != 1 or x.shape[-1] != self.features:
            x = batch_norm(_conv(self.features, 1, self.stride, "shortcut")(x))
        return nn.relu(y + x)


class ResNet(nn.Module):
    """``[B, H·W·C]`` flattened images → ``[B, num_classes]`` logits.

    Attributes:
      stage_sizes: basic blocks per stage ((2, 2, 2, 2) for ResNet-18).
      widths: channels per stage.
      num_classes: number of logits.
      image_shape: ``(H, W, C)`` of the flattened inputs.

    Parameters: ``stem``, ``stage{s}_block{b}`` (``conv1``, ``conv2``, maybe ``shortcut``)
    and ``classifier``, each with a ``kernel`` only.
    """

    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    widths: Sequence[int] = (64, 128, 256, 512)
    num_classes: int = 100
    image_shape: tuple[int, int, int] = (32, 32, 3)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape((x.shape[0], *self.image_shape))
        x = nn.relu(batch_norm(_conv(self.widths[0], 7, 2, "stem")(x)))
        for s, (blocks, width) in enumerate(zip(self.stage_sizes, self.widths, strict=True)):
            for b in range(blocks):
                stride = 2 if s > 0 and b == 0 else 1
                x = BasicBlock(width, stride, name=f"stage{s}_block{b}")(x)
        x = jnp.mean(x, axis=(1, 2))
        head = Dense(
            self.num_classes, use_bias=False, kernel_init=torch_default_init, name="classifier"
        )
        return head(x)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2))
