"""Losses and logit masking, shared by training and evaluation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxcl.types import Batch

__all__ = ["mask_logits", "masked_mean_cross_entropy"]


def mask_logits(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """Sets the logits outside ``mask`` to the dtype's lowest value (never chosen)."""
    return jnp.where(mask, logits, jnp.finfo(logits.dtype).min)


def masked_mean_cross_entropy(logits: jax.Array, batch: Batch) -> jax.Array:
    """Mean softmax cross-entropy over the batch's valid examples (padding excluded)."""
    logits = mask_logits(logits, batch.logit_mask)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch.y)
    valid = batch.valid.astype(losses.dtype)
    return jnp.sum(losses * valid) / jnp.maximum(jnp.sum(valid), 1.0)
