"""Learners: what the engine trains, as bundles of pure functions (:class:`jaxcl.types.Learner`).

A learner's functions work on an opaque per-seed state; the engine (:mod:`jaxcl.engine`)
calls ``init`` once per seed, ``update`` once per :class:`jaxcl.types.Batch`,
``begin_task``/``end_task`` at task boundaries and ``predict`` for evaluation, all inside
one ``jit(vmap(scan))``.

* :func:`supervised`: a Flax module trained by gradient steps of an optax chain, with an
  optional projection and weight-importance regulariser (:mod:`jaxcl.regularizers`).
* :func:`dst`: dynamic sparse training with one frozen sparse subnetwork per task
  (Yildirim et al., CPAL 2024), built on the masks and topology updates of
  :mod:`jaxcl.sparse`.
* :func:`sdmlp`: :func:`supervised` for an SDMLP (Bricken et al., ICLR 2023) with SDM's
  weight constraints and its dead-neuron and GABA-switch diagnostics.
* :func:`fly_model`: the FlyModel's one-pass associative rule on Kenyon-cell codes (Shen,
  Dasgupta & Navlakha 2021; the code in :mod:`jaxcl.models.fly`), a learner without
  gradients.
* :func:`within_task_head`: wraps a learner whose network has ``k`` outputs for a stream
  of ``k``-class tasks (output i: the task's i-th class), e.g. Split MNIST's 2-unit head.
"""

from jaxcl.learners._dst import DSTConfig as DSTConfig
from jaxcl.learners._dst import DSTState as DSTState
from jaxcl.learners._dst import adaptive_growth as adaptive_growth
from jaxcl.learners._dst import dst as dst
from jaxcl.learners._dst import dst_config as dst_config
from jaxcl.learners._dst import growth_schedule as growth_schedule
from jaxcl.learners._dst import sparsity_config as sparsity_config
from jaxcl.learners._fly import FlyState as FlyState
from jaxcl.learners._fly import fly_model as fly_model
from jaxcl.learners._sdmlp import sdmlp as sdmlp
from jaxcl.learners._supervised import SupervisedState as SupervisedState
from jaxcl.learners._supervised import supervised as supervised
from jaxcl.learners._within_task import within_task_head as within_task_head

__all__ = [
    "DSTConfig",
    "DSTState",
    "FlyState",
    "SupervisedState",
    "adaptive_growth",
    "dst",
    "dst_config",
    "fly_model",
    "growth_schedule",
    "sdmlp",
    "sparsity_config",
    "supervised",
    "within_task_head",
]
