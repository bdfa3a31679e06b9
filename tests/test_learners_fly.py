"""The FlyModel learner: one-pass associative learning, seen classes, the engine."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import data, engine, scenarios, types
from jaxcl.learners import fly_model
from jaxcl.models.fly import kenyon_cells


def make_batch(x, y, valid=None):
    n = x.shape[0]
    return types.Batch(
        x=jnp.asarray(x),
        y=jnp.asarray(y, jnp.int32),
        valid=jnp.ones((n,), bool) if valid is None else jnp.asarray(valid),
        task=jnp.int32(0),
        logit_mask=jnp.ones((4,), bool),
        epoch=jnp.int32(0),
    )


def test_one_pass_update_is_the_clipped_class_sum_in_any_batching():
    rng = np.random.default_rng(1)
    x = rng.random((12, 20)).astype(np.float32)
    y = np.array([0, 1] * 6)
    learner = fly_model(input_dim=20, num_classes=4, num_cells=200, n_response=5, learning_rate=2.0)
    state = jax.jit(learner.init)(jax.random.PRNGKey(0))
    update = jax.jit(learner.update)
    whole, _ = update(state, make_batch(x, y), None)
    halves = state
    for part in (slice(0, 5), slice(5, 12)):
        halves, _ = update(halves, make_batch(x[part], y[part]), None)
    np.testing.assert_allclose(whole.weights, halves.weights, atol=1e-6)
    kc = np.asarray(kenyon_cells(jnp.asarray(x), state.projection))
    want = np.minimum(2.0 * np.stack([kc[y == c].sum(0) for c in range(2)]), 1.0)
    np.testing.assert_allclose(whole.weights[:2], want, atol=1e-6)
    np.testing.assert_array_equal(whole.weights[2:], 0.0)
    assert whole.weights.max() == 1.0  # the clip is active
    np.testing.assert_array_equal(whole.seen, [True, True, False, False])


def test_padding_rows_are_ignored_and_unseen_classes_never_predicted():
    rng = np.random.default_rng(2)
    x = rng.random((4, 20)).astype(np.float32)
    learner = fly_model(input_dim=20, num_classes=4, num_cells=100, n_response=5)
    state = jax.jit(learner.init)(jax.random.PRNGKey(0))
    state, loss = learner.update(
        state, make_batch(x, [2, 2, 3, 1], [True, True, True, False]), None
    )
    assert float(loss) == 0.0
    np.testing.assert_array_equal(state.seen, [False, False, True, True])
    pred = np.asarray(jnp.argmax(learner.predict(state, jnp.asarray(x), 0), -1))
    assert set(pred) <= {2, 3}


def test_runs_in_the_engine_vmapped_over_seeds():
    rng = np.random.default_rng(3)
    centers = rng.random((4, 30)) * 3
    y = np.arange(200) % 4
    x = (centers[y] + rng.random((200, 30))).astype(np.float32)
    ds = data.ArrayDataset(x[:160], y[:160].astype(np.int32), x[160:], y[160:].astype(np.int32), 4)
    sc = scenarios.split(ds, classes_per_task=2)
    learner = fly_model(
        input_dim=30, num_classes=4, num_cells=400, n_response=6, learning_rate=0.05
    )
    results = engine.make_run(sc, learner, batch_size=32, eval_tasks="all")(
        engine.seed_keys([0, 1])
    )
    assert results.accuracy.shape == (2, 2, 2)
    assert (results.accuracy[:, 0, 1] == 0).all()  # task 2's classes are not seen yet
    assert (results.accuracy[:, -1].mean(-1) > 0.5).all()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(n_response=0), "n_response must be a positive integer, got 0"),
        (dict(n_response=21), r"n_response must be in \[1, input_dim=20\], got 21"),
        (dict(n_response=5, learning_rate=0.0), "learning_rate must be > 0, got 0.0"),
        (dict(n_response=5, quantile=1.0), r"quantile must be in \(0, 1\), got 1.0"),
        (dict(n_response=5, num_cells=0), "num_cells must be a positive integer, got 0"),
    ],
)
def test_bad_input_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fly_model(input_dim=20, num_classes=4, **kwargs)


def test_non_integer_counts_refused():
    with pytest.raises(TypeError, match=r"n_response must be a positive integer, got 2\.5"):
        fly_model(input_dim=20, num_classes=4, n_response=2.5)


def test_dead_cells_on_the_probe():
    probe = np.random.default_rng(0).random((30, 20)).astype(np.float32)
    learner = fly_model(input_dim=20, num_classes=4, num_cells=200, n_response=5, probe=probe)
    state = learner.init(jax.random.PRNGKey(0))
    fired = np.asarray(kenyon_cells(jnp.asarray(probe), state.projection) > 0).any(0)
    assert float(learner.diagnostics(state)["dead"]) == pytest.approx(1 - fired.mean(), abs=1e-6)
    assert fly_model(input_dim=20, num_classes=4, n_response=5).diagnostics is None
