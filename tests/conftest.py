"""Strict numerics for the whole suite: implicit rank promotion is a bug here."""

import os

import jax

os.environ.setdefault("JAXCL_NO_DOWNLOAD", "1")  # tests never download (subprocesses inherit it)

jax.config.update("jax_numpy_rank_promotion", "raise")
