"""Final evaluations: accuracy on the training sets, with its own key per seed, task, batch."""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcl import data, engine, scenarios, types
from jaxcl.evaluation import train_mode, training_accuracy

C = 4


def stream(head: str, input_perm=None) -> scenarios.Scenario:
    """11 training examples ``x = [label, index, 0]``, labels ``index % 4``; tasks of the
    classes {0, 1, 2} (9 examples) and {1, 3} (5 examples)."""
    y = np.arange(11, dtype=np.int32) % C
    x = np.stack([y, np.arange(11), np.zeros(11)], -1).astype(np.float32)
    ds = data.ArrayDataset(x, y, x[:4], y[:4], C)
    return scenarios.from_class_groups(ds, [(0, 1, 2), (1, 3)], head=head, input_perm=input_perm)


def trained(sc: scenarios.Scenario, seeds: int) -> tuple[engine.Run, engine.EngineState]:
    """A run of ``sc`` and a stand-in for its trained states (only their keys matter)."""
    learner = types.Learner(
        init=lambda key: jnp.zeros(()),
        update=lambda state, batch, key: (state, jnp.zeros(())),
        predict=lambda state, x, task: jnp.zeros((x.shape[0], C)),
    )
    run = engine.make_run(sc, learner, batch_size=4)
    keys = engine.seed_keys(range(10, 10 + seeds))
    zeros = jnp.zeros((seeds,), jnp.int32)
    return run, engine.EngineState(jnp.zeros((seeds,)), keys, zeros, zeros - 1, {})


def read_label(state, x, key):
    """A classifier that reads the label from the first input (dropout-free)."""
    return jax.nn.one_hot(x[:, 0].astype(jnp.int32), C)


def test_training_examples_through_the_input_transform_and_the_task_head_padding_left_out():
    # Task 1 reverses the inputs: its first input is 0, so class 0 wins before the task's
    # head masks it out; then the tie between classes 1 and 3 goes to 1, right on 3 of its
    # 5 examples. Task 0 is read right, and its 3 padding rows (batches of 4) not counted.
    sc = stream("task", input_perm=np.asarray([[0, 1, 2], [2, 1, 0]]))
    run, state = trained(sc, seeds=2)
    got = training_accuracy(run, read_label, batch_size=4)(state)
    assert list(got) == ["train_acc"]
    np.testing.assert_allclose(got["train_acc"], [[1.0, 0.6], [1.0, 0.6]], rtol=1e-6)


def test_each_batch_gets_its_key_from_the_seeds_final_key_and_the_stream():
    sc = stream("shared")
    run, state = trained(sc, seeds=2)
    bs, stream_id = 4, 0x0C1A55
    nb = math.ceil(sc.train_idx.shape[1] / bs)

    def guess(lstate, x, key):  # a prediction that only the key decides
        return jax.nn.one_hot(jax.random.randint(key, (x.shape[0],), 0, C), C)

    got = training_accuracy(run, guess, stream=stream_id, batch_size=bs, name="noisy")(state)
    expected = np.zeros((2, sc.num_tasks))
    idx, count = np.asarray(sc.train_idx), np.asarray(sc.train_count)
    for s in range(2):
        key = jax.random.fold_in(state.key[s], stream_id)
        for t in range(sc.num_tasks):
            for b in range(nb):
                pos = b * bs + np.arange(bs)
                rows = np.where(pos < idx.shape[1], idx[t, np.minimum(pos, idx.shape[1] - 1)], 0)
                pred = jax.random.randint(jax.random.fold_in(key, t * nb + b), (bs,), 0, C)
                hit = (np.asarray(pred) == np.asarray(sc.train_y)[rows]) & (pos < count[t])
                expected[s, t] += hit.sum()
            expected[s, t] /= count[t]
    np.testing.assert_allclose(got["noisy"], expected, rtol=1e-6)
    assert not np.array_equal(expected[0], expected[1])  # each seed draws its own


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"stream": -1}, ValueError, r"stream must be in \[0, 2\*\*32\), got -1"),
        ({"stream": 2**32}, ValueError, "stream must be in"),
        ({"stream": 1.5}, TypeError, "stream must be an integer, got 1.5"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive integer, got 0"),
    ],
)
def test_bad_options_are_refused(kwargs, error, message):
    run, _ = trained(stream("shared"), seeds=1)
    with pytest.raises(error, match=message):
        training_accuracy(run, read_label, **kwargs)


def test_train_mode_applies_the_module_with_dropout_on():
    import flax.linen as nn

    class Dropped(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            return nn.Dropout(0.5, deterministic=not train)(nn.Dense(C)(x))

    class State(NamedTuple):  # what a supervised learner's state holds
        params: dict
        model_state: dict

    model, x = Dropped(), jnp.ones((8, 3))
    params = model.init(jax.random.PRNGKey(0), x)["params"]
    apply = train_mode(model)
    a, b = (apply(State(params, {}), x, jax.random.PRNGKey(k)) for k in (1, 2))
    assert (np.asarray(a) == 0).any() and not np.array_equal(a, b)  # masks from the key
    assert not (np.asarray(model.apply({"params": params}, x)) == 0).any()  # eval: none
