"""Schedules of SDM's Top-K: epoch-linear k annealing and the per-neuron GABA switch.

Both are pure functions of a counter (the global epoch, or a neuron's activation count), so
they run inside ``jit``/``vmap``/``lax.scan`` with the counter as a traced value.

References:
  Bricken et al., "Sparse Distributed Memory is a Continual Learner", ICLR 2023,
  arXiv 2303.11934, Eq. 4 and App. B.3; code ``TrentBrick/SDMContinualLearner``
  ``models/TopK_Act.py`` (``Top_K.get_curr_k`` and the ``GABA_SWITCH_ACT_BIN`` branch).
"""

from __future__ import annotations

import operator
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array


def _check_int(name: str, value: Any, minimum: int) -> int:
    try:
        ivalue = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be a Python int, got {value!r}.") from None
    if ivalue < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {name}={ivalue}.")
    return ivalue


def linear_k(epoch: jax.typing.ArrayLike, *, k_start: int, k_end: int, transition_epochs: int):
    """k annealed linearly from ``k_start`` to ``k_end`` over ``transition_epochs`` epochs.

    ``k(e) = int(clip(k_start − (k_start − k_end)·e / transition_epochs, k_end, k_start))``,
    computed in integer arithmetic (``k_start − ceil(Δ·e / E)``) so that no float rounding
    moves a step. ``e`` is the *global* epoch (as in the authors' code), so the decay happens
    during the first task(s) and k stays at ``k_end`` afterwards.

    Args:
      epoch: int scalar (traced or not), the global epoch index; negative values act as 0.
      k_start: k at epoch 0 (the authors use the layer width).
      k_end: the final k, ``1 <= k_end <= k_start``.
      transition_epochs: epochs to reach ``k_end``, >= 1.

    Returns:
      int32 scalar array.

    Example:
      >>> [int(linear_k(e, k_start=1000, k_end=10, transition_epochs=200)) for e in (0, 1, 200)]
      [1000, 995, 10]
    """
    k_end = _check_int("k_end", k_end, 1)
    k_start = _check_int("k_start", k_start, k_end)
    transition_epochs = _check_int("transition_epochs", transition_epochs, 1)
    e = jnp.maximum(jnp.asarray(epoch, jnp.int32), 0)
    drop = ((k_start - k_end) * e + transition_epochs - 1) // transition_epochs
    return jnp.clip(k_start - drop, k_end, k_start).astype(jnp.int32)


def check_gaba_threshold(threshold: float) -> float:
    """Returns ``threshold`` as a float if it is > 0, else raises ValueError."""
    if not threshold > 0:
        raise ValueError(
            f"gaba_threshold (T, activations to switch) must be > 0, got T={threshold!r}."
        )
    return float(threshold)


def gaba_coefficient(counts: jax.typing.ArrayLike, *, threshold: float) -> Array:
    """The GABA switch: each neuron's inhibition coefficient from its activation count.

    ``r_i = clip(−1 + 2·c_i / T, −1, 1)``. A new neuron (c = 0) has r = −1: the inhibitory
    interneuron *excites* it (``relu(a + v) > 0``, every neuron fires and learns); at
    c = T/2, r = 0 (plain ReLU); from c = T on, r = 1, full Top-K inhibition
    ``relu(a − v)``. The switch is linear in the activation count, so each neuron switches
    at its own pace (App. B.3, ``GABA_SWITCH_ACT_BIN``).

    Args:
      counts: ``[width]`` activation counts (examples for which the neuron fired), any
        numeric dtype.
      threshold: T > 0, the count at which inhibition is complete (authors: 5,000,000 on
        Split-MNIST with 500 epochs per task).

    Returns:
      float32 array of ``counts``' shape, values in [−1, 1].

    Example:
      >>> gaba_coefficient(jnp.array([0, 50, 100, 500]), threshold=100).tolist()
      [-1.0, 0.0, 1.0, 1.0]
    """
    threshold = check_gaba_threshold(threshold)
    c = jnp.asarray(counts, jnp.float32)
    return jnp.clip(-1.0 + 2.0 * c / threshold, -1.0, 1.0)
