"""Flax linen models."""

from jaxcl.models.mlp import MLP as MLP
from jaxcl.models.mlp import StandardizedDense as StandardizedDense
from jaxcl.models.mlp import he_normal as he_normal
from jaxcl.models.mlp import standardize_weight as standardize_weight
