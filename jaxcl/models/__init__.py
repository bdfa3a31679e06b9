"""Flax linen models."""

from jaxcl.models.cnn import CNN as CNN
from jaxcl.models.cnn import conv2d as conv2d
from jaxcl.models.fly import fly_model as fly_model
from jaxcl.models.fly import kenyon_cells as kenyon_cells
from jaxcl.models.mlp import MLP as MLP
from jaxcl.models.mlp import StandardizedDense as StandardizedDense
from jaxcl.models.mlp import he_normal as he_normal
from jaxcl.models.mlp import standardize_weight as standardize_weight
from jaxcl.models.resnet import ResNet as ResNet
from jaxcl.models.resnet import ResNet18 as ResNet18
from jaxcl.models.resnet import batch_norm as batch_norm
from jaxcl.models.sdm import SDMLP as SDMLP
from jaxcl.models.sdm import sdm_projection as sdm_projection
from jaxcl.models.sdm import unit_activity as unit_activity
