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

Speed: the convolutions are :class:`jaxcl.models._layers.Conv` (patches × kernel matrix
products on CPU) and the pooling a reshape and max, the same maths as
``lax.conv_general_dilated`` and ``nn.max_pool``, several times faster on XLA:CPU.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxcl.models._layers import Conv, Dense, torch_bias_init, torch_default_init

__all__ = ["PyTorchMnistCNN", "max_pool_2x2"]


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2×2 max-pooling with stride 2 of ``[B, H, W, C]`` (H, W even) by reshape and max."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


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
        for i, c_out in enumerate([32, 64]):
            x = Conv(
                c_out, padding=0, use_bias=True, kernel_init=torch_default_init, name=f"conv_{i}"
            )(x)
            x = nn.relu(x)
        x = max_pool_2x2(x)
        # Dropout2d: one draw per (example, channel), broadcast over height and width.
        x = nn.Dropout(self.conv_dropout, broadcast_dims=(1, 2), deterministic=not train)(x)
        x = x.reshape((x.shape[0], -1))
        fan_in = x.shape[-1]
        x = Dense(
            128,
            kernel_init=torch_default_init,
            bias_init=torch_bias_init(fan_in),
            name="dense_0",
        )(x)
        x = nn.Dropout(self.dense_dropout, deterministic=not train)(nn.relu(x))
        return Dense(
            self.num_classes,
            kernel_init=torch_default_init,
            bias_init=torch_bias_init(128),
            name="head",
        )(x)
