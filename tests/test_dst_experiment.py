"""The DST experiment: the quick grid block on real Fashion-MNIST, resuming after SIGKILL,
the grid's rows of cells and seeds, and the CIFAR-100 / ResNet-18 pipeline on mocked
CIFAR-shaped data through the real loader."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import dst
from jaxcl import cli, data, engine, scenarios, sparse


def test_unknown_method_lists_valid_names(tmp_path):
    with pytest.raises(cli.UsageError, match="valid names: erk-random-s80-t5"):
        argv = ["--quick", "--out", str(tmp_path), "--methods", "erk-random-s99-t5"]
        cli.run_experiment(dst.EXPERIMENT, argv)


@pytest.mark.needs_data("fashion_mnist")
def test_quick_grid_block_writes_the_contract_files(tmp_path):
    rows = cli.run_experiment(dst.EXPERIMENT, ["--quick", "--seeds", "2", "--out", str(tmp_path)])
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["experiment"] == "dst" and len(payload["rows"]) == len(rows) == 10
    assert {r["cell"]["growth"] for r in rows} == {*dst.GROWTH_NAMES}
    for row in rows:
        assert len(row["metrics"]["acc"]["per_seed"]) == 2
        assert row["metrics"]["bwt"]["per_seed"] == [0.0, 0.0]  # no normalisation layers
        assert 0.0 < row["metrics"]["used_fraction"]["mean"] < 1.0
    assert "adaptive" in (tmp_path / "table.md").read_text()
    assert (tmp_path / "heatmap_acc_t5.png").stat().st_size > 0


# The subprocess imports this checkout's jaxcl and experiments, not installed ones.
PYTHONPATH = os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])
TWO_CELLS = ["--quick", "--seeds", "1", "--methods", "erk-random-s90-t5,uniform-momentum-s90-t5"]
TWO_CELLS += ["--checkpoint-every", "1", "--seed-chunk", "1"]  # rows (seed, cell) one by one
# The experiment in its own process, every chunk announced on stdout and slowed down.
SLOW_DST = """
import sys, time
from jaxcl import engine
from experiments import dst
from jaxcl import cli
run_chunk = engine.Run.run_chunk
def slow(self, state, start):
    print("chunk", start, flush=True)
    time.sleep(0.5)
    return run_chunk(self, state, start)
engine.Run.run_chunk = slow
cli.run_experiment(dst.EXPERIMENT, sys.argv[1:])
"""


def test_grid_rows_pair_each_seed_with_each_cell():
    config = dst.config_for("fashion_mnist", 5, quick=True, evaluation="task_il")
    rng = np.random.default_rng(0)
    ds = data.ArrayDataset(
        rng.normal(size=(40, 784)).astype(np.float32),
        np.arange(40, dtype=np.int32) % 10,
        rng.normal(size=(20, 784)).astype(np.float32),
        np.arange(20, dtype=np.int32) % 10,
        10,
    )
    head = sparse.EVALUATIONS[config.evaluation]
    scenario = scenarios.from_class_groups(ds, scenarios.class_groups(10, num_tasks=5), head=head)
    cells = [dst.Cell("erk", "random", 80, 5), dst.Cell("uniform", "gradient", 95, 5)]
    run = dst.build_grid(config, scenario, {cell.name: cell for cell in cells})
    state, _ = run.init_rows([0, 1, 2, 3, 5])  # seeds 0 0 1 1 2, cells 0 1 0 1 1
    alone = dst.build_run(config, scenario, cells[0])
    keys = [alone.init(engine.seed_keys([seed]))[0].key for seed in (0, 1, 2)]
    np.testing.assert_array_equal(state.key, np.concatenate([keys[s] for s in (0, 0, 1, 1, 2)]))
    counts = np.asarray(state.hparams["counts"])
    np.testing.assert_array_equal(counts[[0, 2]], counts[[0, 0]])  # same cell, same config
    np.testing.assert_array_equal(counts[[1, 3, 4]], counts[[1, 1, 1]])
    assert counts[1].sum() < counts[0].sum()  # 95 % sparse keeps fewer weights than 80 %


@pytest.mark.needs_data("fashion_mnist")
def test_sigkill_then_rerun_resumes_to_identical_per_cell_results(tmp_path, monkeypatch):
    argv = [*TWO_CELLS, "--out", str(tmp_path / "reference"), "--no-checkpoint"]
    reference = cli.run_experiment(dst.EXPERIMENT, argv)
    out = tmp_path / "killed"
    job = subprocess.Popen(
        [sys.executable, "-c", SLOW_DST, *TWO_CELLS, "--out", str(out)],
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        stdout=subprocess.PIPE,
        text=True,
    )
    chunks = 0
    for line in job.stdout:  # row 0: chunks 0-4; row 1: chunks 0-4
        chunks += line.startswith("chunk")
        if chunks == 8:  # row 1 is running its task 3; its tasks 1-2 are saved
            break
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert chunks == 8 and not (out / "results.json").exists()
    starts, run_chunk = [], engine.Run.run_chunk

    def counting(self, state, start):
        starts.append(start)
        return run_chunk(self, state, start)

    monkeypatch.setattr(engine.Run, "run_chunk", counting)
    resumed = cli.run_experiment(dst.EXPERIMENT, [*TWO_CELLS, "--out", str(out)])
    assert starts == [2, 3, 4]  # row 0 was finished; row 1 resumed after its task 2
    for got, want in zip(resumed, reference, strict=True):
        assert got["method"] == want["method"]
        assert got["metrics"] == want["metrics"]


def _mock_cifar100(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    version = tmp_path / "tfds" / "cifar100" / "3.0.2"
    version.mkdir(parents=True)
    (version / "dataset_info.json").write_text(json.dumps({"name": "cifar100"}))
    features = {"label": {"classLabel": {"numClasses": "100"}}, "image": {}}
    (version / "features.json").write_text(json.dumps({"featuresDict": {"features": features}}))
    rng = np.random.default_rng(0)
    examples = {
        split: [
            {"image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "label": i % 100}
            for i in range(n)
        ]
        for split, n in [("train", 200), ("test", 100)]
    }

    class Source(list):
        def __getitems__(self, idx):
            return [self[i] for i in idx]

    def fake_source(name, *, split, data_dir, download):
        assert name == "cifar100" and not download
        return Source(examples[split])

    monkeypatch.setattr(tfds, "data_source", fake_source)
    monkeypatch.setenv("JAXCL_CACHE_DIR", str(tmp_path / "cache"))
    data._load_cached.cache_clear()
    return tmp_path / "tfds"


def test_cifar100_resnet_pipeline_on_mocked_data(tmp_path, monkeypatch):
    """Real loader on mocked files, then the whole compiled-run program traced abstractly
    (jax.eval_shape: every shape checked, no XLA compile of the ResNet)."""
    data_dir = _mock_cifar100(tmp_path, monkeypatch)
    config = dst.config_for("cifar100", 5, quick=True, evaluation="authors_code")
    scenario = dst.build_scenario(config, data_dir=str(data_dir))
    data._load_cached.cache_clear()
    assert scenario.input_dim == 32 * 32 * 3 and scenario.head == "shared"
    assert scenario.task_names[1] == "/".join(map(str, range(20, 40)))
    cells = [dst.Cell("erk", "momentum", 80, 5), dst.Cell("uniform", "adaptive", 95, 5)]
    run = dst.build_grid(config, scenario, {cell.name: cell for cell in cells})
    state, _ = jax.eval_shape(lambda: run.init_rows(range(4)))
    assert state.hparams["counts"].shape == (4, 7)  # 2 seeds x 2 cells, 7 layers
    record = run.abstract_record(state)
    assert record.correct.shape == (4, run.spec.chunk_size, 5)
    assert record.diagnostics["layer_density"].shape == (4, run.spec.chunk_size, 7)
