"""SDMLP: the GABA switch, Top-K variants, weight constraints after every step, counters."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcl import learners, types
from jaxcl.models.sdm import SDMLP, sdm_projection, unit_activity

D, W, K = 12, 32, 3


def batch(key, n=16, epoch=0):
    kx, ky = jax.random.split(key)
    return types.Batch(
        x=jax.random.uniform(kx, (n, D)),
        y=jax.random.randint(ky, (n,), 0, 10),
        valid=jnp.ones((n,), bool),
        task=jnp.int32(0),
        logit_mask=jnp.ones((10,), bool),
        epoch=jnp.int32(epoch),
    )


def sdm_learner(model, lr=0.5):
    return learners.supervised(model, optax.sgd(lr), input_dim=D, projection=sdm_projection)


def init(model, key=0):
    return jax.jit(model.init)(jax.random.PRNGKey(key), jnp.zeros((1, D)))


def active_per_example(model, variables, x):
    hidden = jax.jit(functools.partial(model.apply, return_hidden=True))(variables, x)
    return np.asarray((hidden > 0).sum(-1))


def test_weights_non_negative_and_unit_norm_after_every_step():
    learner = sdm_learner(SDMLP(width=W, k=K, gaba_switch_count=200.0))
    state = jax.jit(learner.init)(jax.random.PRNGKey(0))

    def step(state, key):
        state, _ = learner.update(state, batch(key), key)
        return state, state.params

    _, history = jax.lax.scan(step, state, jax.random.split(jax.random.PRNGKey(1), 10))
    for params in [state.params, history]:
        leaves = jax.tree.leaves(params)
        assert all(bool(jnp.all(p >= 0)) for p in leaves)
        norms = jnp.linalg.norm(params["hidden"]["kernel"], axis=-2)  # [..., W]
        np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    assert not np.allclose(history["hidden"]["kernel"][0], history["hidden"]["kernel"][-1])


def test_exactly_k_active_after_the_switch():
    model = SDMLP(width=W, k=K, gaba_switch_count=10.0)
    variables = init(model)
    x = jax.random.uniform(jax.random.PRNGKey(2), (64, D))
    # Before any count every neuron is excited (r = −1): all with a positive input fire.
    assert (active_per_example(model, variables, x) == W).all()
    switched = {**variables, "counters": {"activations": jnp.full((W,), 10, jnp.int32)}}
    np.testing.assert_array_equal(active_per_example(model, switched, x), K)


def test_subtract_mask_and_relu_active_counts():
    x = jax.random.uniform(jax.random.PRNGKey(3), (64, D))
    mask = SDMLP(width=W, k=K, schedule="constant", inhibition="mask")
    np.testing.assert_array_equal(active_per_example(mask, init(mask), x), K)
    # The authors' FLAT_SUBTRACT subtracts the k-th value itself: k − 1 stay active.
    sub = SDMLP(width=W, k=K, schedule="constant")
    np.testing.assert_array_equal(active_per_example(sub, init(sub), x), K - 1)
    relu = SDMLP(width=W, k=None, positive=False, normalize=False, hidden_bias=True)
    assert (active_per_example(relu, init(relu), x) > K).all()


def test_inhibition_value_has_no_gradient():
    model = SDMLP(width=W, k=K, gaba_switch_count=1.0)
    variables = {**init(model), "counters": {"activations": jnp.full((W,), 5, jnp.int32)}}
    x = jax.random.uniform(jax.random.PRNGKey(4), (1, D))
    kernel = variables["params"]["hidden"]["kernel"]

    def total(kernel):
        params = {**variables["params"], "hidden": {"kernel": kernel}}
        return model.apply({**variables, "params": params}, x, return_hidden=True).sum()

    g = jax.grad(total)(kernel)
    active = np.asarray(model.apply(variables, x, return_hidden=True)[0] > 0)
    xn = np.asarray(x[0] / jnp.linalg.norm(x[0]))
    # d/dW of Σ relu(a − v) with v detached: x on active columns, 0 elsewhere.
    np.testing.assert_allclose(g, np.outer(xn, active.astype(np.float32)), atol=1e-6)


def test_counters_only_increase_count_valid_rows_and_only_in_training():
    model = SDMLP(width=W, k=K, gaba_switch_count=500.0)
    learner = sdm_learner(model)
    state = jax.jit(learner.init)(jax.random.PRNGKey(0))
    counts = [np.asarray(state.model_state["counters"]["activations"])]
    np.testing.assert_array_equal(counts[0], 0)
    update = jax.jit(learner.update)
    for i, key in enumerate(jax.random.split(jax.random.PRNGKey(5), 6)):
        b = batch(key)
        if i == 0:  # only 5 valid rows: at most 5 counts per neuron
            b = b._replace(valid=jnp.arange(16) < 5)
        state, _ = update(state, b, key)
        counts.append(np.asarray(state.model_state["counters"]["activations"]))
        if i == 0:
            assert counts[-1].max() <= 5
    assert all((b >= a).all() for a, b in itertools.pairwise(counts))
    assert counts[-1].sum() > counts[1].sum()
    learner.predict(state, batch(jax.random.PRNGKey(9)).x, jnp.int32(0))
    np.testing.assert_array_equal(state.model_state["counters"]["activations"], counts[-1])


def test_linear_schedule_receives_the_epoch_and_remembers_it():
    model = SDMLP(width=W, k=K, schedule="linear", inhibition="mask", transition_epochs=4)
    learner = sdm_learner(model, lr=0.1)
    state = jax.jit(learner.init)(jax.random.PRNGKey(0))
    x = jax.random.uniform(jax.random.PRNGKey(6), (32, D))
    variables = lambda s: {"params": s.params, **s.model_state}  # noqa: E731
    update = jax.jit(learner.update)
    for epoch, k in [(1, 24), (2, 17), (4, K), (9, K)]:  # k = 32 − ceil(29 e / 4)
        state, _ = update(state, batch(jax.random.PRNGKey(epoch), epoch=epoch), None)
        assert int(state.model_state["counters"]["epoch"]) == epoch
        active = active_per_example(model, variables(state), x)
        np.testing.assert_array_equal(active, k)


def test_projection_keeps_a_zero_neuron_finite():
    params = {
        "hidden": {"kernel": jnp.array([[-1.0, 3.0], [-2.0, 4.0]])},
        "output": {"kernel": jnp.array([[-1.0], [2.0]])},
    }
    out = sdm_projection(params)
    np.testing.assert_allclose(out["hidden"]["kernel"], [[0.0, 0.6], [0.0, 0.8]])
    np.testing.assert_allclose(out["output"]["kernel"], [[0.0], [2.0]])
    free = sdm_projection(params, positive=False)
    np.testing.assert_allclose(jnp.linalg.norm(free["hidden"]["kernel"], axis=0), 1.0)


def test_unit_activity_counts_firing_rows_in_chunks():
    model = SDMLP(width=W, k=K, schedule="constant", inhibition="mask")
    variables = init(model)
    x = jax.random.uniform(jax.random.PRNGKey(7), (37, D))
    counts = unit_activity(
        lambda xb: model.apply(variables, xb, return_hidden=True), x, batch_size=8
    )
    want = (model.apply(variables, x, return_hidden=True) > 0).sum(0)
    np.testing.assert_array_equal(counts, want)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(k=W), rf"k must be below width = {W}, got {W}"),
        (dict(k=0), "k must be a positive integer, got 0"),
        (dict(k=K, gaba_switch_count=0.0), "gaba_switch_count must be > 0, got 0.0"),
        (dict(k=K, inhibition="mask"), "inhibition must be 'subtract' with schedule='gaba'"),
        (dict(k=K, schedule="cosine"), "schedule must be one of 'constant', 'gaba', 'linear'"),
        (dict(k=K, schedule="linear", k_start=2), rf"k_start must be in \[k, width\] = \[{K}, "),
    ],
)
def test_bad_configuration_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SDMLP(width=W, **kwargs)
