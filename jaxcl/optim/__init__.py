"""Optax gradient transformations for continual learning.

Primitives (``scale_by_*``) rescale gradients; aliases (``classp``, ``masked_adam``) add a
learning rate; wrappers (``sam``, ``gnp``) evaluate a second gradient. All of them are
ordinary optax transformations: NamedTuple states, ``jit``/``vmap``/``lax.scan`` safe,
composable with :func:`optax.chain` and :func:`optax.inject_hyperparams` (also around
:func:`get_optimizer`). ``sam`` and ``gnp`` wrap whole transformations, e.g. an
:func:`optax.multi_transform`, not the other way round (see :mod:`jaxcl.optim._sam`).
"""

from jaxcl.optim._classp import ScaleByClasspState as ScaleByClasspState
from jaxcl.optim._classp import classp as classp
from jaxcl.optim._classp import scale_by_classp as scale_by_classp
from jaxcl.optim._clipping import clip_updates as clip_updates
from jaxcl.optim._masked_adam import ScaleByMaskedAdamState as ScaleByMaskedAdamState
from jaxcl.optim._masked_adam import became_active as became_active
from jaxcl.optim._masked_adam import masked_adam as masked_adam
from jaxcl.optim._masked_adam import reset_moments as reset_moments
from jaxcl.optim._masked_adam import scale_by_masked_adam as scale_by_masked_adam
from jaxcl.optim._registry import OPTIMIZERS as OPTIMIZERS
from jaxcl.optim._registry import get_optimizer as get_optimizer
from jaxcl.optim._sam import GNPState as GNPState
from jaxcl.optim._sam import SAMState as SAMState
from jaxcl.optim._sam import gnp as gnp
from jaxcl.optim._sam import sam as sam

__all__ = [
    "OPTIMIZERS",
    "GNPState",
    "SAMState",
    "ScaleByClasspState",
    "ScaleByMaskedAdamState",
    "became_active",
    "classp",
    "clip_updates",
    "get_optimizer",
    "gnp",
    "masked_adam",
    "reset_moments",
    "sam",
    "scale_by_classp",
    "scale_by_masked_adam",
]
