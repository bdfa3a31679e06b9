"""Data loading: real MNIST from the shared tfds folder, a mocked CIFAR-shaped dataset,
clear errors for missing data, and preprocessing."""

import json
import os

import numpy as np
import pytest

from jaxcl import data


def test_missing_dataset_error_names_dataset_dirs_and_remedy(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.load("cifar100", data_dir=tmp_path)
    text = str(err.value)
    assert "'cifar100'" in text and str(tmp_path) in text and "TFDS_DATA_DIR" in text


@pytest.mark.skipif(not os.environ.get("TFDS_DATA_DIR"), reason="TFDS_DATA_DIR not set")
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_real_dataset_shapes_and_label_counts(name):
    ds = data.load(name)
    assert ds.train_x.shape == (60000, 28, 28, 1) and ds.train_x.dtype == np.uint8
    assert ds.test_x.shape == (10000, 28, 28, 1) and ds.num_classes == 10
    if name == "mnist":  # published MNIST test counts (shared/data/README.md)
        expected = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
        np.testing.assert_array_equal(np.bincount(ds.test_y), expected)
    else:
        np.testing.assert_array_equal(np.bincount(ds.train_y), [6000] * 10)


def _fake_tfds_dir(root, name, n_train, n_test, shape, num_classes):
    version = root / name / "1.0.0"
    version.mkdir(parents=True)
    (version / "dataset_info.json").write_text(json.dumps({"name": name}))
    features = {"label": {"classLabel": {"numClasses": str(num_classes)}}, "image": {}}
    (version / "features.json").write_text(json.dumps({"featuresDict": {"features": features}}))
    rng = np.random.default_rng(0)
    return {
        split: [
            {"image": rng.integers(0, 256, shape, dtype=np.uint8), "label": i % num_classes}
            for i in range(n)
        ]
        for split, n in [("train", n_train), ("test", n_test)]
    }


def test_mocked_cifar_goes_through_the_real_loader_and_cache(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    examples = _fake_tfds_dir(tmp_path / "tfds", "cifar100", 30, 20, (32, 32, 3), 100)
    calls = []

    def fake_source(name, *, split, data_dir, download):
        assert not download and name == "cifar100"
        calls.append(split)
        return _ListSource(examples[split])

    monkeypatch.setattr(tfds, "data_source", fake_source)
    monkeypatch.setenv("JAXCL_CACHE_DIR", str(tmp_path / "cache"))
    data._load_cached.cache_clear()
    ds = data.load("cifar100", data_dir=tmp_path / "tfds")
    assert ds.train_x.shape == (30, 32, 32, 3) and ds.num_classes == 100
    assert list(ds.test_y[:3]) == [0, 1, 2]
    data._load_cached.cache_clear()
    again = data.load("cifar100", data_dir=tmp_path / "tfds")  # from the .npz cache
    assert calls == ["train", "test"]
    np.testing.assert_array_equal(again.train_x, ds.train_x)
    flat = data.preprocess(ds, stats_of="cifar100")
    assert flat.train_x.shape == (30, 32 * 32 * 3) and flat.train_x.dtype == np.float32
    data._load_cached.cache_clear()


class _ListSource(list):
    def __getitems__(self, idx):
        return [self[i] for i in idx]


def _tiny():
    x = np.array([[[0], [255]], [[51], [102]]], np.uint8)  # two 2x1 "images"
    return data.ArrayDataset(x, np.array([0, 1]), x, np.array([0, 1]), 2)


def test_preprocess_scales():
    ds = _tiny()
    np.testing.assert_allclose(data.preprocess(ds, pixel_scale="unit").train_x[0], [0, 1])
    np.testing.assert_allclose(data.preprocess(ds, pixel_scale="raw").train_x[1], [51, 102])
    np.testing.assert_allclose(data.preprocess(ds, pixel_scale="minmax").train_x[1], [0, 1])
    std = data.preprocess(ds, stats_of="mnist").train_x[0]
    np.testing.assert_allclose(std, [(0 - 0.1307) / 0.3081, (1 - 0.1307) / 0.3081], rtol=1e-6)


def test_preprocess_rejects_unknown_scale_and_stats():
    with pytest.raises(ValueError, match="pixel_scale must be one of"):
        data.preprocess(_tiny(), pixel_scale="zscore")
    with pytest.raises(ValueError, match="stats_of must be one of"):
        data.preprocess(_tiny())
