"""Building blocks shared by the models: initialisers and convolution as a matrix product.

Initialisers:

* :data:`he_normal`: N(0, 2 / fan_in), an exact normal (``jax.nn.initializers.he_normal``
  is truncated), as ``torch.nn.init.kaiming_normal_``.
* :data:`torch_default_init`: PyTorch's default weight init of ``nn.Linear`` and
  ``nn.Conv2d``, ``kaiming_uniform_(a=√5)``: U(−b, b) with
  b = √(6 / ((1 + a²) fan_in)) = 1/√fan_in (``torch/nn/modules/linear.py``
  ``Linear.reset_parameters``, ``torch/nn/modules/conv.py`` ``_ConvNd.reset_parameters``).
* :func:`torch_bias_init`: their default bias init, U(−1/√fan_in, 1/√fan_in) over the
  *weight's* fan-in, which a Flax bias initialiser (given the bias shape only) cannot see.

Convolution (:func:`conv2d`, the :class:`Conv` layer): patches × kernel matrix products.
Under the engine's ``vmap`` over seeds, XLA:CPU turns a native convolution with a per-seed
kernel into a grouped convolution that is several times slower than the batched matrix
product this gives (10–20× for the CLASSP CNN's training step); on accelerators the
difference is small.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["Conv", "conv2d", "he_normal", "torch_bias_init", "torch_default_init"]

Initializer = Callable[..., jax.Array]

he_normal: Initializer = jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal")
torch_default_init: Initializer = jax.nn.initializers.variance_scaling(
    1.0 / 3.0, "fan_in", "uniform"
)


def torch_bias_init(fan_in: int) -> Initializer:
    """PyTorch's default bias init for a layer with ``fan_in`` inputs per output."""
    bound = 1.0 / fan_in**0.5

    def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def conv2d(x: jax.Array, kernel: jax.Array, *, stride: int = 1, padding: int = 0) -> jax.Array:
    """2-D cross-correlation as one matrix product: ``patches(x) @ kernel.reshape(-1, O)``.

    Equals ``lax.conv_general_dilated(x, kernel, (stride, stride), [(padding, padding)] * 2,
    dimension_numbers=("NHWC", "HWIO", "NHWC"))`` (PyTorch's symmetric zero padding) up to
    float rounding.

    Args:
      x: ``[B, H, W, C]``.
      kernel: ``[kh, kw, C, O]`` (Flax's HWIO layout).
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
    """A square convolution by :func:`conv2d`, with an optional PyTorch-initialised bias.

    Parameters: ``kernel`` ``[k, k, in, features]`` (the layout of
    :class:`flax.linen.Conv`) and, with ``use_bias``, ``bias`` ``[features]`` drawn by
    :func:`torch_bias_init` over the kernel's fan-in ``k·k·in``.

    Attributes:
      features: output channels.
      kernel_size: k.
      stride: the same in both spatial dimensions.
      padding: zeros added on every side (0 is "VALID").
      use_bias: add a bias.
      kernel_init: the kernel's initialiser.
    """

    features: int
    kernel_size: int = 3
    stride: int = 1
    padding: int = 1
    use_bias: bool = False
    kernel_init: Initializer = he_normal

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Args: x ``[B, H, W, in]``. Returns: ``[B, H', W', features]``."""
        shape = (self.kernel_size, self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, shape)
        y = conv2d(x, kernel, stride=self.stride, padding=self.padding)
        if not self.use_bias:
            return y
        fan_in = self.kernel_size * self.kernel_size * x.shape[-1]
        bias = self.param("bias", torch_bias_init(fan_in), (self.features,))
        return y + bias.reshape(1, 1, 1, -1)
