"""The pure program of one seed: its initial carry, then one chunk of tasks.

:func:`init_seed` initialises the learner and evaluates it before any training (the
random-init baseline of forward transfer). :func:`chunk_seed` runs ``chunk_size``
consecutive tasks: for each, ``begin_task``, the epochs (``lax.scan``) of batches
(``lax.scan``), ``end_task``, then the evaluation of every wanted task's test set, giving
row ``t`` of the accuracy matrix ``R[t, j]``. The driver vmaps both over seeds and jits
them; the scenario is an argument, not a closed-over constant, so no dataset is baked into
the compiled program.

The learner is built inside the program, ``build(state.hparams)``: a grid run's rows carry
their cell's traced hyperparameters (:mod:`jaxcl.engine._grid`), a plain run's carry none
(``{}``) and its ``build`` returns the same learner whatever it is given.

Per-seed independence: nothing here reduces over seeds, so under the seed ``vmap`` a NaN
in one seed never reaches another. Each seed records the first step where its loss
stopped being finite (``EngineState.diverged_at``). Every ``lax.cond`` branches on values
that are the same for every seed (task, epoch and batch positions), so it stays a real
branch under the vmap.

Random streams: a task splits the seed's key into the next task's key and its
``begin_task``, epochs and ``end_task`` keys; an epoch splits its key into the example
order and the batches' keys; a batch splits the running batch key into the next one and
its ``update`` key.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxcl.engine._spec import RunSpec
from jaxcl.losses import mask_logits
from jaxcl.scenarios import Scenario
from jaxcl.types import Batch, Learner, PyTree

__all__ = ["Build", "EngineState", "TaskRecord", "chunk_seed", "init_seed"]

# A row's traced hyperparameters -> its learner (called inside the compiled program).
Build = Callable[[Mapping[str, jax.Array]], Learner]


class EngineState(NamedTuple):
    """Everything one row (a seed, or a seed of a grid's cell) carries between tasks (the
    checkpointable carry)."""

    learner: PyTree
    key: jax.Array
    step: jax.Array  # int32: training steps taken so far
    diverged_at: jax.Array  # int32: first step with a non-finite loss, −1 if none
    hparams: dict[str, jax.Array]  # the row's traced hyperparameters ({} outside a grid)


class TaskRecord(NamedTuple):
    """What one seed reports after one task."""

    correct: jax.Array  # [T] int32 correct test predictions per task (−1: not evaluated)
    train_loss: jax.Array  # mean training loss over the task's batches
    diagnostics: dict[str, jax.Array]


class TrainCarry(NamedTuple):
    """What the epoch loop of a task carries."""

    learner: PyTree
    step: jax.Array
    diverged_at: jax.Array


class BatchCarry(NamedTuple):
    """What the batch loop of an epoch carries: the training carry and the batch key."""

    train: TrainCarry
    key: jax.Array


class StepOutcome(NamedTuple):
    """What each batch position reports: its loss and whether it held any example."""

    loss: jax.Array  # float32; 0 at a skipped position
    active: jax.Array  # bool


def task_epochs(spec: RunSpec, task: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The global index of ``task``'s first epoch and its number of epochs."""
    first = jnp.asarray(spec.first_epoch, jnp.int32)[task]
    return first, jnp.asarray(spec.epochs, jnp.int32)[task]


def example_order(spec: RunSpec, sc: Scenario, task: jax.Array, key: jax.Array) -> jax.Array:
    """Positions of ``task``'s rows: valid ones first (in random order), padding last."""
    length = sc.train_idx.shape[1]
    if not spec.shuffle:  # the task's stored order (train_idx keeps padding last)
        return jnp.arange(length)
    noise = jax.random.uniform(key, (length,))
    return jnp.argsort(jnp.where(jnp.arange(length) < sc.train_count[task], noise, 2.0))


def train_batch(
    spec: RunSpec, sc: Scenario, task: jax.Array, e: jax.Array, order: jax.Array, b: jax.Array
) -> Batch:
    """Batch position ``b`` of epoch ``e`` (counted within the task) in ``order``."""
    first_epoch, num_epochs = task_epochs(spec, task)
    pos = b * spec.batch_size + jnp.arange(spec.batch_size)
    rows = sc.train_idx[task].at[order.at[pos].get(mode="fill", fill_value=0)].get()
    return Batch(
        x=sc.inputs(sc.train_x[rows], task),
        y=sc.train_y[rows],
        valid=pos < sc.train_count[task],
        task=task,
        logit_mask=sc.logit_mask(task),
        epoch=first_epoch + e,
        index=e * spec.batches_per_epoch + b,
        task_steps=num_epochs * spec.batches_per_epoch,
    )


def boundary_batch(
    spec: RunSpec, sc: Scenario, task: jax.Array, key: jax.Array, num_examples: int
) -> Batch:
    """``num_examples`` random training examples of ``task`` for ``end_task`` (may be 0).

    Drawn without replacement unless the task has fewer examples.
    """
    first_epoch, num_epochs = task_epochs(spec, task)
    pos = example_order(spec, sc, task, key)[jnp.arange(num_examples) % sc.train_count[task]]
    rows = sc.train_idx[task][pos]
    return Batch(
        x=sc.inputs(sc.train_x[rows], task),
        y=sc.train_y[rows],
        valid=jnp.ones((num_examples,), bool),
        task=task,
        logit_mask=sc.logit_mask(task),
        epoch=first_epoch + num_epochs - 1,
        index=num_epochs * spec.batches_per_epoch - 1,
        task_steps=num_epochs * spec.batches_per_epoch,
    )


def train_step(
    learner: Learner, carry: TrainCarry, batch: Batch, key: jax.Array
) -> tuple[TrainCarry, StepOutcome]:
    """One ``update`` on ``batch``, skipped if the batch holds only padding."""

    def train(lstate):
        return learner.update(lstate, batch, key)

    def skip(lstate):
        return lstate, jnp.zeros((), jnp.float32)

    active = batch.valid.any()
    lstate, loss = jax.lax.cond(active, train, skip, carry.learner)
    loss = loss.astype(jnp.float32)
    bad = active & ~jnp.isfinite(loss)
    diverged_at = jnp.where(bad & (carry.diverged_at < 0), carry.step, carry.diverged_at)
    step = carry.step + active.astype(carry.step.dtype)
    return TrainCarry(lstate, step, diverged_at), StepOutcome(loss, active)


def train_epoch(
    spec: RunSpec,
    learner: Learner,
    sc: Scenario,
    task: jax.Array,
    carry: TrainCarry,
    e: jax.Array,
    key: jax.Array,
) -> tuple[TrainCarry, StepOutcome]:
    """Epoch ``e`` of ``task``: every batch position in a new order; ``[B]`` outcomes."""
    k_order, k_batches = jax.random.split(key)
    order = example_order(spec, sc, task, k_order)

    def batch_step(carry: BatchCarry, b: jax.Array) -> tuple[BatchCarry, StepOutcome]:
        batch = train_batch(spec, sc, task, e, order, b)
        key, k_step = jax.random.split(carry.key)
        train, outcome = train_step(learner, carry.train, batch, k_step)
        return BatchCarry(train, key), outcome

    positions = jnp.arange(spec.batches_per_epoch)
    carry, outcomes = jax.lax.scan(batch_step, BatchCarry(carry, k_batches), positions)
    return carry.train, outcomes


def train_task(
    spec: RunSpec, learner: Learner, sc: Scenario, state: EngineState, task: jax.Array
) -> tuple[EngineState, jax.Array]:
    """``task``'s boundary calls and epochs; returns the new carry and the mean loss.

    ``end_task`` runs whenever the learner sets it, on ``boundary_examples`` examples.
    """
    num_batches = spec.batches_per_epoch
    _, num_epochs = task_epochs(spec, task)
    key, k_begin, k_epochs, k_end = jax.random.split(state.key, 4)
    lstate = learner.begin_task(state.learner, task, k_begin)

    def run_epoch(carry, e, key):
        return train_epoch(spec, learner, sc, task, carry, e, key)

    def skip_epoch(carry, e, key):  # beyond this task's epoch count
        skipped = StepOutcome(
            jnp.zeros((num_batches,), jnp.float32), jnp.zeros((num_batches,), bool)
        )
        return carry, skipped

    def epoch_step(carry: TrainCarry, xs: tuple[jax.Array, jax.Array]):
        e, key = xs
        return jax.lax.cond(e < num_epochs, run_epoch, skip_epoch, carry, e, key)

    max_epochs = max(spec.epochs)
    epochs = (jnp.arange(max_epochs, dtype=jnp.int32), jax.random.split(k_epochs, max_epochs))
    carry = TrainCarry(lstate, state.step, state.diverged_at)
    carry, outcomes = jax.lax.scan(epoch_step, carry, epochs)
    mean_loss = jnp.sum(outcomes.loss) / jnp.maximum(jnp.sum(outcomes.active), 1)
    lstate = carry.learner
    if learner.end_task is not None:
        batch = boundary_batch(spec, sc, task, k_end, learner.boundary_examples)
        lstate = learner.end_task(lstate, batch, k_end)
    state = state._replace(learner=lstate, key=key, step=carry.step)
    return state._replace(diverged_at=carry.diverged_at), mean_loss


def evaluate(
    spec: RunSpec, learner: Learner, sc: Scenario, lstate: PyTree, wanted: jax.Array
) -> jax.Array:
    """``[T]`` int32 correct predictions per task's test set (−1 where not wanted)."""
    eb = spec.eval_batch_size
    num_batches = math.ceil(sc.test_idx.shape[1] / eb)

    def task_correct(j):
        def body(total, b):
            pos = b * eb + jnp.arange(eb)
            rows = sc.test_idx[j].at[pos].get(mode="fill", fill_value=0)
            x = sc.inputs(sc.test_x[rows], j)
            logits = mask_logits(learner.predict(lstate, x, j), sc.logit_mask(j))
            hit = (jnp.argmax(logits, -1) == sc.test_y[rows]) & (pos < sc.test_count[j])
            return total + jnp.sum(hit, dtype=jnp.int32), None

        return jax.lax.scan(body, jnp.zeros((), jnp.int32), jnp.arange(num_batches))[0]

    def step(_, j):
        # `wanted` is the same for every seed, so this cond stays a branch under vmap.
        return None, jax.lax.cond(wanted[j], task_correct, lambda j: jnp.int32(-1), j)

    return jax.lax.scan(step, None, jnp.arange(sc.num_tasks))[1]


def wanted_tasks(spec: RunSpec, task: jax.Array, num_tasks: int) -> jax.Array:
    """``[T]`` bool: the test sets evaluated after ``task`` (``spec.eval_tasks``)."""
    j = jnp.arange(num_tasks)
    if spec.eval_tasks == "seen":
        return j <= task
    if spec.eval_tasks == "current":
        return j == task
    return jnp.ones((num_tasks,), bool)


def init_seed(
    spec: RunSpec,
    build: Build,
    key: jax.Array,
    hparams: Mapping[str, jax.Array],
    sc: Scenario,
) -> tuple[EngineState, jax.Array]:
    """One row's initial carry and ``[T]`` pre-training correct counts (−1: not evaluated;
    evaluated only with ``eval_tasks="all"``); ``hparams`` are the row's."""
    learner = build(hparams)
    k_init, k_run = jax.random.split(key)
    lstate = learner.init(k_init)
    wanted = jnp.full((sc.num_tasks,), spec.eval_tasks == "all")
    zero, hparams = jnp.zeros((), jnp.int32), dict(hparams)
    state = EngineState(lstate, k_run, zero, jnp.full((), -1, jnp.int32), hparams)
    return state, evaluate(spec, learner, sc, lstate, wanted)


def chunk_seed(
    spec: RunSpec, build: Build, state: EngineState, start: jax.Array, sc: Scenario
) -> tuple[EngineState, TaskRecord]:
    """Tasks ``start .. start + chunk_size − 1`` of one row; records ``[chunk, ...]``.

    Tasks past the end of the stream (the last chunk may overhang it) leave the carry
    as is and record ``correct = −1`` and a NaN loss.
    """
    learner = build(state.hparams)

    def task_step(state: EngineState, task: jax.Array) -> tuple[EngineState, TaskRecord]:
        def run_task(state):
            state, loss = train_task(spec, learner, sc, state, task)
            correct = evaluate(
                spec, learner, sc, state.learner, wanted_tasks(spec, task, sc.num_tasks)
            )
            diag = learner.diagnostics(state.learner) if learner.diagnostics else {}
            return state, TaskRecord(correct, loss, diag)

        def past_end(state):
            shape = jax.eval_shape(run_task, state)[1]
            empty = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shape)
            return state, empty._replace(
                correct=jnp.full((sc.num_tasks,), -1, jnp.int32),
                train_loss=jnp.float32(jnp.nan),
            )

        return jax.lax.cond(task < sc.num_tasks, run_task, past_end, state)

    tasks = start + jnp.arange(spec.chunk_size, dtype=jnp.int32)
    return jax.lax.scan(task_step, state, tasks)
