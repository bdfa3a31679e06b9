"""Flax linen models, and the FlyModel's Kenyon-cell code (:mod:`jaxcl.models.fly`).

Initialisers (PyTorch's defaults, exact He-normal) and convolution as a matrix product
live once, in :mod:`jaxcl.models._layers`, and are exported here.
"""

from jaxcl.models._layers import Conv as Conv
from jaxcl.models._layers import conv2d as conv2d
from jaxcl.models._layers import he_normal as he_normal
from jaxcl.models._layers import torch_bias_init as torch_bias_init
from jaxcl.models._layers import torch_default_init as torch_default_init
from jaxcl.models.classp_cnn import PyTorchMnistCNN as PyTorchMnistCNN
from jaxcl.models.cnn import CNN as CNN
from jaxcl.models.fly import kenyon_cells as kenyon_cells
from jaxcl.models.mlp import MLP as MLP
from jaxcl.models.mlp import StandardizedDense as StandardizedDense
from jaxcl.models.mlp import standardize_weight as standardize_weight
from jaxcl.models.resnet import ResNet as ResNet
from jaxcl.models.resnet import ResNet18 as ResNet18
from jaxcl.models.resnet import batch_norm as batch_norm
from jaxcl.models.sdm import SDMLP as SDMLP
from jaxcl.models.sdm import sdm_projection as sdm_projection
from jaxcl.models.sdm import unit_activity as unit_activity

__all__ = [
    "CNN",
    "MLP",
    "SDMLP",
    "Conv",
    "PyTorchMnistCNN",
    "ResNet",
    "ResNet18",
    "StandardizedDense",
    "batch_norm",
    "conv2d",
    "he_normal",
    "kenyon_cells",
    "sdm_projection",
    "standardize_weight",
    "torch_bias_init",
    "torch_default_init",
    "unit_activity",
]
