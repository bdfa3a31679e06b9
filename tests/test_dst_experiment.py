"""The DST experiment: the quick grid block on real Fashion-MNIST, the task streams, and
the CIFAR-100 / ResNet-18 pipeline on mocked CIFAR-shaped data through the real loader."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import dst
from jaxcl import data


def test_pair_rounds_are_perfect_matchings_without_repeats():
    pairs = dst.pair_rounds(10, 4)
    assert pairs[:5] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]  # round 0 is Split-MNIST
    assert len(set(pairs)) == 20
    for r in range(4):
        assert sorted(c for p in pairs[5 * r : 5 * r + 5] for c in p) == list(range(10))
    assert dst.class_groups(100, 20)[1] == tuple(range(5, 10))  # CIFAR-100: blocks
    assert len(dst.class_groups(10, 10)) == 10
    with pytest.raises(ValueError, match="neither"):
        dst.class_groups(10, 7)


def test_unknown_method_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match="valid names: erk-random-s80-t5"):
        dst.main(["--quick", "--out", str(tmp_path), "--methods", "erk-random-s99-t5"])


@pytest.mark.skipif(not os.environ.get("TFDS_DATA_DIR"), reason="needs TFDS_DATA_DIR")
def test_quick_grid_block_writes_the_contract_files(tmp_path):
    rows = dst.main(["--quick", "--seeds", "2", "--out", str(tmp_path)])
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["experiment"] == "dst" and len(payload["rows"]) == len(rows) == 10
    assert {r["cell"]["growth"] for r in rows} == {*dst.GROWTH_NAMES}
    for row in rows:
        assert len(row["metrics"]["acc"]["per_seed"]) == 2
        assert row["metrics"]["bwt"]["per_seed"] == [0.0, 0.0]  # no normalisation layers
        assert 0.0 < row["metrics"]["used_fraction"]["mean"] < 1.0
    assert "adaptive" in (tmp_path / "table.md").read_text()
    assert (tmp_path / "heatmap_acc_t5.png").stat().st_size > 0


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
    run = dst.build_run(config, scenario, cells[0])
    keys = jax.ShapeDtypeStruct((2, 2), jnp.uint32)
    state, _ = jax.eval_shape(run._init, keys, scenario)
    state = jax.eval_shape(lambda s: dst.with_cells(run, s, cells), state)
    assert state.learner.config.counts.shape == (4, 7)  # 2 cells x 2 seeds, 7 layers
    state, record = jax.eval_shape(run._chunk, state, jnp.int32(0), scenario)
    assert record.correct.shape == (4, run.chunk_size, 5)
    assert record.diagnostics["layer_density"].shape == (4, run.chunk_size, 7)
