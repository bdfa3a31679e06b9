"""A small convolutional network for 28×28 images, without biases (every weight is a kernel).

The DST experiment's model on Split-(Fashion-)MNIST: each stage is a 3×3 stride-2
convolution (padding 1) and a ReLU, then dense ReLU layers and a linear head. No biases,
no pooling and no normalisation, so a masked subnetwork's output depends on its weights
only (with frozen weights, evaluations of earlier tasks are bit-identical).

The convolutions are :class:`jaxcl.models._layers.Conv` (on CPU patches × kernel matrix
products, much faster than a native convolution under the engine's ``vmap`` over seeds).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from jaxcl.models._layers import Conv, Dense, he_normal

__all__ = ["CNN"]


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
            x = nn.relu(Dense(width, use_bias=False, kernel_init=he_normal, name=f"dense_{i}")(x))
        return Dense(self.num_classes, use_bias=False, kernel_init=he_normal, name="head")(x)
