"""SDMLP as a learner (Bricken et al. 2023): SDM's weight constraints and its diagnostics.

The supervised learner of an :class:`~jaxcl.models.sdm.SDMLP` whose parameters are
projected by :func:`~jaxcl.models.sdm.sdm_projection` after every optimizer step and at
init, with the constraints the model itself declares (``positive``, ``normalize``), as the
authors' code enforces them after each step (``TrentBrick/SDMContinualLearner``
``models/SDM_Base.py``; Bricken et al., arXiv 2303.11934, §4 and App. A.1).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from jaxcl.learners._supervised import SupervisedState, supervised
from jaxcl.models.sdm import SDMLP, sdm_projection, unit_activity
from jaxcl.regularizers import Regularizer
from jaxcl.types import Learner


def sdmlp(
    model: SDMLP,
    optimizer: optax.GradientTransformation,
    *,
    input_dim: int,
    regularizer: Regularizer | None = None,
    probe: jax.Array | None = None,
) -> Learner:
    """:func:`~jaxcl.learners.supervised` for ``model`` with SDM's constraints and diagnostics.

    Every step is ``w ← P(w + u)`` with ``P`` = :func:`~jaxcl.models.sdm.sdm_projection`
    (``positive=model.positive``, ``normalize=model.normalize``; none if both are off, as
    for the paper's ReLU/Top-K baselines). Diagnostics after each task (the engine's
    ``results.diagnostics``):

    * ``dead``: the fraction of hidden neurons that fire on no row of ``probe`` (App. D of
      the SDM paper counts them on the test images), when ``probe`` is given;
    * ``switched``: the fraction of neurons whose GABA switch is complete (activation
      count ≥ ``model.gaba_switch_count``), when the model counts activations
      (``schedule="gaba"`` with a ``k``).

    Args:
      model: the SDMLP.
      optimizer: any optax transformation (the paper: SGD, gradients clipped to norm 1).
      input_dim: ``D``.
      regularizer: an optional :class:`jaxcl.regularizers.Regularizer` (SDMLP+EWC).
      probe: ``[N, D]`` inputs on which dead neurons are counted, e.g.
        :meth:`jaxcl.scenarios.Scenario.test_inputs`.

    Returns:
      A :class:`Learner` whose state is a :class:`SupervisedState`.

    References:
      Bricken et al., "Sparse Distributed Memory is a Continual Learner", ICLR 2023,
      Sec. 3 (the constraints), App. D (dead neurons).
    """
    projection = None
    if model.positive or model.normalize:
        projection = functools.partial(
            sdm_projection, positive=model.positive, normalize=model.normalize
        )
    learner = supervised(
        model, optimizer, input_dim=input_dim, projection=projection, regularizer=regularizer
    )
    counts_activations = model.k is not None and model.schedule == "gaba"
    if probe is None and not counts_activations:
        return learner

    def diagnostics(state: SupervisedState) -> dict[str, jax.Array]:
        out = {}
        if probe is not None:
            variables = {"params": state.params, **state.model_state}
            hidden = functools.partial(model.apply, variables, return_hidden=True)
            out["dead"] = jnp.mean(unit_activity(hidden, probe) == 0)
        if counts_activations:
            count = state.model_state["counters"]["activations"]
            out["switched"] = jnp.mean(count >= model.gaba_switch_count)
        return out

    return learner._replace(diagnostics=diagnostics)
