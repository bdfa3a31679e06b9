"""One compiled program per benchmark: seeds vmapped, tasks and batches scanned.

``make_run(...)`` does the Python work once and returns a :class:`Run`. Calling it with
``[S, 2]`` PRNG keys runs every seed in one ``jit(vmap(...))``: inside, ``lax.scan`` over
tasks, then over epochs and batches. After every task the learner is evaluated on every
task's test set, giving row ``t`` of the accuracy matrix ``R[t, j]``.

The host calls the compiled program once per *chunk* of tasks (``chunk_size``), always
with the same shapes, so there is one compile per configuration; between chunks it
updates a progress bar and may save the carry. Nothing inside a task returns to the host.

Per-seed independence: seeds share no reduction, so a NaN in one seed never reaches
another; each seed records the first step where its loss stopped being finite.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxcl.losses import mask_logits
from jaxcl.scenarios import Scenario
from jaxcl.types import Batch, Learner

EVAL_TASKS = ("all", "seen", "current")
PyTree = Any


class EngineState(NamedTuple):
    """Everything one seed carries between tasks (the checkpointable carry)."""

    learner: PyTree
    key: jax.Array
    step: jax.Array  # int32: training steps taken so far
    diverged_at: jax.Array  # int32: first step with a non-finite loss, −1 if none


class TaskRecord(NamedTuple):
    """What one seed reports after one task."""

    correct: jax.Array  # [T] int32 correct test predictions per task (−1: not evaluated)
    train_loss: jax.Array  # mean training loss over the task's batches
    diagnostics: dict[str, jax.Array]


class Results(NamedTuple):
    """Per-seed results of a run (leading axis: seed).

    Attributes:
      correct: ``[S, T, T]`` correct test predictions on task j after task i (−1 where
        not evaluated).
      count: ``[T]`` test examples per task.
      init_correct: ``[S, T]`` correct predictions before training (−1 if not evaluated),
        the random-init baseline of forward transfer.
      train_loss: ``[S, T]`` mean training loss per task.
      diverged_at: ``[S]`` first training step with a non-finite loss, −1 if none.
      diagnostics: learner-defined ``{name: [S, T, ...]}``.
    """

    correct: np.ndarray
    count: np.ndarray
    init_correct: np.ndarray
    train_loss: np.ndarray
    diverged_at: np.ndarray
    diagnostics: dict[str, np.ndarray]

    @property
    def accuracy(self) -> np.ndarray:
        """``R[s, i, j]``: accuracy on task j after task i (NaN where not evaluated)."""
        return _ratio(self.correct, self.count)

    @property
    def init_accuracy(self) -> np.ndarray:
        """``[S, T]`` accuracy of the untrained model on each task."""
        return _ratio(self.init_correct, self.count)

    @property
    def pooled_accuracy(self) -> np.ndarray:
        """``[S, T]`` sample-pooled accuracy over all tasks' test sets after each task.

        After the last task of a class split this is the accuracy on the full test set.
        """
        correct = np.where(self.correct < 0, np.nan, self.correct)
        return correct.sum(-1) / self.count.sum()

    @property
    def diverged(self) -> np.ndarray:
        """``[S]`` bool: seeds whose training loss became NaN or infinite."""
        return self.diverged_at >= 0


def _ratio(correct: np.ndarray, count: np.ndarray) -> np.ndarray:
    return np.where(correct < 0, np.nan, correct / count)


def seed_sharding(num_seeds: int) -> NamedSharding | None:
    """The seed axis split over all devices (None on one device).

    Raises:
      ValueError: ``num_seeds`` is not a multiple of the device count (pad the seeds, as
        :func:`jaxcl.execution.run_seeds` does).
    """
    devices = jax.devices()
    if len(devices) == 1:
        return None
    if num_seeds % len(devices):
        raise ValueError(
            f"num_seeds={num_seeds} must be a multiple of the device count {len(devices)}"
        )
    return NamedSharding(Mesh(np.asarray(devices), ("seeds",)), PartitionSpec("seeds"))


def _place(tree: PyTree, sharding: NamedSharding | None) -> PyTree:
    # Every leaf of a seed-batched tree has the seed axis first.
    return tree if sharding is None else jax.device_put(tree, sharding)


def _seed(seed: Any) -> int:
    """``seed`` as an int in ``[0, 2**32)``, or raises.

    PRNGKey keeps a seed's low 32 bits, so outside that range distinct seeds share a key
    (-1 gives the key of 2**32 - 1, 2**32 that of 0).
    """
    try:
        if isinstance(seed, (bool, np.bool_)):
            raise TypeError
        value = operator.index(seed)
    except TypeError:
        raise TypeError(
            f"seeds must be ints in [0, 2**32), got {seed!r} of type {type(seed).__name__}"
        ) from None
    if not 0 <= value < 2**32:
        raise ValueError(f"seeds must be ints in [0, 2**32), got {seed!r}")
    return value


def seed_keys(seeds: Sequence[int]) -> jax.Array:
    """``[S, 2]`` keys, one ``PRNGKey(seed)`` per seed: a seed's key never depends on S.

    Raises:
      TypeError: a seed that is not an int (floats and bools are refused, not truncated).
      ValueError: no seeds, or a seed outside ``[0, 2**32)``.
    """
    values = [_seed(s) for s in seeds]
    if not values:
        raise ValueError("seeds must be a non-empty sequence of ints, got no seeds")
    return jnp.stack([jax.random.PRNGKey(v) for v in values])


def _positive_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


def _epochs_of_tasks(epochs_per_task: int | Sequence[int], num_tasks: int) -> np.ndarray:
    """``[T]`` int32 epochs of each task, from one count for all or one per task."""
    if _positive_int(epochs_per_task):
        return np.full((num_tasks,), int(epochs_per_task), np.int32)
    counts = list(epochs_per_task) if isinstance(epochs_per_task, Sequence) else None
    if counts is None or len(counts) != num_tasks or not all(map(_positive_int, counts)):
        raise ValueError(
            f"epochs_per_task must be a positive integer or a sequence of {num_tasks} positive "
            f"integers (one per task), got {epochs_per_task!r}"
        )
    return np.asarray(counts, np.int32)


class Run:
    """A compiled continual-learning run; see :func:`make_run`."""

    def __init__(
        self,
        scenario: Scenario,
        learner: Learner,
        *,
        batch_size: int,
        epochs_per_task: int | Sequence[int] = 1,
        eval_batch_size: int = 1000,
        eval_tasks: str = "all",
        chunk_size: int = 1,
        shuffle: bool = True,
    ):
        for name, value in [
            ("batch_size", batch_size),
            ("eval_batch_size", eval_batch_size),
            ("chunk_size", chunk_size),
        ]:
            if not _positive_int(value):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        epochs = _epochs_of_tasks(epochs_per_task, scenario.num_tasks)
        if eval_tasks not in EVAL_TASKS:
            raise ValueError(f"eval_tasks must be one of {EVAL_TASKS}, got {eval_tasks!r}")
        self.scenario = scenario
        self.learner = learner
        self.batch_size = int(batch_size)
        # As given (an int, or one count per task), e.g. for checkpoint fingerprints.
        self.epochs_per_task = (
            int(epochs_per_task) if _positive_int(epochs_per_task) else tuple(epochs.tolist())
        )
        self.shuffle = bool(shuffle)
        # The epoch scan runs max(epochs) times; a task's epochs beyond its count are skipped.
        self._epochs = epochs
        self._first_epoch = np.concatenate([[0], np.cumsum(epochs)[:-1]]).astype(np.int32)
        self.eval_batch_size = int(min(eval_batch_size, scenario.test_idx.shape[1]))
        self.eval_tasks = eval_tasks
        self.chunk_size = int(min(chunk_size, scenario.num_tasks))
        # Every task runs this many batches per epoch (the longest task's; padding-only
        # batches of shorter tasks are skipped).
        self.batches_per_epoch = math.ceil(scenario.train_idx.shape[1] / self.batch_size)
        # The scenario is an argument, not a closed-over constant: no giant literals in HLO.
        self._init = jax.jit(jax.vmap(self._init_seed, in_axes=(0, None)))
        self._chunk = jax.jit(jax.vmap(self._chunk_seed, in_axes=(0, None, None)), donate_argnums=0)
        self._executables: dict[tuple, Any] = {}

    # ----------------------------------------------------------------- per seed, pure
    def _batch(
        self, sc: Scenario, task: jax.Array, epoch: jax.Array, order: jax.Array, b: jax.Array
    ) -> Batch:
        pos = b * self.batch_size + jnp.arange(self.batch_size)
        rows = sc.train_idx[task].at[order.at[pos].get(mode="fill", fill_value=0)].get()
        e = epoch - self._task_epochs(task)[0]
        return Batch(
            x=sc.inputs(sc.train_x[rows], task),
            y=sc.train_y[rows],
            valid=pos < sc.train_count[task],
            task=task,
            logit_mask=sc.logit_mask(task),
            epoch=epoch,
            index=e * self.batches_per_epoch + b,
            task_steps=self._task_epochs(task)[1] * self.batches_per_epoch,
        )

    def _task_epochs(self, task: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The global index of ``task``'s first epoch and its number of epochs."""
        return jnp.asarray(self._first_epoch)[task], jnp.asarray(self._epochs)[task]

    def _shuffle(self, sc: Scenario, task: jax.Array, key: jax.Array) -> jax.Array:
        # Valid positions first, in random order; padding positions last.
        length = sc.train_idx.shape[1]
        if not self.shuffle:  # the task's stored order (train_idx keeps padding last)
            return jnp.arange(length)
        noise = jax.random.uniform(key, (length,))
        return jnp.argsort(jnp.where(jnp.arange(length) < sc.train_count[task], noise, 2.0))

    def _train_task(self, state: EngineState, sc: Scenario, task: jax.Array) -> tuple:
        learner = self.learner
        num_batches = self.batches_per_epoch
        first_epoch, num_epochs = self._task_epochs(task)
        key, k_begin, k_epochs, k_end = jax.random.split(state.key, 4)
        lstate = learner.begin_task(state.learner, task, k_begin)

        def batch_step(carry, b):
            lstate, step, diverged_at, epoch, order, key = carry
            batch = self._batch(sc, task, epoch, order, b)
            key, k_step = jax.random.split(key)

            def train(lstate):
                return learner.update(lstate, batch, k_step)

            def skip(lstate):  # a batch made only of padding
                return lstate, jnp.zeros((), jnp.float32)

            active = batch.valid.any()
            lstate, loss = jax.lax.cond(active, train, skip, lstate)
            loss = loss.astype(jnp.float32)
            bad = active & ~jnp.isfinite(loss)
            diverged_at = jnp.where(bad & (diverged_at < 0), step, diverged_at)
            step = step + active.astype(step.dtype)
            return (lstate, step, diverged_at, epoch, order, key), (loss, active)

        def run_epoch(carry, e, key):
            lstate, step, diverged_at = carry
            k_order, k_batches = jax.random.split(key)
            order = self._shuffle(sc, task, k_order)
            epoch = first_epoch + e
            (lstate, step, diverged_at, *_), out = jax.lax.scan(
                batch_step,
                (lstate, step, diverged_at, epoch, order, k_batches),
                jnp.arange(num_batches),
            )
            return (lstate, step, diverged_at), out

        def skip_epoch(carry, e, key):  # beyond this task's epoch count
            return carry, (jnp.zeros((num_batches,), jnp.float32), jnp.zeros((num_batches,), bool))

        def epoch_step(carry, xs):
            e, key = xs
            # `task` and `e` are the same for every seed: a real branch under the seed vmap.
            return jax.lax.cond(e < num_epochs, run_epoch, skip_epoch, carry, e, key)

        max_epochs = int(self._epochs.max())
        epochs = (
            jnp.arange(max_epochs, dtype=jnp.int32),
            jax.random.split(k_epochs, max_epochs),
        )
        (lstate, step, diverged_at), (losses, active) = jax.lax.scan(
            epoch_step, (lstate, state.step, state.diverged_at), epochs
        )
        mean_loss = jnp.sum(losses) / jnp.maximum(jnp.sum(active), 1)
        if learner.boundary_examples:
            lstate = learner.end_task(lstate, self._boundary_batch(sc, task, k_end), k_end)
        return EngineState(lstate, key, step, diverged_at), mean_loss

    def _boundary_batch(self, sc: Scenario, task: jax.Array, key: jax.Array) -> Batch:
        # Random examples of the task, without replacement unless it is too small.
        n = self.learner.boundary_examples
        first_epoch, num_epochs = self._task_epochs(task)
        pos = self._shuffle(sc, task, key)[jnp.arange(n) % sc.train_count[task]]
        rows = sc.train_idx[task][pos]
        return Batch(
            x=sc.inputs(sc.train_x[rows], task),
            y=sc.train_y[rows],
            valid=jnp.ones((n,), bool),
            task=task,
            logit_mask=sc.logit_mask(task),
            epoch=first_epoch + num_epochs - 1,
            index=num_epochs * self.batches_per_epoch - 1,
            task_steps=num_epochs * self.batches_per_epoch,
        )

    def _evaluate(self, lstate: PyTree, sc: Scenario, wanted: jax.Array) -> jax.Array:
        """``[T]`` int32 correct predictions per task's test set (−1 where not wanted)."""
        eb = self.eval_batch_size
        num_batches = math.ceil(sc.test_idx.shape[1] / eb)

        def task_correct(j):
            def body(total, b):
                pos = b * eb + jnp.arange(eb)
                rows = sc.test_idx[j].at[pos].get(mode="fill", fill_value=0)
                x = sc.inputs(sc.test_x[rows], j)
                logits = mask_logits(self.learner.predict(lstate, x, j), sc.logit_mask(j))
                hit = (jnp.argmax(logits, -1) == sc.test_y[rows]) & (pos < sc.test_count[j])
                return total + jnp.sum(hit, dtype=jnp.int32), None

            return jax.lax.scan(body, jnp.zeros((), jnp.int32), jnp.arange(num_batches))[0]

        def step(_, j):
            # `wanted` is the same for every seed, so this cond stays a branch under vmap.
            return None, jax.lax.cond(wanted[j], task_correct, lambda j: jnp.int32(-1), j)

        return jax.lax.scan(step, None, jnp.arange(sc.num_tasks))[1]

    def _wanted(self, task: jax.Array, num_tasks: int) -> jax.Array:
        j = jnp.arange(num_tasks)
        if self.eval_tasks == "seen":
            return j <= task
        if self.eval_tasks == "current":
            return j == task
        return jnp.ones((num_tasks,), bool)

    def _init_seed(self, key: jax.Array, sc: Scenario) -> tuple[EngineState, jax.Array]:
        k_init, k_run = jax.random.split(key)
        lstate = self.learner.init(k_init)
        wanted = jnp.full((sc.num_tasks,), self.eval_tasks == "all")
        state = EngineState(lstate, k_run, jnp.zeros((), jnp.int32), jnp.full((), -1, jnp.int32))
        return state, self._evaluate(lstate, sc, wanted)

    def _chunk_seed(
        self, state: EngineState, start: jax.Array, sc: Scenario
    ) -> tuple[EngineState, TaskRecord]:
        def task_step(state, task):
            def run_task(state):
                state, loss = self._train_task(state, sc, task)
                correct = self._evaluate(state.learner, sc, self._wanted(task, sc.num_tasks))
                diag = self.learner.diagnostics(state.learner) if self.learner.diagnostics else {}
                return state, TaskRecord(correct, loss, diag)

            def past_end(state):  # the last chunk may overhang the stream
                shape = jax.eval_shape(run_task, state)[1]
                empty = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shape)
                return state, empty._replace(
                    correct=jnp.full((sc.num_tasks,), -1, jnp.int32),
                    train_loss=jnp.float32(jnp.nan),
                )

            return jax.lax.cond(task < sc.num_tasks, run_task, past_end, state)

        tasks = start + jnp.arange(self.chunk_size, dtype=jnp.int32)
        return jax.lax.scan(task_step, state, tasks)

    # --------------------------------------------------------------------- host side
    def init(self, keys: jax.Array) -> tuple[EngineState, jax.Array]:
        """Initial carries of all seeds (sharded over devices) and pre-training counts."""
        sharding = seed_sharding(keys.shape[0])
        if sharding is not None:
            keys = jax.device_put(keys, sharding)
        state, init_correct = self._init(keys, self.scenario)
        return _place(state, sharding), init_correct

    def executable(self, state: EngineState) -> Any:
        """The compiled chunk program for ``state``'s shapes (cached).

        Compiled ahead of time, so its memory use can be inspected before it runs
        (``executable(state).memory_analysis()``) without compiling twice. ``state`` may
        be abstract (``jax.ShapeDtypeStruct`` leaves, e.g. from ``jax.eval_shape``).
        """
        leaves = jax.tree.leaves(state)
        signature = tuple((leaf.shape, leaf.dtype) for leaf in leaves)
        if signature not in self._executables:
            sharding = seed_sharding(leaves[0].shape[0])
            abstract = jax.tree.map(
                lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state
            )
            lowered = self._chunk.lower(abstract, jnp.int32(0), self.scenario)
            self._executables[signature] = lowered.compile()
        return self._executables[signature]

    @property
    def num_compiles(self) -> int:
        """How many chunk programs were compiled (one per number of seeds and sharding)."""
        return len(self._executables)

    def run_chunk(self, state: EngineState, start: int) -> tuple[EngineState, TaskRecord]:
        """Trains and evaluates tasks ``start .. start+chunk_size−1`` for every seed."""
        state = _place(state, seed_sharding(jax.tree.leaves(state)[0].shape[0]))
        return self.executable(state)(state, jnp.int32(start), self.scenario)

    def __call__(self, keys: jax.Array) -> Results:
        """Runs every task for every seed (``keys``: ``[S, 2]``) and gathers the results.

        The plain path; :func:`jaxcl.execution.run_seeds` adds checkpoints, seed groups
        and a progress bar.
        """
        keys = jnp.asarray(keys)
        if keys.ndim != 2:
            raise ValueError(f"keys must be [num_seeds, 2] PRNG keys, got shape {keys.shape}")
        state, init_correct = self.init(keys)
        records = []
        for start in range(0, self.scenario.num_tasks, self.chunk_size):
            state, record = self.run_chunk(state, start)
            records.append(jax.device_get(record))
        return self.collect(state, init_correct, records)

    def collect(
        self, state: EngineState, init_correct: jax.Array, records: Sequence[TaskRecord]
    ) -> Results:
        """Stacks per-chunk records ``[S, chunk, ...]`` into :class:`Results`."""
        t = self.scenario.num_tasks
        cat = lambda *xs: np.concatenate(xs, axis=1)[:, :t]  # noqa: E731
        stacked = (
            jax.tree.map(cat, *records)
            if len(records) > 1
            else jax.tree.map(lambda x: np.asarray(x)[:, :t], records[0])
        )
        return Results(
            correct=stacked.correct,
            count=np.asarray(self.scenario.test_count),
            init_correct=np.asarray(init_correct),
            train_loss=stacked.train_loss,
            diverged_at=np.asarray(state.diverged_at),
            diagnostics=dict(stacked.diagnostics),
        )


def make_run(scenario: Scenario, learner: Learner, **options: Any) -> Run:
    """Builds the compiled run of ``learner`` on ``scenario``.

    Args:
      scenario: the task stream (:mod:`jaxcl.scenarios`).
      learner: what to train (:mod:`jaxcl.learners`).
      **options: ``batch_size`` (required), ``epochs_per_task`` (1; an int for every
        task, or one count per task, e.g. ``(4, 1)`` for CLASSP's MNIST → Fashion-MNIST),
        ``eval_batch_size`` (1000), ``eval_tasks`` (``"all"``, ``"seen"`` or
        ``"current"``), ``chunk_size`` (tasks per host call, 1), ``shuffle`` (True: a new
        random order every epoch; False: every epoch in the task's stored order, as the
        CLASSP authors trained).

    Returns:
      A :class:`Run`; ``run(seed_keys(range(5)))`` gives :class:`Results` for 5 seeds.
    """
    return Run(scenario, learner, **options)
