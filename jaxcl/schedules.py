"""Schedules: pure functions of a step counter, for optimizers and SDM's Top-K.

All are pure functions of a counter (the global epoch, a neuron's activation count, an
optimizer's step count), so they run inside ``jit``/``vmap``/``lax.scan`` with the counter
as a traced value, and as optax schedules (``learning_rate=schedule``, or any
hyperparameter of ``optax.inject_hyperparams``).

* :func:`linear_k` and :func:`gaba_coefficient`: SDM's epoch-linear k annealing and the
  per-neuron GABA switch (Bricken et al., "Sparse Distributed Memory is a Continual
  Learner", ICLR 2023, arXiv 2303.11934, Eq. 4 and App. B.3; code
  ``TrentBrick/SDMContinualLearner`` ``models/TopK_Act.py``, ``Top_K.get_curr_k`` and the
  ``GABA_SWITCH_ACT_BIN`` branch).
* :func:`switch_at`: one value before a step, another from it on (e.g. a hyperparameter
  per task of a two-task stream).
* :func:`step_decay`: a learning rate multiplied by a factor at fractions of training
  (×0.1 at 1/2 and 3/4, as the PyTorch ``MultiStepLR`` recipes, e.g. Yildirim et al.,
  CPAL 2024, code ``muratonuryildirim/CL-with-DST`` ``cifar100.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxcl import _checks

__all__ = ["gaba_coefficient", "linear_k", "step_decay", "switch_at"]

Array = jax.Array


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
    k_end = _checks.positive_int("k_end", k_end)
    k_start = _checks.integer("k_start", k_start)
    if k_start < k_end:
        _checks.fail("k_start", f"an integer >= k_end = {k_end}", k_start)
    transition_epochs = _checks.positive_int("transition_epochs", transition_epochs)
    e = jnp.maximum(jnp.asarray(epoch, jnp.int32), 0)
    drop = ((k_start - k_end) * e + transition_epochs - 1) // transition_epochs
    return jnp.clip(k_start - drop, k_end, k_start).astype(jnp.int32)


def gaba_coefficient(counts: jax.typing.ArrayLike, *, switch_count: float) -> Array:
    """The GABA switch: each neuron's inhibition coefficient from its activation count.

    ``r_i = clip(−1 + 2·c_i / T, −1, 1)``. A new neuron (c = 0) has r = −1: the inhibitory
    interneuron *excites* it (``relu(a + v) > 0``, every neuron fires and learns); at
    c = T/2, r = 0 (plain ReLU); from c = T on, r = 1, full Top-K inhibition
    ``relu(a − v)``. The switch is linear in the activation count, so each neuron switches
    at its own pace (App. B.3, ``GABA_SWITCH_ACT_BIN``).

    Args:
      counts: ``[width]`` activation counts (examples for which the neuron fired), any
        numeric dtype.
      switch_count: T > 0, the count at which the switch is complete, i.e. inhibition
        is full (authors: 5,000,000 on Split-MNIST with 500 epochs per task).

    Returns:
      float32 array of ``counts``' shape, values in [−1, 1].

    Example:
      >>> gaba_coefficient(jnp.array([0, 50, 100, 500]), switch_count=100).tolist()
      [-1.0, 0.0, 1.0, 1.0]
    """
    switch_count = _checks.positive("switch_count", switch_count, scalar=True)
    c = jnp.asarray(counts, jnp.float32)
    return jnp.clip(-1.0 + 2.0 * c / switch_count, -1.0, 1.0)


def switch_at(step: int, before: Any, after: Any) -> Callable[[jax.typing.ArrayLike], Array]:
    """The schedule ``count -> before if count < step else after`` (``jnp.where``).

    ``before`` and ``after`` are scalars of one kind (numbers, or bools for a switch on
    and off), e.g. a threshold for the steps of a first task and another after it.

    Example:
      >>> threshold = switch_at(3, 0.5, 0.0)
      >>> [float(threshold(count)) for count in (0, 2, 3, 9)]
      [0.5, 0.5, 0.0, 0.0]
    """
    step = _checks.integer("step", step)
    return lambda count: jnp.where(count < step, before, after)


def step_decay(
    init_value: float,
    *,
    total_steps: int,
    fractions: Sequence[float] = (0.5, 0.75),
    factor: float = 0.1,
) -> optax.Schedule:
    """``init_value`` multiplied by ``factor`` at each of ``fractions`` of ``total_steps``.

    The steps are ``round(fraction · total_steps)`` (an optax piecewise-constant
    schedule); fractions that round to the same step multiply there once.

    Raises:
      ValueError: ``init_value`` or ``factor`` negative or not finite (it is a learning
        rate), a fraction outside [0, 1] (a step after the task would never come), or
        ``total_steps`` not a positive integer.

    Example:
      >>> lr = step_decay(1e-3, total_steps=8)  # ×0.1 at steps 4 and 6
      >>> [round(float(lr(count)), 7) for count in (3, 4, 5, 6)]
      [0.001, 0.0001, 0.0001, 1e-05]
    """
    total_steps = _checks.positive_int("total_steps", total_steps)
    init_value = _checks.non_negative("init_value", init_value, scalar=True)
    factor = _checks.non_negative("factor", factor, scalar=True)
    fractions = [_checks.in_range("fractions", f, 0, 1, scalar=True) for f in fractions]
    boundaries = {round(fraction * total_steps): factor for fraction in fractions}
    return optax.piecewise_constant_schedule(init_value, boundaries)
