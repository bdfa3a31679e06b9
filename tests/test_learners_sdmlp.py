"""The SDMLP learner: SDM's constraints from the model's own flags, its diagnostics."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcl import learners, types
from jaxcl.models.sdm import SDMLP, sdm_projection

D, W, C = 12, 16, 4


def _batch(seed, n=8):
    rng = np.random.default_rng(seed)
    return types.Batch(
        x=jnp.asarray(rng.normal(size=(n, D)), jnp.float32),
        y=jnp.asarray(rng.integers(0, C, n), jnp.int32),
        valid=jnp.ones((n,), bool),
        task=jnp.int32(0),
        logit_mask=jnp.ones((C,), bool),
        epoch=jnp.int32(0),
    )


def _train(learner, steps=3):
    state = learner.init(jax.random.PRNGKey(0))
    for i in range(steps):
        state, _ = learner.update(state, _batch(i), jax.random.PRNGKey(i))
    return state


def test_equals_supervised_with_the_projection_the_model_declares():
    for positive, normalize in [(True, True), (True, False), (False, True)]:
        model = SDMLP(width=W, num_classes=C, k=2, positive=positive, normalize=normalize)
        project = lambda p, a=positive, b=normalize: sdm_projection(p, positive=a, normalize=b)  # noqa: E731
        want = learners.supervised(model, optax.sgd(0.5), input_dim=D, projection=project)
        got = learners.sdmlp(model, optax.sgd(0.5), input_dim=D)
        jax.tree.map(np.testing.assert_array_equal, _train(got), _train(want))


def test_no_constraint_no_projection():
    model = SDMLP(width=W, num_classes=C, k=None, positive=False, normalize=False)
    learner = learners.sdmlp(model, optax.sgd(0.5), input_dim=D)
    assert learner.diagnostics is None  # no probe, no GABA counters
    state = _train(learner)
    assert float(jnp.min(state.params["hidden"]["kernel"])) < 0  # PyTorch init, unclamped


def test_dead_and_switched_diagnostics():
    model = SDMLP(width=W, num_classes=C, k=2, gaba_switch_count=5.0)
    # Probe of zeros: relu + normalise gives 0, so no neuron fires: all dead.
    learner = learners.sdmlp(model, optax.sgd(0.1), input_dim=D, probe=jnp.zeros((3, D)))
    state = learner.init(jax.random.PRNGKey(0))
    assert learner.diagnostics(state) == {"dead": 1.0, "switched": 0.0}
    counts = jnp.array([5, 4] + [0] * (W - 2), jnp.int32)  # one neuron at T, one below
    state = state._replace(model_state={"counters": {"activations": counts}})
    assert float(learner.diagnostics(state)["switched"]) == 1 / W
    # On random probes some neurons fire, and the count matches unit_activity by hand.
    probe = jnp.asarray(np.random.default_rng(0).normal(size=(50, D)), jnp.float32)
    learner = learners.sdmlp(model, optax.sgd(0.1), input_dim=D, probe=probe)
    variables = {"params": state.params, **state.model_state}
    fired = np.asarray(model.apply(variables, probe, return_hidden=True) > 0).any(0)
    assert float(learner.diagnostics(state)["dead"]) == pytest.approx(1 - fired.mean(), abs=1e-6)
