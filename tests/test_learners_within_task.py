"""The within-task head: k outputs shared by k-class tasks, output i the task's i-th class."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import data, learners, scenarios, types


def stream(groups, num_classes=6) -> scenarios.Scenario:
    y = np.arange(12, dtype=np.int32) % num_classes
    ds = data.ArrayDataset(
        np.zeros((12, 3), np.float32), y, np.zeros((6, 3), np.float32), y[:6], num_classes
    )
    return scenarios.from_class_groups(ds, groups)


def recording(logits) -> types.Learner:
    """A learner whose state is the last batch's labels and logit mask it was given."""

    def end_task(state, batch, key):
        return batch.y, batch.logit_mask

    return types.Learner(
        init=lambda key: None,
        update=lambda state, batch, key: ((batch.y, batch.logit_mask), jnp.float32(0)),
        predict=lambda state, x, task: jnp.tile(jnp.asarray([logits]), (x.shape[0], 1)),
        end_task=end_task,
    )


def batch(y, task) -> types.Batch:
    return types.Batch(
        x=jnp.zeros((len(y), 3)),
        y=jnp.asarray(y, jnp.int32),
        valid=jnp.ones(len(y), bool),
        task=jnp.int32(task),
        logit_mask=jnp.ones(6, bool),
        epoch=jnp.int32(0),
    )


def test_pairs_train_on_ranks_and_predict_the_pairs_classes():
    learner = learners.within_task_head(recording([0.0, 1.0]), stream([(0, 3), (1, 2)]))
    (y, mask), _ = learner.update(None, batch([0, 3, 3, 0], task=0), None)
    np.testing.assert_array_equal(y, [0, 1, 1, 0])
    np.testing.assert_array_equal(mask, [True, True])
    logits = learner.predict(None, jnp.zeros((2, 3)), jnp.int32(1))
    np.testing.assert_array_equal(np.argmax(logits, -1), [2, 2])  # unit 1 of task (1, 2)
    assert logits.shape == (2, 6) and float(logits[0, 0]) == float(jnp.finfo(jnp.float32).min)
    np.testing.assert_array_equal(logits[0, 1:3], [0.0, 1.0])


def test_three_class_tasks_and_the_boundary_batch_are_relabelled_too():
    learner = learners.within_task_head(recording([0.0, 2.0, 1.0]), stream([(0, 2, 4), (1, 3, 5)]))
    (y, mask), _ = learner.update(None, batch([5, 1, 3, 0], task=1), None)  # 0: not in task
    np.testing.assert_array_equal(y, [2, 0, 1, 0])
    assert mask.shape == (3,)
    y, _ = learner.end_task(None, batch([4, 2, 0], task=0), None)
    np.testing.assert_array_equal(y, [2, 1, 0])
    logits = learner.predict(None, jnp.zeros((1, 3)), jnp.int32(1))
    np.testing.assert_array_equal(logits[0, [1, 3, 5]], [0.0, 2.0, 1.0])
    assert int(np.argmax(logits[0])) == 3


def test_a_learner_without_end_task_keeps_none():
    inner = recording([0.0, 1.0])._replace(end_task=None)
    assert learners.within_task_head(inner, stream([(0, 1), (2, 3)])).end_task is None


def test_tasks_of_different_sizes_and_logits_of_another_width_are_refused():
    with pytest.raises(
        ValueError, match=r"tasks must be of one number of classes each, got \[2, 1\]"
    ):
        learners.within_task_head(recording([0.0, 1.0]), stream([(0, 1), (2,)]))
    learner = learners.within_task_head(recording([0.0, 1.0, 2.0]), stream([(0, 1), (2, 3)]))
    with pytest.raises(ValueError, match=r"logits must be of 2 units .*, got \(1, 3\)"):
        learner.predict(None, jnp.zeros((1, 3)), jnp.int32(0))
