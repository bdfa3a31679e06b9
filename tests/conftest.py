"""Strict numerics for the whole suite: implicit rank promotion is a bug here."""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
