"""The host driver: compiles the per-seed program once and calls it chunk by chunk.

:class:`Run` vmaps :mod:`jaxcl.engine._program` over seeds and jits it. The chunk program
is compiled ahead of time, once per shapes of the carry (number of seeds and sharding),
and cached, so its memory analysis can be read before it runs without compiling twice.
The host calls it once per chunk of tasks, always with the same shapes; between chunks it
may update a progress bar or save the carry (:func:`jaxcl.execution.run_seeds`). Nothing
inside a chunk returns to the host.

Per-seed independence: the seed axis is only ever mapped (``vmap``) or split over devices,
never reduced, so a NaN in one seed never reaches another.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl.engine._program import EngineState, TaskRecord, chunk_seed, init_seed
from jaxcl.engine._results import Results
from jaxcl.engine._seeds import place, seed_sharding
from jaxcl.engine._spec import RunSpec
from jaxcl.processes import host_array
from jaxcl.scenarios import Scenario
from jaxcl.types import Learner

__all__ = ["Run", "make_run"]


class Run:
    """A compiled continual-learning run of ``learner`` on ``scenario``; see :func:`make_run`.

    Attributes:
      scenario: the task stream.
      learner: what is trained.
      spec: the run's options and batch arithmetic.
    """

    def __init__(self, scenario: Scenario, learner: Learner, spec: RunSpec):
        self.scenario = scenario
        self.learner = learner
        self.spec = spec
        # The scenario is an argument, not a closed-over constant: no giant literals in HLO.
        init = functools.partial(init_seed, spec, learner)
        chunk = functools.partial(chunk_seed, spec, learner)
        self._init = jax.jit(jax.vmap(init, in_axes=(0, None)))
        self._chunk = jax.jit(jax.vmap(chunk, in_axes=(0, None, None)), donate_argnums=0)
        self._compiled: dict[tuple, jax.stages.Compiled] = {}

    def init(self, keys: jax.Array) -> tuple[EngineState, jax.Array]:
        """Initial carries of all seeds (``keys``: ``[S, 2]``, sharded over devices) and
        their ``[S, T]`` pre-training correct counts."""
        sharding = seed_sharding(keys.shape[0])
        if sharding is not None:
            keys = jax.device_put(keys, sharding)
        state, init_correct = self._init(keys, self.scenario)
        return place(state, sharding), init_correct

    def abstract_state(self, num_seeds: int) -> EngineState:
        """The shapes and dtypes of :meth:`init`'s carry for ``num_seeds`` seeds (no work)."""
        key = jax.random.PRNGKey(0)
        keys = jax.ShapeDtypeStruct((num_seeds, *key.shape), key.dtype)
        return jax.eval_shape(self._init, keys, self.scenario)[0]

    def abstract_record(self, state: EngineState) -> TaskRecord:
        """The shapes and dtypes of a chunk's records ``[S, chunk_size, ...]`` from
        ``state`` (concrete or abstract), without compiling."""
        return jax.eval_shape(self._chunk, state, jnp.int32(0), self.scenario)[1]

    def compiled_chunk(self, state: EngineState) -> jax.stages.Compiled:
        """The compiled chunk program for ``state``'s shapes (cached).

        Compiled ahead of time, so its memory use can be inspected before it runs
        (``compiled_chunk(state).memory_analysis()``) without compiling twice. ``state``
        may be abstract (``jax.ShapeDtypeStruct`` leaves, e.g. :meth:`abstract_state`).
        """
        leaves = jax.tree.leaves(state)
        signature = tuple((leaf.shape, leaf.dtype) for leaf in leaves)
        if signature not in self._compiled:
            sharding = seed_sharding(leaves[0].shape[0])
            abstract = jax.tree.map(
                lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state
            )
            lowered = self._chunk.lower(abstract, jnp.int32(0), self.scenario)
            self._compiled[signature] = lowered.compile()
        return self._compiled[signature]

    @property
    def num_compiles(self) -> int:
        """How many chunk programs were compiled (one per number of seeds and sharding)."""
        return len(self._compiled)

    def run_chunk(self, state: EngineState, start: int) -> tuple[EngineState, TaskRecord]:
        """Trains and evaluates tasks ``start .. start+chunk_size−1`` for every seed.

        ``state`` is donated: use the returned carry, not the one passed in.
        """
        state = place(state, seed_sharding(jax.tree.leaves(state)[0].shape[0]))
        return self.compiled_chunk(state)(state, jnp.int32(start), self.scenario)

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
        for start in range(0, self.spec.num_tasks, self.spec.chunk_size):
            state, record = self.run_chunk(state, start)
            records.append(jax.tree.map(host_array, record))
        return self.collect(state, init_correct, records)

    def collect(
        self, state: EngineState, init_correct: jax.Array, records: Sequence[TaskRecord]
    ) -> Results:
        """:class:`Results` from the final carry, the pre-training counts and the records
        ``[S, chunk, ...]`` of consecutive chunks (tasks past the end are dropped).

        Collective in a multi-process run: the seed rows are gathered from every process.
        """
        t = self.spec.num_tasks
        stacked = jax.tree.map(lambda *xs: np.concatenate(xs, axis=1)[:, :t], *records)
        init_correct = host_array(init_correct)
        return Results(
            correct=stacked.correct,
            count=np.tile(np.asarray(self.scenario.test_count), (init_correct.shape[0], 1)),
            init_correct=init_correct,
            train_loss=stacked.train_loss,
            diverged_at=host_array(state.diverged_at),
            diagnostics=dict(stacked.diagnostics),
        )


def make_run(
    scenario: Scenario,
    learner: Learner,
    *,
    batch_size: int,
    epochs_per_task: int | Sequence[int] = 1,
    eval_batch_size: int = 1000,
    eval_tasks: str = "all",
    chunk_size: int = 1,
    shuffle: bool = True,
) -> Run:
    """Builds the compiled run of ``learner`` on ``scenario``.

    Args:
      scenario: the task stream (:mod:`jaxcl.scenarios`).
      learner: what to train (:mod:`jaxcl.learners`).
      batch_size: training examples per batch.
      epochs_per_task: an int for every task, or one count per task, e.g. ``(4, 1)`` for
        CLASSP's MNIST → Fashion-MNIST.
      eval_batch_size: test examples per evaluation batch.
      eval_tasks: the test sets evaluated after each task: ``"all"``, ``"seen"`` (tasks so
        far) or ``"current"``; before training every task is evaluated with ``"all"``,
        none otherwise.
      chunk_size: tasks per host call of the compiled program (the checkpoint interval of
        :func:`jaxcl.execution.run_seeds`).
      shuffle: True: a new random order every epoch; False: every epoch in the task's
        stored order, as the CLASSP authors trained.

    Returns:
      A :class:`Run`; ``run(seed_keys(range(5)))`` gives :class:`Results` for 5 seeds.

    Raises:
      TypeError, ValueError: a bad option (see :class:`RunSpec`).
    """
    spec = RunSpec(
        num_tasks=scenario.num_tasks,
        train_rows=scenario.train_idx.shape[1],
        test_rows=scenario.test_idx.shape[1],
        batch_size=batch_size,
        epochs_per_task=epochs_per_task,
        eval_batch_size=eval_batch_size,
        eval_tasks=eval_tasks,
        chunk_size=chunk_size,
        shuffle=shuffle,
    )
    return Run(scenario, learner, spec)
