"""The configuration axis: cells of traced hyperparameters, and the results of a grid run.

A :class:`Grid` holds ``C`` named cells, each giving every traced hyperparameter a value:
``values[name]`` is ``[C, ...]``, one row per cell (a scalar such as a learning rate, or
an array such as DST's per-layer counts). A grid run (``make_run(scenario, build,
grid=grid)``) calls ``build(hparams) -> Learner`` *inside* the compiled program with one
cell's values as traced arrays, so every cell runs in the same program: its rows are
``seed * C + cell``, on the axis that seeds are vmapped on (device sharding, seed groups,
checkpoints and resume treat them like seeds). What changes shapes or the program's
structure (a width, an optimizer family, a static top-k ``k``) cannot be traced: such a
hyperparameter needs a run of its own.

Validation: every cell's concrete values go through ``build`` once when the run is made,
so a bad value is refused there with the builder's own message ("rho must be >= 0, got
-0.1", the cell named in a note). Inside the program the same checks see tracers and skip
them (:func:`jaxcl._checks.concrete_real`); a check that needs a concrete Python value
(an int that sets a shape, a name) refuses a tracer with a ``TypeError``: that
hyperparameter is structural.

:class:`GridResults` is what a grid run returns: the grid and :class:`Results` whose every
leaf is ``[C, S, ...]`` (cell first, then seed); ``cell(c)`` is one cell's seed-first
:class:`Results`.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl import _checks
from jaxcl.engine._results import Results

__all__ = ["Grid", "GridResults", "grid"]


def _checked(name: str, value: Any) -> np.ndarray:
    """``value`` as a numpy array of numbers or bools, else TypeError."""
    array = np.asarray(value)
    if not (
        array.dtype == bool
        or jnp.issubdtype(array.dtype, jnp.integer)
        or jnp.issubdtype(array.dtype, jnp.floating)
    ):
        _checks.fail(name, "numbers or bools (a traced hyperparameter)", value, TypeError)
    return array


@dataclasses.dataclass(frozen=True, eq=False)
class Grid:
    """``C`` named cells of traced hyperparameters (module docstring); see :func:`grid`.

    Attributes:
      names: the cells' names, in order.
      values: ``{hyperparameter: [C, ...] array}`` (float32, int32 or bool), read-only.
    """

    names: tuple[str, ...]
    values: Mapping[str, np.ndarray]

    @property
    def num_cells(self) -> int:
        return len(self.names)

    def index(self, cell: int | str) -> int:
        """The position of ``cell`` (a name or a position)."""
        if isinstance(cell, str):
            return self.names.index(_checks.one_of("cell", cell, self.names))
        if not 0 <= _checks.integer("cell", cell) < self.num_cells:
            _checks.fail("cell", f"in [0, {self.num_cells})", cell)
        return cell

    def cell(self, cell: int | str) -> dict[str, np.ndarray]:
        """One cell's values without the cell axis: ``{hyperparameter: value}``, a Python
        number or bool for a scalar, else an array."""
        c = self.index(cell)
        return {name: v[c].item() if v.ndim == 1 else v[c] for name, v in self.values.items()}

    def take(self, cells: Any) -> dict[str, jax.Array]:
        """The values of cells ``cells`` (``[R]`` positions), stacked: ``{name: [R, ...]}``."""
        cells = np.asarray(cells)
        return {name: jnp.asarray(v[cells]) for name, v in self.values.items()}

    def record(self) -> dict[str, Any]:
        """The grid as JSON-able data (checkpoint fingerprints name every cell's values)."""
        return {
            "cells": list(self.names),
            "values": {name: v.tolist() for name, v in self.values.items()},
        }


def grid(cells: Mapping[str, Mapping[str, Any]]) -> Grid:
    """A :class:`Grid` from ``{cell name: {hyperparameter: value}}``, cells in order.

    Every cell names the same hyperparameters; a hyperparameter has one shape in every
    cell, and its values are numbers or bools (Python floats become float32, ints int32).
    Whether a value is valid is the learner builder's business: :func:`jaxcl.engine.make_run`
    checks every cell with it.

    Example:
      >>> g = grid({"lr=0.1": {"learning_rate": 0.1}, "lr=0.01": {"learning_rate": 0.01}})
      >>> g.values["learning_rate"].dtype, g.num_cells
      (dtype('float32'), 2)

    Raises:
      ValueError: no cells, an empty or repeated name, or cells that name different
        hyperparameters or give one of them different shapes.
      TypeError: a value that is not numbers or bools.
    """
    if not cells:
        _checks.fail("cells", "a non-empty mapping of cell names to hyperparameters", cells)
    names = tuple(cells)
    for name in names:
        if not isinstance(name, str) or not name:
            _checks.fail("each cell name", "a non-empty string", name)
    first = sorted(cells[names[0]])
    for name in names:
        if sorted(cells[name]) != first:
            _checks.fail(
                f"the hyperparameters of cell {name!r}", f"those of every cell {first}",
                sorted(cells[name]),
            )  # fmt: skip
    values = {}
    for hparam in first:
        rows = [_checked(hparam, cells[name][hparam]) for name in names]
        shapes = {row.shape for row in rows}
        if len(shapes) > 1:
            _checks.fail(hparam, "of one shape in every cell", sorted(shapes))
        stacked = np.stack(rows)
        stacked = stacked.astype(jax.dtypes.canonicalize_dtype(stacked.dtype))
        stacked.flags.writeable = False
        values[hparam] = stacked
    return Grid(names, types.MappingProxyType(values))


class GridResults(NamedTuple):
    """The results of a grid run: every leaf of ``results`` is ``[C, S, ...]``.

    Attributes:
      grid: the cells and their hyperparameters by name (``grid.values``).
      results: :class:`Results` with a leading cell axis before the seed axis.
    """

    grid: Grid
    results: Results

    def cell(self, cell: int | str) -> Results:
        """One cell's seed-first :class:`Results` (a name or a position)."""
        c = self.grid.index(cell)
        return jax.tree.map(lambda x: x[c], self.results)

    def items(self) -> list[tuple[str, Results]]:
        """``(cell name, Results)`` of every cell, in order."""
        return [(name, self.cell(c)) for c, name in enumerate(self.grid.names)]

    @classmethod
    def from_rows(cls, grid: Grid, rows: Results) -> GridResults:
        """From :class:`Results` of rows ``seed * C + cell`` (seed-major)."""
        c = grid.num_cells

        def by_cell(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x)
            return np.swapaxes(x.reshape(x.shape[0] // c, c, *x.shape[1:]), 0, 1)

        return cls(grid, jax.tree.map(by_cell, rows))
