"""The configuration axis: a grid of C cells x S seeds in one program equals each cell run
alone, compiles once, refuses bad values with the checks' grammar, and resumes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _resumable_job import build as plain_run

from jaxcl import engine, execution, learners
from jaxcl.activations import get_activation
from jaxcl.checkpoint import ConfigMismatchError
from jaxcl.models.mlp import MLP
from jaxcl.optim import get_optimizer

SCENARIO = plain_run().scenario  # 8 permuted tasks of 4 Gaussian blobs
SEEDS = [0, 1, 2]
CELLS = {  # SAM's learning rate and radius; "rho=0" is plain SGD at twice the cost
    "lr=0.05,rho=0": {"learning_rate": 0.05, "rho": 0.0},
    "lr=0.05,rho=0.1": {"learning_rate": 0.05, "rho": 0.1},
    "lr=0.01,rho=0.5": {"learning_rate": 0.01, "rho": 0.5},
}


def sam_mlp(hparams):
    model = MLP(hidden=(16,), num_classes=4, use_bias=True, weight_standardize=False)
    optimizer = get_optimizer("sam", learning_rate=hparams["learning_rate"], rho=hparams["rho"])
    return learners.supervised(model, optimizer, input_dim=8)


def grid_run(cells=CELLS, build=sam_mlp, **options):
    options = {"batch_size": 16, "chunk_size": 2, **options}
    return engine.make_run(SCENARIO, build, grid=engine.grid(cells), **options)


@pytest.fixture(scope="module")
def together():
    run = grid_run()
    return run, run(engine.seed_keys(SEEDS))


def test_a_grid_is_one_program_of_cells_x_seeds_rows(together):
    run, results = together
    assert run.num_compiles == 1  # no recompilation across cells
    assert isinstance(results, engine.GridResults)
    assert results.results.correct.shape == (3, 3, 8, 8)  # [C, S, T, T]
    assert results.grid.names == tuple(CELLS)
    np.testing.assert_allclose(results.grid.values["rho"], [0.0, 0.1, 0.5])
    assert [name for name, _ in results.items()] == list(CELLS)
    assert run.rows([0, 2]) == [0, 1, 2, 6, 7, 8]  # seed * C + cell


def test_each_cell_equals_its_run_alone_bit_for_bit(together):
    _, results = together
    for name, values in CELLS.items():
        alone = grid_run({name: values})(engine.seed_keys(SEEDS)).cell(0)
        # The same program with one cell: the cell's rows never mix with the others'.
        for got, want in zip(*map(jax.tree.leaves, (results.cell(name), alone)), strict=True):
            np.testing.assert_array_equal(got, want)
        # Its values as constants of a plain run: SAM's products lr * g and rho * d are the
        # same float32 operations whether traced or folded in.
        plain = engine.make_run(SCENARIO, sam_mlp(values), batch_size=16, chunk_size=2)
        plain = plain(engine.seed_keys(SEEDS))
        np.testing.assert_array_equal(results.cell(name).correct, plain.correct)
        np.testing.assert_allclose(results.cell(name).train_loss, plain.train_loss, rtol=1e-6)


def test_a_bad_value_is_refused_naming_the_cell():
    bad = {**CELLS, "rho<0": {"learning_rate": 0.05, "rho": -0.1}}
    with pytest.raises(ValueError, match=r"^rho must be >= 0, got -0\.1") as error:
        grid_run(bad)
    assert error.value.__notes__ == ["(in the grid's cell 'rho<0')"]


def test_checks_skip_traced_values_and_refuse_traced_structure():
    # Traced: the range check of alpha sees a tracer and lets it pass (checked above, on
    # every cell's concrete value); the value still acts.
    x = jnp.asarray([[1.0, 3.0, 0.0, -1.0]])
    traced = jax.jit(lambda a: get_activation("hard_ash", alpha=a, z_k=0.0)(x))(3.0)
    constant = get_activation("hard_ash", alpha=3.0, z_k=0.0)(x)
    np.testing.assert_allclose(traced, constant, rtol=1e-6)
    # Structural: LWTA's groups set a shape; traced, their check refuses them (TypeError).
    with pytest.raises(TypeError, match="groups must be a positive integer, got JitTracer"):
        jax.jit(lambda groups: get_activation("lwta", groups=groups)(x))(2)


@pytest.mark.parametrize(
    "cells,error,match",
    [
        ({}, ValueError, "cells must be a non-empty mapping"),
        ({"a": {"lr": 1.0}, "b": {"rho": 1.0}}, ValueError, "hyperparameters of cell 'b' must"),
        ({"a": {"w": [1.0, 2.0]}, "b": {"w": [1.0]}}, ValueError, "w must be of one shape"),
        ({"a": {"name": "adam"}}, TypeError, "name must be numbers or bools"),
    ],
)
def test_a_malformed_grid_is_refused(cells, error, match):
    with pytest.raises(error, match=match):
        engine.grid(cells)


def test_dtypes_follow_jax():
    grid = engine.grid({"a": {"lr": 0.1, "k": 2, "on": True}, "b": {"lr": 1, "k": 3, "on": 0}})
    dtypes = {name: v.dtype for name, v in grid.values.items()}
    assert dtypes == {"lr": np.float32, "k": np.int32, "on": np.int32}
    assert grid.cell("b") == {"k": 3, "lr": 1.0, "on": 0}
    with pytest.raises(ValueError, match="cell must be one of 'a', 'b', got 'c'"):
        grid.cell("c")


class Chunks:
    """A run's ``run_chunk`` that records each chunk's first task and can die at a chunk."""

    def __init__(self, run_chunk, *, die_at=None):
        self.run_chunk, self.die_at, self.starts = run_chunk, die_at, []

    def __call__(self, state, start):
        self.starts.append(start)
        if len(self.starts) == self.die_at:
            raise RuntimeError("simulated crash")
        return self.run_chunk(state, start)


def test_a_grid_resumes_bit_identically_and_refuses_another_grid(tmp_path, together, monkeypatch):
    _, reference = together
    run = grid_run()
    kwargs = dict(checkpoint_dir=tmp_path, fingerprint={"job": "grid"}, seed_chunk_size=3)
    # 9 rows in groups of 3, 4 chunks of 2 tasks each: dying at the 6th chunk leaves rows
    # 0-2 finished and rows 3-5 saved after their first chunk.
    monkeypatch.setattr(run, "run_chunk", Chunks(run.run_chunk, die_at=6))
    with pytest.raises(RuntimeError, match="simulated crash"):
        execution.run_seeds(run, SEEDS, **kwargs)
    monkeypatch.setattr(run, "run_chunk", chunks := Chunks(run.run_chunk.run_chunk))
    resumed = execution.run_seeds(run, SEEDS, **kwargs)
    assert chunks.starts == [2, 4, 6, 0, 2, 4, 6]  # rows 3-5 from task 2, then rows 6-8
    for got, want in zip(*map(jax.tree.leaves, (resumed.results, reference.results)), strict=True):
        np.testing.assert_array_equal(got, want)
    other = grid_run({**CELLS, "lr=0.01,rho=0.5": {"learning_rate": 0.01, "rho": 0.2}})
    with pytest.raises(ConfigMismatchError, match="grid: checkpoint has"):
        execution.run_seeds(other, SEEDS, **kwargs)
