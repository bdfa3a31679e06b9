"""jaxcl: continual learning with sparse activations and sparsity-aware optimizers."""

__version__ = "0.2.0"
