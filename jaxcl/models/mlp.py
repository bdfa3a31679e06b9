"""Multi-layer perceptrons, including the weight-standardised Hard ASH MLP (784-1000-10).

The Hard ASH model (``LesserScholar/hard-ash`` ``02_run_experiments.py`` L53-55, L115-141):

* no biases anywhere;
* every weight matrix He-normal, N(0, 1)·sqrt(2 / fan_in), including the output layer;
* the hidden layer's weights are standardised *inside the forward pass* (per output unit,
  over the input axis); the stored weights are unconstrained and gradients flow through
  the standardisation; the output layer is a plain linear map.

``MLP()`` with its defaults and an activation is that model, e.g.
``MLP(activation=get_activation("hard_ash"))``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcl.models._layers import Initializer, he_normal, matmul, matmul_vjp

__all__ = ["MLP", "StandardizedDense", "standardize_weight", "standardized_matmul"]

Array = jax.Array


def standardize_weight(kernel: Array, *, axis: int = 0, eps: float = 0.0) -> Array:
    """Weight standardisation per output unit: ``W̃ = (W − mean) / ‖W − mean‖₂``.

    Mean and L2 norm are taken over ``axis``, the *input* axis. Flax kernels are
    ``[in, out]``, so the default ``axis=0`` standardises each output unit's incoming weights
    (the Hard ASH code stores ``[out, in]`` and uses axis 1). The result has zero mean and
    unit L2 norm along ``axis``. Differentiable; no stop-gradient.

    Args:
      kernel: weight array, e.g. ``[in, out]``.
      axis: the input (fan-in) axis.
      eps: added to the norm; 0.0 (the default, as in the code) gives NaN for a constant
        column.

    Returns:
      Array of ``kernel``'s shape and dtype.

    References:
      ``LesserScholar/hard-ash`` ``02_run_experiments.py`` ``weight_norm`` (L115-121).
    """
    centred = kernel - jnp.mean(kernel, axis=axis, keepdims=True)
    norm = jnp.linalg.norm(centred, axis=axis, keepdims=True)
    return centred / (norm + eps)


@jax.custom_vjp
def standardized_matmul(x: Array, kernel: Array) -> Array:
    """``x · standardize_weight(kernel)`` without materialising the standardised kernel.

    Uses ``x·(W − μ)/ν = (x·W − (Σᵢ xᵢ) μ) / ν`` with the per-output-unit mean μ and norm
    ν = ‖W − μ‖₂ (ν by the two-pass formula, fused into one reduction). Algebraically
    identical to ``jnp.dot(x, standardize_weight(kernel))``; it saves the element-wise
    passes over the whole kernel (forward and backward) that dominate a small-batch step
    once seeds are vmapped.

    The gradient is written out (a ``jax.custom_vjp``; reverse mode only). With the
    output's gradient G, Ĝ = G / ν and y the output::

        ∂x = Ĝ Wᵀ − (Ĝ μᵀ) 1ᵀ
        ∂W = xᵀ Ĝ − 1 (Σ_b s_b Ĝ_b) / K − (W − μ) (Σ_b G_b ⊙ y_b) / ν²

    (s the row sums of x, K the fan-in; the first two terms of ∂W are one product, of x
    with its row means subtracted), the gradient of the forward formula up to float
    rounding. Automatic differentiation also carries μ's share of ν's gradient,
    ``Σᵢ (W − μ)ᵢ = 0`` times a factor, and keeps W − μ for the backward pass: more
    passes over the kernel (~15 % of the Hard ASH MLP's step with 5 vmapped seeds).

    Args:
      x: ``[..., in]``.
      kernel: ``[in, out]``.

    Returns:
      ``[..., out]``.
    """
    return _standardized_forward(x, kernel)[0]


def _standardized_forward(x: Array, kernel: Array) -> tuple[Array, tuple]:
    mean = jnp.mean(kernel, axis=0, keepdims=True)
    norm = jnp.linalg.norm(kernel - mean, axis=0)
    lead = (1,) * (x.ndim - 1)  # explicit ranks: [..., 1] against [1, ..., out]
    row_sums = jnp.sum(x, axis=-1, keepdims=True)
    y = (matmul(x, kernel) - row_sums * mean.reshape(*lead, -1)) / norm.reshape(*lead, -1)
    return y, (x, kernel, mean, norm, row_sums, y)


def _standardized_backward(residuals: tuple, g: Array) -> tuple[Array, Array]:
    x, kernel, mean, norm, row_sums, y = residuals
    lead = (1,) * (x.ndim - 1)
    scaled = g / norm.reshape(*lead, -1)
    # Ĝ Wᵀ, and xᵀĜ − 1 (sᵀĜ) / K as one product: x with its row means subtracted.
    dx, dkernel = matmul_vjp(x - row_sums / x.shape[-1], kernel, scaled)
    dx = dx - jnp.sum(scaled * mean.reshape(*lead, -1), axis=-1, keepdims=True)
    # (W − μ) c as W c − μ c: the forward's W − μ then lives inside ν's reduction only,
    # not as a kernel-sized array kept for the backward pass.
    # Σ_b G_b ⊙ y_b as a product with ones: XLA:CPU reduces over the batch axis slowly.
    products = (g * y).reshape(-1, g.shape[-1])
    sums = jnp.ones((1, products.shape[0]), products.dtype) @ products  # [1, out], as mean
    scale = -sums / jnp.square(norm)[None]
    return dx, dkernel - mean * scale + kernel * scale


standardized_matmul.defvjp(_standardized_forward, _standardized_backward)


class StandardizedDense(nn.Module):
    """Linear layer ``y = x · W̃ (+ b)`` with optional weight standardisation of W.

    The stored parameter ``kernel`` ``[in, out]`` is unconstrained; when ``standardize`` is
    true the forward pass uses ``standardize_weight(kernel)`` (zero mean, unit L2 norm per
    output unit, over the input axis).

    Attributes:
      features: number of output units.
      use_bias: add a bias (zeros-initialised by default).
      standardize: standardise the kernel in the forward pass.
      kernel_init: initialiser for the ``[in, out]`` kernel (default exact He-normal).
      bias_init: initialiser for the bias.
      param_dtype: dtype of the parameters.
    """

    features: int
    use_bias: bool = False
    standardize: bool = True
    kernel_init: Initializer = he_normal
    bias_init: Initializer = nn.initializers.zeros
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Args: x ``[..., in]``. Returns: ``[..., features]``."""
        kernel = self.param(
            "kernel", self.kernel_init, (x.shape[-1], self.features), self.param_dtype
        )
        if self.standardize:
            y = standardized_matmul(x, kernel)
        else:
            y = matmul(x, kernel)
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            y = y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))  # explicit rank
        return y


class MLP(nn.Module):
    """MLP ``in → hidden[0] → … → hidden[-1] → num_classes`` returning logits.

    Every hidden layer is ``activation(StandardizedDense(...)(x))``; the output layer is a
    plain (never standardised) linear layer without activation. The defaults are the Hard
    ASH model: one hidden layer of 1000 units, no biases, exact He-normal init everywhere,
    weight standardisation of the hidden layer in the forward pass.

    Activations that use statistics across units (``hard_ash``, ``topk_*``, ``lwta``) must
    act on the last axis, as the jaxcl activations do by default; leading axes are batch.

    Attributes:
      hidden: widths of the hidden layers (their number is the depth).
      num_classes: number of output logits.
      use_bias: biases in every layer.
      activation: function applied after every hidden layer.
      weight_standardize: standardise the hidden layers' weights (not the output layer's).
      kernel_init: initialiser of every kernel ``[in, out]``.

    Parameters are named ``hidden_0, …, hidden_{L−1}, output``, each with a ``kernel``.
    """

    hidden: Sequence[int] = (1000,)
    num_classes: int = 10
    use_bias: bool = False
    activation: Callable[[Array], Array] = jax.nn.relu
    weight_standardize: bool = True
    kernel_init: Initializer = he_normal

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Args: x ``[..., in]`` (flattened, preprocessed). Returns: logits ``[..., classes]``."""
        for i, width in enumerate(self.hidden):
            x = StandardizedDense(
                width,
                use_bias=self.use_bias,
                standardize=self.weight_standardize,
                kernel_init=self.kernel_init,
                name=f"hidden_{i}",
            )(x)
            x = self.activation(x)
        return StandardizedDense(
            self.num_classes,
            use_bias=self.use_bias,
            standardize=False,
            kernel_init=self.kernel_init,
            name="output",
        )(x)
