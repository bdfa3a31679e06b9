"""The host driver: compiles the per-seed program once and calls it chunk by chunk.

:class:`Run` vmaps :mod:`jaxcl.engine._program` over rows and jits it: a row is a seed, or
with a grid (:mod:`jaxcl.engine._grid`) a seed of one cell, row ``seed * C + cell``. The
chunk program is compiled ahead of time, once per shapes of the carry (number of rows and
sharding), and cached, so its memory analysis can be read before it runs without
compiling twice.
The host calls it once per chunk of tasks, always with the same shapes; between chunks it
may update a progress bar or save the carry (:func:`jaxcl.execution.run_seeds`). Nothing
inside a chunk returns to the host.

Per-seed independence: the seed axis is only ever mapped (``vmap``) or split over devices,
never reduced, so a NaN in one seed never reaches another.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl import _checks
from jaxcl.engine._grid import Grid, GridResults
from jaxcl.engine._program import Build, EngineState, TaskRecord, chunk_seed, init_seed
from jaxcl.engine._results import Results
from jaxcl.engine._seeds import place, seed_keys, seed_sharding
from jaxcl.engine._spec import RunSpec
from jaxcl.processes import host_array
from jaxcl.scenarios import Scenario
from jaxcl.types import Learner

__all__ = ["Run", "make_run"]


class Run:
    """A compiled continual-learning run on ``scenario``; see :func:`make_run`.

    Attributes:
      scenario: the task stream.
      learner: what is trained: a :class:`~jaxcl.types.Learner`, or with a grid the
        function from a cell's traced hyperparameters to one.
      spec: the run's options and batch arithmetic.
      grid: the cells of a grid run, else None.
    """

    def __init__(
        self,
        scenario: Scenario,
        learner: Learner | Build,
        spec: RunSpec,
        grid: Grid | None = None,
    ):
        self.scenario = scenario
        self.learner = learner
        self.spec = spec
        self.grid = grid
        build = learner if grid is not None else lambda hparams: learner
        # The scenario is an argument, not a closed-over constant: no giant literals in HLO.
        init = functools.partial(init_seed, spec, build)
        chunk = functools.partial(chunk_seed, spec, build)
        self._init = jax.jit(jax.vmap(init, in_axes=(0, 0, None)))
        self._chunk = jax.jit(jax.vmap(chunk, in_axes=(0, None, None)), donate_argnums=0)
        self._compiled: dict[tuple, jax.stages.Compiled] = {}

    @property
    def num_cells(self) -> int:
        """``C``, the grid's cells (1 without a grid)."""
        return 1 if self.grid is None else self.grid.num_cells

    def _hparams(self, cells: Any, num_rows: int) -> dict[str, jax.Array]:
        if self.grid is None:
            if cells is not None:
                _checks.fail("cells", "None for a run without a grid", cells)
            return {}
        if cells is None or np.shape(cells) != (num_rows,):
            _checks.fail("cells", f"[{num_rows}] cell positions, one per key", cells)
        return self.grid.take(cells)

    def init(self, keys: jax.Array, cells: Any = None) -> tuple[EngineState, jax.Array]:
        """Initial carries of all rows (``keys``: ``[R, 2]``, sharded over devices) and their
        ``[R, T]`` pre-training correct counts; with a grid, row ``r`` runs cell
        ``cells[r]`` (``[R]`` positions in the grid)."""
        hparams = self._hparams(cells, keys.shape[0])
        sharding = seed_sharding(keys.shape[0])
        if sharding is not None:
            keys, hparams = jax.device_put((keys, hparams), sharding)
        state, init_correct = self._init(keys, hparams, self.scenario)
        return place(state, sharding), init_correct

    def rows(self, seeds: Sequence[int]) -> list[int]:
        """The rows of ``seeds``: ``seed * C + cell`` for every seed, then every cell."""
        c = self.num_cells
        return [seed * c + cell for seed in seeds for cell in range(c)]

    def init_rows(self, rows: Sequence[int]) -> tuple[EngineState, jax.Array]:
        """:meth:`init` of rows ``seed * C + cell`` (see :meth:`rows`): the key of
        ``PRNGKey(seed)``, the hyperparameters of ``cell``."""
        c = self.num_cells
        keys = seed_keys([r // c for r in rows])
        return self.init(keys, None if self.grid is None else [r % c for r in rows])

    def results(self, rows: Results) -> Results | GridResults:
        """:class:`Results` of rows as this run returns them: as they are without a grid,
        else :class:`GridResults` (cell axis first)."""
        return rows if self.grid is None else GridResults.from_rows(self.grid, rows)

    def abstract_state(self, num_rows: int) -> EngineState:
        """The shapes and dtypes of :meth:`init`'s carry for ``num_rows`` rows (no work)."""
        key = jax.random.PRNGKey(0)
        keys = jax.ShapeDtypeStruct((num_rows, *key.shape), key.dtype)
        values = {} if self.grid is None else self.grid.values
        hparams = {
            name: jax.ShapeDtypeStruct((num_rows, *v.shape[1:]), v.dtype)
            for name, v in values.items()
        }
        return jax.eval_shape(self._init, keys, hparams, self.scenario)[0]

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
        """How many chunk programs were compiled (one per number of rows and sharding)."""
        return len(self._compiled)

    def run_chunk(self, state: EngineState, start: int) -> tuple[EngineState, TaskRecord]:
        """Trains and evaluates tasks ``start .. start+chunk_size−1`` for every seed.

        ``state`` is donated: use the returned carry, not the one passed in.
        """
        state = place(state, seed_sharding(jax.tree.leaves(state)[0].shape[0]))
        return self.compiled_chunk(state)(state, jnp.int32(start), self.scenario)

    def __call__(self, keys: jax.Array) -> Results | GridResults:
        """Runs every task for every seed (``keys``: ``[S, 2]``), and every cell of a grid,
        and gathers the results (:meth:`results`).

        The plain path; :func:`jaxcl.execution.run_seeds` adds checkpoints, seed groups
        and a progress bar.
        """
        keys = jnp.asarray(keys)
        if keys.ndim != 2:
            raise ValueError(f"keys must be [num_seeds, 2] PRNG keys, got shape {keys.shape}")
        c = self.num_cells
        cells = None if self.grid is None else np.tile(np.arange(c), keys.shape[0])
        state, init_correct = self.init(jnp.repeat(keys, c, axis=0), cells)
        records = []
        for start in range(0, self.spec.num_tasks, self.spec.chunk_size):
            state, record = self.run_chunk(state, start)
            records.append(jax.tree.map(host_array, record))
        return self.results(self.collect(state, init_correct, records))

    def collect(
        self, state: EngineState, init_correct: jax.Array, records: Sequence[TaskRecord]
    ) -> Results:
        """:class:`Results` of the rows from the final carry, the pre-training counts and the
        records ``[R, chunk, ...]`` of consecutive chunks (tasks past the end are dropped).

        Collective in a multi-process run: the rows are gathered from every process.
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
    learner: Learner | Build,
    *,
    grid: Grid | None = None,
    batch_size: int,
    epochs_per_task: int | Sequence[int] = 1,
    eval_batch_size: int = 1000,
    eval_tasks: str = "all",
    chunk_size: int = 1,
    shuffle: bool = True,
) -> Run:
    """Builds the compiled run of ``learner`` on ``scenario``.

    With ``grid`` (:func:`jaxcl.engine.grid`), ``learner`` is a function ``hparams ->
    Learner`` of one cell's traced hyperparameters (``{name: array}``, as ``grid.values``
    without the cell axis), called inside the compiled program: every cell × seed is a row
    of the same program. Each cell's concrete values go through it here first, so a bad
    value is refused before anything is compiled, with the builder's own message (and a
    note naming the cell).

    Args:
      scenario: the task stream (:mod:`jaxcl.scenarios`).
      learner: what to train (:mod:`jaxcl.learners`), or with ``grid`` its builder.
      grid: the cells of traced hyperparameters, or None (a plain run).
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
      A :class:`Run`; ``run(seed_keys(range(5)))`` gives :class:`Results` for 5 seeds
      (with a grid, :class:`GridResults` of every cell for 5 seeds).

    Raises:
      TypeError, ValueError: a bad option (see :class:`RunSpec`), a grid that is not a
        :class:`Grid`, a builder that is not callable, or a cell's value that the builder
        refuses.
    """
    if grid is not None:
        if not isinstance(grid, Grid):
            _checks.fail("grid", "a jaxcl.engine.Grid (jaxcl.engine.grid) or None", grid, TypeError)
        if not callable(learner):
            _checks.fail("learner", "a function hparams -> Learner with a grid", learner, TypeError)
        for name in grid.names:  # each cell's concrete values, through the same checks
            try:
                learner(grid.cell(name))
            except (TypeError, ValueError) as err:
                err.add_note(f"(in the grid's cell {name!r})")
                raise
    spec = RunSpec.of(
        scenario,
        batch_size=batch_size,
        epochs_per_task=epochs_per_task,
        eval_batch_size=eval_batch_size,
        eval_tasks=eval_tasks,
        chunk_size=chunk_size,
        shuffle=shuffle,
    )
    return Run(scenario, learner, spec, grid)
