"""Properties every jaxcl learner shares, checked over one table of tiny configurations.

Each learner is driven as the engine drives it: ``init`` per seed, ``begin_task``, a few
``update`` steps, ``end_task`` on ``boundary_examples`` examples of the finished task,
``predict``, inside ``jit`` and ``vmap`` over seeds.
"""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcl import data, regularizers, scenarios, types
from jaxcl.learners import dst, dst_config, fly_model, sdmlp, supervised, within_task_head
from jaxcl.models.sdm import SDMLP
from jaxcl.optim import masked_adam

D, C, B = 12, 4, 6  # inputs, classes, batch size
STEPS = 4  # updates per task: DST's topology update (every 2nd step) runs twice
TASK_CLASSES = np.array([[1, 1, 0, 0], [0, 0, 1, 1]], bool)
_PROBE = jnp.asarray(np.random.default_rng(5).normal(size=(10, D)), jnp.float32)  # dead units


class _MLP(nn.Module):
    bias: bool = True
    outputs: int = C

    @nn.compact
    def __call__(self, x):
        hidden = nn.relu(nn.Dense(16, use_bias=self.bias)(x))
        return nn.Dense(self.outputs, use_bias=self.bias)(hidden)


def _supervised(regularizer=None, outputs=C):
    optimizer = optax.sgd(0.1, momentum=0.9)
    return supervised(_MLP(outputs=outputs), optimizer, input_dim=D, regularizer=regularizer)


def _task_classes_scenario():
    """A stream whose tasks have the classes of ``TASK_CLASSES``."""
    y = np.arange(8, dtype=np.int32) % C
    ds = data.ArrayDataset(np.zeros((8, D), np.float32), y, np.zeros((4, D), np.float32), y[:4], C)
    return scenarios.from_class_groups(ds, [tuple(np.flatnonzero(m)) for m in TASK_CLASSES])


# Every registered regularizer, with a Fisher/MAS estimate over two batches of three.
_REGULARIZER_HPARAMS = {
    "ewc": {"strength": 1.0, "num_batches": 2, "batch_size": 3},
    "mas": {"strength": 1.0, "num_batches": 2, "batch_size": 3},
    "si": {"strength": 1.0},
    "l2": {"strength": 1.0},
}

_LEARNERS = {
    "supervised": _supervised,
    **{
        f"supervised+{name}": lambda name=name: _supervised(
            regularizers.get_regularizer(name, **_REGULARIZER_HPARAMS[name])
        )
        for name in _REGULARIZER_HPARAMS
    },
    # Mutable counters and the epoch/valid keywords of the module.
    "sdmlp": lambda: sdmlp(
        SDMLP(width=16, num_classes=C, k=2, gaba_switch_count=8.0),
        optax.sgd(0.1),
        input_dim=D,
        probe=_PROBE,
    ),
    "dst": lambda: dst(
        _MLP(bias=False),
        masked_adam(1e-2),
        input_dim=D,
        task_classes=TASK_CLASSES,
        sparsity=dst_config(
            _MLP(bias=False), input_dim=D, num_tasks=2, density=0.5, growth=("gradient", "momentum")
        ),
        update_frequency=2,
    ),
    "fly": lambda: fly_model(input_dim=D, num_classes=C, num_cells=64, n_response=4, probe=_PROBE),
    # Two outputs for the two classes of each task; EWC's boundary batch is relabelled too.
    "within_task_head+ewc": lambda: within_task_head(
        _supervised(regularizers.get_regularizer("ewc", **_REGULARIZER_HPARAMS["ewc"]), 2),
        _task_classes_scenario(),
    ),
}
_NAMES = sorted(_LEARNERS)


def test_table_covers_every_registered_regularizer():
    assert {f"supervised+{n}" for n in regularizers.REGULARIZERS} <= set(_NAMES)


def _batch(task, index, *, n=B, seed=0):
    """A batch of task ``task``'s classes, the same for every seed (as the engine's)."""
    rng = np.random.default_rng(100 * task + index + 7 * seed)
    y = rng.choice(np.flatnonzero(TASK_CLASSES[task]), size=n).astype(np.int32)
    x = rng.normal(size=(n, D)).astype(np.float32) + y[:, None]
    valid = np.arange(n) < n - 1  # one padding row
    return types.Batch(
        x=jnp.asarray(x),
        y=jnp.asarray(y),
        valid=jnp.asarray(valid),
        task=jnp.int32(task),
        logit_mask=jnp.ones(C, bool),
        epoch=jnp.int32(task),
        index=jnp.int32(index),
        task_steps=jnp.int32(STEPS),
    )


def _boundary(learner, task):
    return _batch(task, STEPS, n=learner.boundary_examples, seed=1)


def _end_task(learner, state, batch, key):
    """The engine's boundary: ``end_task`` whenever the learner sets one."""
    return state if learner.end_task is None else learner.end_task(state, batch, key)


def _stack(batches):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *batches)


def _program(learner):
    """One seed as the engine runs it: a scan over two tasks, each a scan over ``STEPS``
    updates between ``begin_task`` and ``end_task``; then predictions and diagnostics."""
    tasks = (
        jnp.arange(2, dtype=jnp.int32),
        _stack([_stack([_batch(t, i) for i in range(STEPS)]) for t in range(2)]),
        _stack([_boundary(learner, t) for t in range(2)]),
    )
    x_test = _batch(1, 0, seed=2).x

    def run(key):
        def task_body(state, inputs):
            task, batches, boundary = inputs
            keys = jax.random.split(jax.random.fold_in(key, task), STEPS + 2)
            state = learner.begin_task(state, task, keys[0])
            state, losses = jax.lax.scan(
                lambda s, xs: learner.update(s, *xs), state, (batches, keys[2:])
            )
            return _end_task(learner, state, boundary, keys[1]), losses

        state, losses = jax.lax.scan(task_body, learner.init(key), tasks)
        out = {"state": state, "loss": losses}
        out["logits"] = [learner.predict(state, x_test, jnp.int32(t)) for t in range(2)]
        if learner.diagnostics is not None:
            out["diagnostics"] = learner.diagnostics(state)
        return out

    return run


def _assert_trees_close(a, b, *, exact=False, rtol=1e-5, atol=1e-6):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        if np.issubdtype(x.dtype, np.inexact) and not exact:
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)
        else:
            np.testing.assert_array_equal(x, y)


def _started(learner):
    """A state after init, ``begin_task(0)`` and one update."""

    @jax.jit
    def start(key):
        k1, k2, k3 = jax.random.split(key, 3)
        state = learner.begin_task(learner.init(k1), jnp.int32(0), k2)
        return learner.update(state, _batch(0, 0), k3)[0]

    return start(jax.random.PRNGKey(0))


def _state_calls(learner, key):
    """The learner's functions from a state to a state, at a task boundary and a step."""
    return {
        "begin_task": lambda s: learner.begin_task(s, jnp.int32(1), key),
        "update": lambda s: learner.update(s, _batch(0, 1), key)[0],
        "end_task": lambda s: _end_task(learner, s, _boundary(learner, 0), key),
    }


@pytest.mark.parametrize("name", _NAMES)
def test_vmap_over_seeds_matches_single_seed_runs(name):
    run = _program(_LEARNERS[name]())
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    batched = jax.jit(jax.vmap(run))(keys)
    single = jax.jit(run)(keys[1])
    _assert_trees_close(jax.tree.map(lambda x: x[1], batched), single)


@pytest.mark.parametrize("name", _NAMES)
def test_every_call_keeps_the_state_structure_shapes_and_dtypes(name):
    # What lax.scan and lax.cond need of a carry; nothing is promoted beyond float32.
    learner = _LEARNERS[name]()
    key = jax.random.PRNGKey(0)
    state = jax.eval_shape(learner.init, key)
    expected = jax.tree.map(lambda x: (x.shape, x.dtype), state)
    for call, f in _state_calls(learner, key).items():
        got = jax.tree.map(lambda x: (x.shape, x.dtype), jax.eval_shape(f, state))
        assert got == expected, call
    floats = [x.dtype for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.inexact)]
    assert floats and set(floats) == {jnp.dtype(jnp.float32)}
    loss = jax.eval_shape(lambda s: learner.update(s, _batch(0, 1), key)[1], state)
    assert (loss.shape, loss.dtype) == ((), jnp.float32)


@pytest.mark.parametrize("name", _NAMES)
def test_a_call_under_lax_cond_is_taken_or_skipped(name):
    learner = _LEARNERS[name]()
    state, key = _started(learner), jax.random.PRNGKey(1)
    calls = _state_calls(learner, key)
    maybe = jax.jit(
        lambda take, s: {c: jax.lax.cond(take, f, lambda s: s, s) for c, f in calls.items()}
    )
    always = jax.jit(lambda s: {c: f(s) for c, f in calls.items()})
    _assert_trees_close(maybe(False, state), {c: state for c in calls}, exact=True)
    _assert_trees_close(maybe(True, state), always(state))


@pytest.mark.parametrize("name", _NAMES)
def test_a_jitted_step_compiles_once_for_new_values(name):
    chex.clear_trace_counter()  # chex counts traces per code object, shared by all cases
    learner = _LEARNERS[name]()
    update = jax.jit(chex.assert_max_traces(learner.update, n=1))
    end_task = jax.jit(chex.assert_max_traces(lambda s, b, k: _end_task(learner, s, b, k), n=1))
    state = _started(learner)
    for task, index in ((0, 1), (1, 2)):  # new state, batch, task, position and key
        key = jax.random.PRNGKey(10 + index)
        state, _ = update(state, _batch(task, index), key)
        state = end_task(state, _boundary(learner, task), key)  # a second trace would raise
