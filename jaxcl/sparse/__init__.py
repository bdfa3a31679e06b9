"""Sparse weight masks and the maths of dynamic sparse training (DST).

Densities (``erk_densities``, ``uniform_densities``, exact ``layer_counts``, the smallest
``min_density``), masks as pytrees of boolean arrays (``random_masks``, ``apply_masks``,
``top_k_mask`` with random tie-breaking, ``top_k_masks`` for several arrays at once), the
topology update (``prune_and_regrow`` with ``growth_scores`` of the four criteria), the
death-rate schedule and the evaluation variants. The per-task parameter-isolation learner
built on them is :func:`jaxcl.learners.dst`.

Reference: Yildirim et al., `Continual Learning with Dynamic Sparse Training
<https://arxiv.org/abs/2308.14831>`_, CPAL 2024, PMLR 234:94-107; the authors' code is
``muratonuryildirim/CL-with-DST``: ``core.py`` (``Masking``: ERK/uniform masks, magnitude
death and the four growth criteria; ``DeathCosineDecay``); the per-task loop of
``cifar100.py`` is :func:`jaxcl.learners.dst`.
"""

from jaxcl.sparse._densities import INITS as INITS
from jaxcl.sparse._densities import densities as densities
from jaxcl.sparse._densities import density_counts as density_counts
from jaxcl.sparse._densities import erk_densities as erk_densities
from jaxcl.sparse._densities import layer_counts as layer_counts
from jaxcl.sparse._densities import min_density as min_density
from jaxcl.sparse._densities import uniform_densities as uniform_densities
from jaxcl.sparse._evaluation import EVALUATIONS as EVALUATIONS
from jaxcl.sparse._evaluation import authors_fwt as authors_fwt
from jaxcl.sparse._evaluation import label_shift_maps as label_shift_maps
from jaxcl.sparse._masks import apply_masks as apply_masks
from jaxcl.sparse._masks import check_masks as check_masks
from jaxcl.sparse._masks import leaf_shapes as leaf_shapes
from jaxcl.sparse._masks import mask_counts as mask_counts
from jaxcl.sparse._masks import random_bits_like as random_bits_like
from jaxcl.sparse._masks import random_masks as random_masks
from jaxcl.sparse._masks import top_k_mask as top_k_mask
from jaxcl.sparse._masks import top_k_masks as top_k_masks
from jaxcl.sparse._prune_grow import GROWTH as GROWTH
from jaxcl.sparse._prune_grow import TopologyUpdate as TopologyUpdate
from jaxcl.sparse._prune_grow import growth_scores as growth_scores
from jaxcl.sparse._prune_grow import magnitude_prune as magnitude_prune
from jaxcl.sparse._prune_grow import prune_and_regrow as prune_and_regrow
from jaxcl.sparse._prune_grow import regrow as regrow
from jaxcl.sparse._schedules import cosine_death_rate as cosine_death_rate

__all__ = [
    "EVALUATIONS",
    "GROWTH",
    "INITS",
    "TopologyUpdate",
    "apply_masks",
    "authors_fwt",
    "check_masks",
    "cosine_death_rate",
    "densities",
    "density_counts",
    "erk_densities",
    "growth_scores",
    "label_shift_maps",
    "layer_counts",
    "leaf_shapes",
    "magnitude_prune",
    "mask_counts",
    "min_density",
    "prune_and_regrow",
    "random_bits_like",
    "random_masks",
    "regrow",
    "top_k_mask",
    "top_k_masks",
    "uniform_densities",
]
