"""One compiled program per benchmark: seeds vmapped, tasks and batches scanned.

``make_run(scenario, learner, batch_size=...)`` checks the options once and returns a
:class:`Run`. Calling it with ``[S, 2]`` PRNG keys (:func:`seed_keys`) runs every seed in
one ``jit(vmap(...))``: inside, ``lax.scan`` over tasks, then over epochs and batches.
After every task the learner is evaluated on every wanted task's test set, giving row
``t`` of the accuracy matrix ``R[t, j]``; the run returns :class:`Results`.

The configuration axis: ``make_run(scenario, build, grid=grid(...), ...)`` runs every cell
of traced hyperparameters (learning rates, ρ, densities, ...) for every seed in the same
program, as rows ``seed * C + cell`` of the vmapped axis, and returns
:class:`GridResults` (see :mod:`jaxcl.engine._grid`).

Per-seed independence: seeds share no reduction, so a NaN in one seed never reaches
another; each seed records the first step where its loss stopped being finite.

Modules:
  _spec.py      RunSpec: the options, validated, and the batch arithmetic derived from them
  _program.py   the pure program of one seed: init, one chunk of tasks (EngineState,
                TaskRecord)
  _seeds.py     one PRNG key per seed, the seed axis split over devices
  _results.py   Results (every leaf seed-first), concatenate_results
  _grid.py      the configuration axis: Grid (cells of traced hyperparameters), GridResults
  _driver.py    Run, the host driver (AOT compile cache, chunk loop), and make_run
"""

from jaxcl.engine._driver import Run, make_run
from jaxcl.engine._grid import Grid, GridResults, grid
from jaxcl.engine._program import EngineState, TaskRecord
from jaxcl.engine._results import Results, concatenate_results
from jaxcl.engine._seeds import seed_keys
from jaxcl.engine._spec import RunSpec

__all__ = [
    "EngineState",
    "Grid",
    "GridResults",
    "Results",
    "Run",
    "RunSpec",
    "TaskRecord",
    "concatenate_results",
    "grid",
    "make_run",
    "seed_keys",
]
