"""SDMLP: Sparse Distributed Memory as a one-hidden-layer MLP, and its baselines.

The model of Bricken et al. (ICLR 2023), as the authors' code runs it
(``TrentBrick/SDMContinualLearner`` ``models/SDM_Base.py``, ``models/TopK_Act.py``,
``models/Base_Model.py``; Bricken et al., arXiv 2303.11934, §4 Eq. 4 and App. A.1)::

    x ← relu(x);  x ← x / ‖x‖₂                      (positive, normalize)
    h = W₁ x                                         (no bias)
    a = relu(h);  v = stop_gradient(k_eff-th largest of a)
    out = relu(a − r ⊙ v)                            (inhibition="subtract")
        = a · 1[a ≥ v]                               (inhibition="mask")
    logits = W₂ out                                  (no bias)

and after every optimizer step (and at init) :func:`sdm_projection`: every parameter
clamped at 0, then every hidden neuron's weight vector L2-normalised.

k schedules (``schedule``):

* ``"gaba"`` (the paper's SDMLP, ``GABA_SWITCH_ACT_BIN``): ``k_eff = k + 1`` and a
  per-neuron coefficient ``r = clip(−1 + 2c/T, −1, 1)`` from the neuron's activation count
  c (:func:`jaxcl.schedules.gaba_coefficient`), so exactly k neurons fire once every
  neuron has switched. The counts live in the ``"counters"`` collection and grow during
  training steps only (see the note on validation passes below).
* ``"linear"`` (``LINEAR_DECAY_*``): r = 1 and k annealed from ``k_start`` (default: the
  width) to k over ``transition_epochs`` global epochs (:func:`jaxcl.schedules.linear_k`);
  the module needs ``epoch=`` during training (``jaxcl.learners.supervised`` passes it) and
  remembers the last one for evaluation.
* ``"constant"`` (``FLAT_*``): r = 1 and k fixed.

As in the authors' code, subtraction without the GABA switch uses ``k_eff = k``, which
leaves k − 1 neurons active (k = 1 leaves none); masking keeps k.

Baselines with the same module: ``k=None`` is a plain ReLU hidden layer (the ReLU MLP,
``CLASSIC_FFN``, with ``hidden_bias=output_bias=True, positive=False, normalize=False``);
the Top-K MLP (``FFN_TOP_K``) is ``schedule="linear", inhibition="mask"`` with biases and
no positivity or normalisation.

Deviation: the authors also count activations during validation passes (their forward pass
has no training check); here counters grow in training steps only, and the experiment
rescales T instead (``experiments/sdm.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcl import _checks, schedules
from jaxcl.activations import topk_mask, topk_subtract
from jaxcl.models._layers import Dense, torch_bias_init, torch_default_init

__all__ = ["INHIBITIONS", "SCHEDULES", "SDMLP", "sdm_projection", "unit_activity"]

Array = jax.Array
PyTree = Any

SCHEDULES = ("gaba", "linear", "constant")
INHIBITIONS = ("subtract", "mask")


def _safe_norm(x: Array, axis: int) -> Array:
    # A zero vector keeps norm 1 (it stays zero) rather than becoming NaN as in torch.
    norm = jnp.linalg.norm(x, axis=axis, keepdims=True)
    return jnp.where(norm > 0, norm, 1.0)


class SDMLP(nn.Module):
    """SDM as an MLP ``in → width (Top-K) → num_classes``; see the module docstring.

    Attributes:
      width: hidden neurons.
      num_classes: output logits.
      k: active neurons after inhibition, ``1 <= k < width``; None for a plain ReLU layer.
      schedule: ``"gaba"``, ``"linear"`` or ``"constant"``.
      inhibition: ``"subtract"`` (SDM) or ``"mask"`` (classic Top-K); ``"gaba"`` needs
        ``"subtract"``.
      gaba_switch_count: T > 0, the activation count at which a neuron's switch is
        complete: it is fully inhibited (:func:`jaxcl.schedules.gaba_coefficient`).
      k_start: first k of the linear schedule (default: ``width``).
      transition_epochs: epochs of the linear schedule, >= 1.
      positive: ReLU the input (the authors' ``all_positive_weights``; pair with
        ``sdm_projection(positive=True)``).
      normalize: L2-normalise the input (``norm_addresses``; pair with
        ``sdm_projection(normalize=True)``).
      hidden_bias: bias in the hidden layer.
      output_bias: bias in the output layer.

    Parameters are ``hidden/kernel`` ``[in, width]`` and ``output/kernel``
    ``[width, num_classes]`` (plus ``bias`` leaves), initialised as PyTorch's
    ``nn.Linear``. Collection ``"counters"`` holds ``activations`` ``[width]`` int32
    (``"gaba"``) or ``epoch`` int32 (``"linear"``).
    """

    width: int = 1000
    num_classes: int = 10
    k: int | None = 10
    schedule: str = "gaba"
    inhibition: str = "subtract"
    gaba_switch_count: float = 5_000_000.0
    k_start: int | None = None
    transition_epochs: int = 200
    positive: bool = True
    normalize: bool = True
    hidden_bias: bool = False
    output_bias: bool = False

    def __post_init__(self):
        _checks.one_of("schedule", self.schedule, SCHEDULES)
        _checks.one_of("inhibition", self.inhibition, INHIBITIONS)
        if self.k is not None:
            k = _checks.positive_int("k", self.k)
            if k >= self.width:
                # The GABA switch subtracts the (k+1)-th value.
                _checks.fail("k", f"below width = {self.width}", k)
            if self.schedule == "gaba":
                _checks.positive("gaba_switch_count", self.gaba_switch_count, scalar=True)
                if self.inhibition != "subtract":
                    _checks.fail(
                        "inhibition",
                        "'subtract' with schedule='gaba' (the switch scales the subtracted value)",
                        self.inhibition,
                    )
            if self.schedule == "linear":
                k_start = self.width if self.k_start is None else self.k_start
                if not k <= _checks.integer("k_start", k_start) <= self.width:
                    _checks.fail("k_start", f"in [k, width] = [{k}, {self.width}]", k_start)
                _checks.positive_int("transition_epochs", self.transition_epochs)
        super().__post_init__()

    def _training(self) -> bool:
        return self.is_mutable_collection("counters") and not self.is_initializing()

    def _current_k(self, epoch: Array | None) -> Array | int:
        """The schedule's k: a static int, or a traced int32 during linear annealing."""
        if self.schedule != "linear":
            return self.k
        last = self.variable("counters", "epoch", lambda: jnp.zeros((), jnp.int32))
        if epoch is None:
            epoch = last.value  # evaluation: the k of the last training epoch
        elif self._training():
            last.value = jnp.asarray(epoch, jnp.int32)
        k_start = self.width if self.k_start is None else self.k_start
        return schedules.linear_k(
            epoch, k_start=k_start, k_end=self.k, transition_epochs=self.transition_epochs
        )

    def _top_k(self, h: Array, epoch: Array | None, valid: Array | None) -> Array:
        k = self._current_k(epoch)
        gaba = self.schedule == "gaba"
        if gaba:
            counts = self.variable(
                "counters", "activations", lambda: jnp.zeros((self.width,), jnp.int32)
            )
            r = schedules.gaba_coefficient(counts.value, switch_count=self.gaba_switch_count)
        else:
            r = 1.0

        def inhibit(k_eff):
            if self.inhibition == "mask":
                return topk_mask(jax.nn.relu(h), k=k_eff)
            return topk_subtract(h, k=k_eff, relu_first=True, stop_gradient=True, coefficient=r)

        if gaba:
            out = inhibit(k + 1)  # subtracting the (k+1)-th value leaves exactly k active
        elif isinstance(k, int):
            out = inhibit(k)
        else:
            # Sorting for a traced k is ~5x slower than top_k: only while annealing.
            out = jax.lax.cond(k == self.k, lambda: inhibit(self.k), lambda: inhibit(k))
        if gaba and self._training():
            fired = out > 0
            if valid is not None:
                fired = fired & valid[:, None]
            counts.value = counts.value + jnp.sum(fired, axis=0, dtype=jnp.int32)
        return out

    @nn.compact
    def __call__(
        self,
        x: Array,
        *,
        epoch: Array | None = None,
        valid: Array | None = None,
        return_hidden: bool = False,
    ) -> Array:
        """Logits ``[B, num_classes]`` (or hidden activity ``[B, width]``).

        Args:
          x: ``[B, in]`` inputs.
          epoch: int32 global epoch (needed by ``schedule="linear"`` in training).
          valid: ``[B]`` bool; padding rows are not counted by the GABA counters.
          return_hidden: return the post-inhibition hidden activity instead of logits.
        """
        if self.positive:
            x = jax.nn.relu(x)
        if self.normalize:
            x = x / _safe_norm(x, axis=-1)
        h = Dense(
            self.width,
            use_bias=self.hidden_bias,
            kernel_init=torch_default_init,
            bias_init=torch_bias_init(x.shape[-1]),
            name="hidden",
        )(x)
        if self.k is None:
            out = jax.nn.relu(h)
        else:
            out = self._top_k(h, epoch, valid)
        if return_hidden:
            return out
        return Dense(
            self.num_classes,
            use_bias=self.output_bias,
            kernel_init=torch_default_init,
            bias_init=torch_bias_init(self.width),
            name="output",
        )(out)


def sdm_projection(params: PyTree, *, positive: bool = True, normalize: bool = True) -> PyTree:
    """SDM's weight constraints, applied after every optimizer step and at init.

    ``positive``: every leaf (both layers and any biases, as the authors' code with
    ``can_enforce_positive_weights_on_bias_terms=True``) becomes ``max(w, 0)``.
    ``normalize``: then each hidden neuron's weight vector (a column of ``hidden/kernel``,
    ``[in, width]``) is divided by its L2 norm; an all-zero column stays zero (the authors'
    code would give NaN). The output layer is not normalised (``norm_values=False``).

    Args:
      params: an :class:`SDMLP`'s ``params``.
      positive: clamp at zero.
      normalize: unit-norm hidden neurons.

    Returns:
      Parameters of the same structure.
    """
    if positive:
        params = jax.tree.map(lambda p: jnp.maximum(p, 0), params)
    if normalize:
        kernel = params["hidden"]["kernel"]
        hidden = {**params["hidden"], "kernel": kernel / _safe_norm(kernel, axis=0)}
        params = {**params, "hidden": hidden}
    return params


def unit_activity(activity: Callable[[Array], Array], x: Array, *, batch_size: int = 1000) -> Array:
    """``[width]`` int32: for each unit, how many rows of ``x`` make it fire (> 0).

    A unit with count 0 over a dataset is *dead* on it: never in the Top-K for any input
    (the SDM paper's App. D definition, on the test images).

    Args:
      activity: ``[B, D] -> [B, width]`` hidden activity, e.g.
        ``lambda xb: model.apply(variables, xb, return_hidden=True)`` for an
        :class:`SDMLP` (evaluation mode: counters are read, not updated) or a FlyModel's
        Kenyon-cell code.
      x: ``[N, D]`` inputs, processed in chunks of ``batch_size`` (N need not divide).
      batch_size: rows per call of ``activity``.
    """
    n = x.shape[0]
    batch_size = min(batch_size, n)
    pad = -n % batch_size
    xs = jnp.pad(x, ((0, pad), (0, 0))).reshape(-1, batch_size, x.shape[-1])
    valid = (jnp.arange(n + pad) < n).reshape(-1, batch_size)

    def body(total, xv):
        xb, vb = xv
        fired = (activity(xb) > 0) & vb[:, None]
        return total + jnp.sum(fired, axis=0, dtype=jnp.int32), None

    width = jax.eval_shape(activity, xs[0]).shape[-1]
    return jax.lax.scan(body, jnp.zeros((width,), jnp.int32), (xs, valid))[0]
