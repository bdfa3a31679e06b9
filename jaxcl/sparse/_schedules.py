"""The death-rate (prune fraction) schedule of dynamic sparse training."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cosine_death_rate(
    step: jax.typing.ArrayLike,
    total_steps: jax.typing.ArrayLike,
    *,
    initial: float = 0.5,
    final: float = 0.005,
) -> jax.Array:
    r"""Prune fraction cosine-annealed over a task.

    .. math::

      r(s) = r_{\min} + (r_0 - r_{\min})\,\tfrac12\bigl(1 + \cos(\pi \min(s, S) / S)\bigr)

    for step s of S, i.e. PyTorch's ``CosineAnnealingLR`` that the authors step once per
    batch (``core.py`` ``DeathCosineDecay``): ``r(0) = initial``, ``r(S) = final``, held
    at ``final`` after S.

    Args:
      step: int scalar, updates taken in the task so far.
      total_steps: int scalar S ≥ 1, updates in the task; may be traced.
      initial: r₀ (0.5 in the paper).
      final: r_min (0.005 in the paper).

    Returns:
      float32 scalar.
    """
    total = jnp.maximum(jnp.asarray(total_steps, jnp.float32), 1.0)
    # s · (1/S), not s / S: XLA turns a division by a constant S into this product, so a
    # traced S (the engine's Batch.task_steps) gives the same bits as a constant one.
    frac = jnp.clip(jnp.asarray(step, jnp.float32) * (1.0 / total), 0.0, 1.0)
    return final + (initial - final) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
