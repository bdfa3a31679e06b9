"""The engine: exact epochs over ragged tasks, evaluation matrix, seeds, chunks, compiles."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcl import data, engine, learners, scenarios, types


def id_dataset(n_train=23, n_test=11, num_classes=4):
    """Inputs carry their own row index in column 0, so a learner can see what it got."""
    x = np.zeros((n_train, 3), np.float32)
    x[:, 0] = np.arange(n_train)
    xt = np.zeros((n_test, 3), np.float32)
    xt[:, 0] = np.arange(n_test)
    y = (np.arange(n_train) % num_classes).astype(np.int32)
    yt = (np.arange(n_test) % num_classes).astype(np.int32)
    return data.ArrayDataset(x, y, xt, yt, num_classes)


def counting_learner(n_train, num_classes):
    """State: how often each training row was trained on; predicts class 0 always."""

    def update(counts, batch, key):
        rows = batch.x[:, 0].astype(jnp.int32)
        return counts.at[rows].add(batch.valid.astype(jnp.int32)), jnp.float32(0.0)

    def predict(counts, x, task):
        return jnp.zeros((x.shape[0], num_classes)).at[:, 0].set(1.0)

    return types.Learner(
        init=lambda key: jnp.zeros((n_train,), jnp.int32), update=update, predict=predict
    )


@pytest.mark.parametrize("batch_size,epochs", [(4, 1), (5, 3), (64, 2)])
def test_every_example_seen_exactly_once_per_epoch(batch_size, epochs):
    ds = id_dataset()
    sc = scenarios.split(ds, classes_per_task=2)  # ragged tasks of 12 and 11 rows
    run = engine.make_run(
        sc, counting_learner(23, 4), batch_size=batch_size, epochs_per_task=epochs
    )
    state, _ = run.init(engine.seed_keys([0, 1]))
    for start in range(sc.num_tasks):
        state, _ = run.run_chunk(state, start)
    np.testing.assert_array_equal(state.learner, np.full((2, 23), epochs))
    # Steps count real (non-empty) batches only: ceil(12/b) + ceil(11/b) per epoch.
    steps = epochs * (-(-12 // batch_size) + -(-11 // batch_size))
    np.testing.assert_array_equal(state.step, [steps, steps])


def order_logging_learner(epochs):
    """State: the rows of every batch position in training order (−1: padding)."""

    def update(state, batch, key):
        log, n = state
        rows = jnp.where(batch.valid, batch.x[:, 0].astype(jnp.int32), -1)
        return (jax.lax.dynamic_update_slice(log, rows, (n,)), n + rows.shape[0]), jnp.float32(0)

    return types.Learner(
        init=lambda key: (jnp.full((epochs * 24,), -2, jnp.int32), jnp.int32(0)),
        update=update,
        predict=lambda s, x, t: jnp.zeros((x.shape[0], 4)),
    )


def test_shuffling_differs_between_seeds_and_epochs():
    sc = scenarios.split(id_dataset(), classes_per_task=4)  # one task of 23 rows
    run = engine.make_run(sc, order_logging_learner(2), batch_size=8, epochs_per_task=2)
    state, _ = run.init(engine.seed_keys([0, 1]))
    state, _ = run.run_chunk(state, 0)
    epochs = np.asarray(state.learner[0]).reshape(2, 2, 24)  # [seed, epoch, position]
    for order in epochs.reshape(4, 24):
        assert sorted(order[:23]) == list(range(23)) and order[23] == -1  # padding last
    assert not np.array_equal(epochs[0, 0], epochs[0, 1])  # a new order every epoch
    assert not np.array_equal(epochs[0, 0], epochs[1, 0])  # and every seed


def tiny_mlp_learner(lr=0.1):
    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(4)(nn.relu(nn.Dense(16)(x)))

    return learners.supervised(MLP(), optax.sgd(lr), input_dim=8)


def blob_scenario(head="shared"):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 8)) * 3
    y = np.arange(200) % 4
    yt = np.arange(80) % 4
    ds = data.ArrayDataset(
        (centers[y] + rng.normal(size=(200, 8))).astype(np.float32),
        y.astype(np.int32),
        (centers[yt] + rng.normal(size=(80, 8))).astype(np.float32),
        yt.astype(np.int32),
        4,
    )
    return scenarios.split(ds, classes_per_task=2, head=head)


def test_accuracy_matrix_and_forgetting_on_a_learnable_stream():
    run = engine.make_run(blob_scenario(), tiny_mlp_learner(), batch_size=10, epochs_per_task=3)
    res = run(engine.seed_keys([0, 1, 2]))
    assert res.correct.shape == (3, 2, 2) and res.init_correct.shape == (3, 2)
    R = res.accuracy
    assert np.all(R[:, 0, 0] > 0.95) and np.all(R[:, 1, 1] > 0.95)
    assert np.all(R[:, 1, 0] < 0.95)  # a shared head forgets part of task 0
    np.testing.assert_allclose(res.pooled_accuracy[:, -1], R[:, -1].mean(-1), atol=1e-6)
    assert not res.diverged.any() and np.all(np.isfinite(res.train_loss))


def test_task_head_removes_class_interference():
    run = engine.make_run(
        blob_scenario("task"), tiny_mlp_learner(), batch_size=10, epochs_per_task=3
    )
    R = run(engine.seed_keys([0])).accuracy
    assert R[0, 1, 0] > 0.9  # the masked head cannot confuse task 0 with task 1 classes


def test_seed_alone_equals_seed_inside_a_multiseed_run():
    run = engine.make_run(blob_scenario(), tiny_mlp_learner(), batch_size=10)
    alone = run(engine.seed_keys([3]))
    together = run(engine.seed_keys([1, 2, 3]))
    np.testing.assert_array_equal(alone.correct[0], together.correct[2])


def test_chunks_do_not_change_results_and_compile_once():
    sc = blob_scenario()
    results = []
    for chunk in (1, 2):
        run = engine.make_run(sc, tiny_mlp_learner(), batch_size=10, chunk_size=chunk)
        results.append(run(engine.seed_keys([0, 1])))
        run(engine.seed_keys([5, 6]))
        assert run.num_compiles == 1  # same shapes every chunk and every call
    np.testing.assert_array_equal(results[0].correct, results[1].correct)


def test_overhanging_last_chunk_is_exact():
    sc = scenarios.split(_blob4(), classes_per_task=1)
    full = engine.make_run(sc, tiny_mlp_learner(), batch_size=10, chunk_size=1)
    over = engine.make_run(sc, tiny_mlp_learner(), batch_size=10, chunk_size=3)  # 4 = 3 + 1
    a, b = full(engine.seed_keys([0])), over(engine.seed_keys([0]))
    np.testing.assert_array_equal(a.correct, b.correct)
    assert b.correct.shape == (1, 4, 4)


def _blob4():
    sc = blob_scenario()
    return data.ArrayDataset(
        np.asarray(sc.train_x),
        np.asarray(sc.train_y),
        np.asarray(sc.test_x),
        np.asarray(sc.test_y),
        4,
    )


@pytest.mark.parametrize(
    "eval_tasks,expected",
    [("seen", [[1, 0], [1, 1]]), ("current", [[1, 0], [0, 1]]), ("all", [[1, 1], [1, 1]])],
)
def test_eval_tasks_selects_evaluated_entries(eval_tasks, expected):
    run = engine.make_run(blob_scenario(), tiny_mlp_learner(), batch_size=50, eval_tasks=eval_tasks)
    res = run(engine.seed_keys([0]))
    np.testing.assert_array_equal(res.correct[0] >= 0, np.asarray(expected, bool))
    assert np.all(res.init_correct >= 0) == (eval_tasks == "all")


def test_divergence_is_recorded_per_seed():
    run = engine.make_run(blob_scenario(), tiny_mlp_learner(lr=1e30), batch_size=10)
    res = run(engine.seed_keys([0, 1]))
    assert res.diverged.all() and np.all(res.diverged_at >= 0)


def test_end_task_receives_examples_of_the_finished_task():
    sc = blob_scenario()

    def end_task(state, batch, key):
        return state.at[batch.task].set(jnp.sum(batch.y[:, None] == jnp.arange(4)[None, :], 0))

    learner = types.Learner(
        init=lambda key: jnp.zeros((2, 4), jnp.int32),
        update=lambda s, b, k: (s, jnp.float32(0)),
        predict=lambda s, x, t: jnp.zeros((x.shape[0], 4)),
        end_task=end_task,
        boundary_examples=30,
    )
    run = engine.make_run(sc, learner, batch_size=10)
    state, _ = run.init(engine.seed_keys([0]))
    for start in range(2):
        state, _ = run.run_chunk(state, start)
    hist = np.asarray(state.learner[0])
    assert hist.sum() == 60 and hist[0, 2:].sum() == 0 and hist[1, :2].sum() == 0


def test_end_task_is_called_at_every_boundary_even_without_examples():
    def end_task(state, batch, key):
        calls, rows = state
        return calls + 1, rows + batch.x.shape[0]

    learner = types.Learner(
        init=lambda key: (jnp.int32(0), jnp.int32(0)),
        update=lambda s, b, k: (s, jnp.float32(0)),
        predict=lambda s, x, t: jnp.zeros((x.shape[0], 4)),
        end_task=end_task,
    )
    run = engine.make_run(blob_scenario(), learner, batch_size=10, chunk_size=2)
    state, _ = run.init(engine.seed_keys([0, 1]))
    state, _ = run.run_chunk(state, 0)
    calls, rows = state.learner
    np.testing.assert_array_equal(calls, [2, 2])  # once per task, for every seed
    np.testing.assert_array_equal(rows, [0, 0])  # a batch of 0 rows


@pytest.mark.parametrize(
    "option,value,error,message",
    [
        ("batch_size", 0, ValueError, "batch_size must be a positive integer, got 0"),
        ("epochs_per_task", -1, ValueError, "epochs_per_task must be a positive integer, got -1"),
        ("chunk_size", 1.5, TypeError, "chunk_size must be a positive integer, got 1.5"),
        ("eval_batch_size", True, TypeError, "eval_batch_size must be a positive integer"),
        ("eval_tasks", "some", ValueError, "eval_tasks must be one of 'all', 'current', 'seen'"),
        ("shuffle", "yes", TypeError, "shuffle must be a bool, got 'yes'"),
    ],
)
def test_bad_options_are_refused(option, value, error, message):
    with pytest.raises(error, match=message):
        engine.make_run(blob_scenario(), tiny_mlp_learner(), **{"batch_size": 8, option: value})


def test_batches_carry_the_global_epoch_index():
    def update(seen, batch, key):
        return seen.at[batch.epoch].add(batch.valid.sum()), jnp.float32(0.0)

    learner = types.Learner(
        init=lambda key: jnp.zeros((6,), jnp.int32),
        update=update,
        predict=lambda s, x, t: jnp.zeros((x.shape[0], 4)),
    )
    sc = blob_scenario()
    run = engine.make_run(sc, learner, batch_size=16, epochs_per_task=3)
    state, _ = run.init(engine.seed_keys([0]))
    for start in range(2):
        state, _ = run.run_chunk(state, start)
    counts = np.asarray(sc.train_count)
    np.testing.assert_array_equal(state.learner[0], np.repeat(counts, 3))


def _epoch_counting_learner(num_epochs):
    """State: valid examples seen per global epoch index, and the steps per task."""

    def update(state, batch, key):
        seen, per_task = state
        n = batch.valid.sum()
        return (seen.at[batch.epoch].add(n), per_task.at[batch.task].add(1)), jnp.float32(0.0)

    return types.Learner(
        init=lambda key: (jnp.zeros((num_epochs,), jnp.int32), jnp.zeros((2,), jnp.int32)),
        update=update,
        predict=lambda s, x, t: jnp.zeros((x.shape[0], 4)),
    )


def test_per_task_epochs_skip_the_extra_epochs_and_number_epochs_globally():
    sc = blob_scenario()  # 2 tasks of 100 examples
    run = engine.make_run(sc, _epoch_counting_learner(5), batch_size=16, epochs_per_task=(1, 4))
    state, _ = run.init(engine.seed_keys([0, 1]))
    for start in range(2):
        state, _ = run.run_chunk(state, start)
    seen, steps = state.learner
    np.testing.assert_array_equal(seen, np.full((2, 5), 100))  # epoch 0 (task 0), 1..4 (task 1)
    np.testing.assert_array_equal(steps, [[7, 28], [7, 28]])  # ceil(100/16) per epoch
    np.testing.assert_array_equal(state.step, [35, 35])
    assert run.spec.epochs_per_task == (1, 4) and run.spec.first_epoch == (0, 1)
    # The steps per task a learner can know before its run is made: those it trained.
    spec = engine.RunSpec.of(sc, batch_size=16, epochs_per_task=(1, 4))
    assert (spec.num_tasks, spec.train_rows, spec.test_rows) == (2, 100, run.spec.test_rows)
    assert spec.task_steps == tuple(int(s) for s in steps[0]) == (7, 28)


def test_uniform_per_task_epochs_equal_the_integer_option():
    keys = engine.seed_keys([0])
    a = engine.make_run(blob_scenario(), tiny_mlp_learner(), batch_size=10, epochs_per_task=2)
    b = engine.make_run(blob_scenario(), tiny_mlp_learner(), batch_size=10, epochs_per_task=(2, 2))
    np.testing.assert_array_equal(a(keys).correct, b(keys).correct)


@pytest.mark.parametrize(
    "value,error,message",
    [
        ((1,), ValueError, r"epochs_per_task must be a positive integer or a sequence of 2 "),
        ((1, 2, 3), ValueError, r"\(one per task\), got \(1, 2, 3\)"),
        ((1, 0), ValueError, r"epochs_per_task\[1\] must be a positive integer, got 0"),
        ((1.0, 2), TypeError, r"epochs_per_task\[0\] must be a positive integer, got 1\.0"),
        ("12", TypeError, "epochs_per_task must be a positive integer, got '12'"),
    ],
)
def test_bad_per_task_epochs_are_refused(value, error, message):
    with pytest.raises(error, match=message):
        engine.make_run(blob_scenario(), tiny_mlp_learner(), batch_size=8, epochs_per_task=value)


def test_without_shuffling_every_epoch_follows_the_stored_order():
    sc = scenarios.split(id_dataset(), classes_per_task=4)  # one task: rows 0..22 in order
    learner = order_logging_learner(2)
    run = engine.make_run(sc, learner, batch_size=8, epochs_per_task=2, shuffle=False)
    state, _ = run.init(engine.seed_keys([0, 1]))
    state, _ = run.run_chunk(state, 0)
    epoch = np.concatenate([np.arange(23), [-1]])  # 3 batches of 8, the last one padded
    np.testing.assert_array_equal(state.learner[0], np.tile(np.tile(epoch, 2), (2, 1)))


def test_seed_keys_are_one_prngkey_per_seed():
    keys = engine.seed_keys([0, np.int64(7), 2**32 - 1])
    expected = [jax.random.PRNGKey(s) for s in (0, 7, 2**32 - 1)]
    np.testing.assert_array_equal(keys, jnp.stack(expected))


@pytest.mark.parametrize(
    ("seeds", "error", "message"),
    [
        ([0, 1.0], TypeError, r"seeds must be ints in \[0, 2\*\*32\), got 1\.0 of type float"),
        ([0, 2.7], TypeError, r"got 2\.7 of type float"),  # int() used to truncate it to 2
        ([True], TypeError, "got True of type bool"),
        ([-1], ValueError, r"seeds must be ints in \[0, 2\*\*32\), got -1"),  # key of 2**32 - 1
        ([2**32], ValueError, "got 4294967296"),  # used to give the key of seed 0
        ([], ValueError, "seeds must be a non-empty sequence of ints"),
    ],
)
def test_seed_keys_refuses_seeds_that_would_collide_or_truncate(seeds, error, message):
    with pytest.raises(error, match=message):
        engine.seed_keys(seeds)


def test_results_are_a_seed_first_pytree_that_slices_and_concatenates():
    run = engine.make_run(blob_scenario(), tiny_mlp_learner(), batch_size=10)
    both, alone = run(engine.seed_keys([4, 7])), run(engine.seed_keys([7]))
    assert all(leaf.shape[0] == 2 for leaf in jax.tree.leaves(both))
    np.testing.assert_array_equal(both.count, np.tile(run.scenario.test_count, (2, 1)))
    second = jax.tree.map(lambda x: x[1:], both)
    for got, want in zip(jax.tree.leaves(second), jax.tree.leaves(alone), strict=True):
        np.testing.assert_array_equal(got, want)
    joined = engine.concatenate_results([jax.tree.map(lambda x: x[:1], both), alone])
    for got, want in zip(jax.tree.leaves(joined), jax.tree.leaves(both), strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(joined.accuracy, both.accuracy)


def test_abstract_shapes_and_the_compiled_chunk_need_no_run():
    run = engine.make_run(blob_scenario(), tiny_mlp_learner(), batch_size=10, chunk_size=2)
    abstract = run.abstract_state(3)
    state, init_correct = run.init(engine.seed_keys([0, 1, 2]))
    assert jax.tree.map(lambda x: (x.shape, x.dtype), abstract) == jax.tree.map(
        lambda x: (x.shape, x.dtype), state
    )
    record = run.abstract_record(abstract)
    assert record.correct.shape == (3, 2, 2) and record.train_loss.shape == (3, 2)
    assert run.compiled_chunk(abstract).memory_analysis() is not None
    state, _ = run.run_chunk(state, 0)  # reuses the program compiled from the shapes
    assert run.num_compiles == 1 and init_correct.shape == (3, 2)
