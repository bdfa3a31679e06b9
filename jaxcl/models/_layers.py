"""Building blocks shared by the models: initialisers, matrix products and convolution.

Initialisers:

* :data:`he_normal`: N(0, 2 / fan_in), an exact normal (``jax.nn.initializers.he_normal``
  is truncated), as ``torch.nn.init.kaiming_normal_``.
* :data:`torch_default_init`: PyTorch's default weight init of ``nn.Linear`` and
  ``nn.Conv2d``, ``kaiming_uniform_(a=√5)``: U(−b, b) with
  b = √(6 / ((1 + a²) fan_in)) = 1/√fan_in (``torch/nn/modules/linear.py``
  ``Linear.reset_parameters``, ``torch/nn/modules/conv.py`` ``_ConvNd.reset_parameters``).
* :func:`torch_bias_init`: their default bias init, U(−1/√fan_in, 1/√fan_in) over the
  *weight's* fan-in, which a Flax bias initialiser (given the bias shape only) cannot see.

Products: :func:`matmul` (and the :class:`Dense` layer that uses it), a matrix product
whose kernel gradient needs no transpose; convolution (:func:`conv2d`, the :class:`Conv`
layer) as patches (:func:`im2col`) × kernel matrix products on CPU, where the engine's
``vmap`` over seeds makes a native convolution a slow grouped one, and native on
accelerators.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcl import _checks

__all__ = [
    "Conv",
    "Dense",
    "conv2d",
    "dense_dot_general",
    "he_normal",
    "im2col",
    "matmul",
    "matmul_vjp",
    "torch_bias_init",
    "torch_default_init",
]

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


@jax.custom_vjp
def matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``x @ kernel`` (``x`` ``[..., K]``, ``kernel`` ``[K, N]``) whose kernel gradient is
    computed in the kernel's own layout.

    The same product as ``lax.dot_general(x, kernel, (((x.ndim − 1,), (0,)), ((), ())))``,
    and the same gradients up to float rounding. JAX differentiates that product into a
    ``[N, K]`` matrix product and a transpose to ``[K, N]``; XLA:CPU runs the transpose as
    a copy (fused into the optimizer's element-wise passes, where it is slower still),
    which costs as much as the product itself for a large kernel (SDMLP's 784 × 10 000).
    Here the kernel gradient is the one product ``xᵀ g`` (contracting the leading axes),
    which every backend runs as a matrix product with a transposed operand. Reverse mode
    only (a ``jax.custom_vjp``): forward-mode derivatives (``jax.jvp``) are not defined.

    Args:
      x: ``[..., K]``.
      kernel: ``[K, N]``.

    Returns:
      ``[..., N]``.
    """
    return jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


def _matmul_forward(x: jax.Array, kernel: jax.Array) -> tuple[jax.Array, tuple]:
    return matmul(x, kernel), (x, kernel)


def matmul_vjp(x: jax.Array, kernel: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(∂x, ∂kernel)`` of :func:`matmul` for the output's gradient ``g``: ``g kernelᵀ``
    and ``xᵀ g`` (contracting the leading axes), each one matrix product."""
    lead = tuple(range(x.ndim - 1))
    dx = jax.lax.dot_general(g, kernel, (((g.ndim - 1,), (1,)), ((), ())))
    dkernel = jax.lax.dot_general(x, g, ((lead, lead), ((), ())))
    return dx, dkernel


matmul.defvjp(_matmul_forward, lambda residuals, g: matmul_vjp(*residuals, g))


def dense_dot_general(
    lhs: jax.Array,
    rhs: jax.Array,
    dimension_numbers: Any,
    precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
    """:func:`matmul` as the ``dot_general`` of :class:`flax.linen.Dense` (see :class:`Dense`).

    Raises:
      ValueError: a contraction other than Dense's ``[..., K] · [K, N]``, or a
        ``precision`` or ``preferred_element_type`` (not supported).
    """
    dense = (((lhs.ndim - 1,), (0,)), ((), ()))
    if dimension_numbers != dense or precision is not None or preferred_element_type is not None:
        _checks.fail(
            "the contraction",
            f"Dense's {dense} at default precision",
            (dimension_numbers, precision, preferred_element_type),
        )
    return matmul(lhs, rhs)


class Dense(nn.Dense):
    """:class:`flax.linen.Dense` whose product is :func:`matmul` (same parameters and init).

    Differentiable in reverse mode to any order (``jax.grad`` of ``jax.grad``), not in
    forward mode (``jax.jvp``, ``jax.jacfwd``): see :func:`matmul`.
    """

    dot_general: Any = dense_dot_general


def conv2d(
    x: jax.Array,
    kernel: jax.Array,
    *,
    stride: int = 1,
    padding: int = 0,
    patches: bool | None = None,
) -> jax.Array:
    """2-D cross-correlation, on CPU as one matrix product ``patches(x) @ kernel.reshape(-1, O)``.

    Equals ``lax.conv_general_dilated(x, kernel, (stride, stride), [(padding, padding)] * 2,
    dimension_numbers=("NHWC", "HWIO", "NHWC"))`` (PyTorch's symmetric zero padding) up to
    float rounding.

    The backend decides how (``patches=None``): on CPU the patch matrix times the kernel by
    :func:`matmul`, because XLA:CPU runs a convolution with a per-seed kernel (the engine's
    ``vmap`` over seeds makes it a grouped convolution) and the gradients of strided
    convolutions many times slower (10–20× for the CLASSP CNN's training step, ~17× for
    ResNet-18's); on GPUs and TPUs the native convolution, for which they have dedicated
    kernels, and which does not write the kh·kw-times larger patch matrix.

    Args:
      x: ``[B, H, W, C]``.
      kernel: ``[kh, kw, C, O]`` (Flax's HWIO layout).
      stride: the same in both spatial dimensions.
      padding: zeros added on every side.
      patches: True for the patch matrix product, False for the native convolution, None
        for the patch matrix product on CPU only.

    Returns:
      ``[B, H', W', O]`` with ``H' = (H + 2·padding − kh) // stride + 1`` (same for W).
    """
    if patches is None:
        patches = jax.default_backend() == "cpu"
    if not patches:
        return jax.lax.conv_general_dilated(
            x,
            kernel,
            (stride, stride),
            [(padding, padding)] * 2,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
    kh, kw, c, o = kernel.shape
    columns = im2col(x, (kh, kw), stride=stride, padding=padding)
    y = matmul(columns.reshape(-1, kh * kw * c), kernel.reshape(kh * kw * c, o))
    return y.reshape(*columns.shape[:3], o)


def im2col(
    x: jax.Array, window: tuple[int, int], *, stride: int = 1, padding: int = 0
) -> jax.Array:
    """The patch matrix of a convolution: ``[B, H, W, C]`` → ``[B, H', W', kh·kw·C]``.

    Entry ``[b, p, q, (i·kw + j)·C + c]`` is the zero-padded ``x[b, p·stride + i, q·stride + j,
    c]``: the features of each patch in ``(i, j, c)`` order, the kernel's HWIO layout, so that
    ``im2col(x, (kh, kw)) @ kernel.reshape(kh·kw·C, O)`` is :func:`conv2d`.
    """
    kh, kw = window
    xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    h = (xp.shape[1] - kh) // stride + 1
    w = (xp.shape[2] - kw) // stride + 1
    return jnp.concatenate(
        [
            xp[:, i : i + stride * (h - 1) + 1 : stride, j : j + stride * (w - 1) + 1 : stride]
            for i in range(kh)
            for j in range(kw)
        ],
        axis=-1,
    )


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
