"""Data loading: real MNIST from the shared tfds folder, a mocked CIFAR-shaped dataset,
the data lookup order, downloads (mocked; tests never download), clear errors for missing
data, the checksummed cache, and preprocessing."""

import json
import re
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest

from jaxcl import data


def test_missing_dataset_error_names_dataset_dirs_and_remedy(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.load("cifar100", data_dir=tmp_path)
    text = str(err.value)
    assert "'cifar100'" in text and str(tmp_path) in text and "TFDS_DATA_DIR" in text
    assert "downloads are off" in text  # tests/conftest.py sets JAXCL_NO_DOWNLOAD


def test_lookup_order_argument_env_shared_beside_checkout_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    repo_root = Path(data.__file__).resolve().parent.parent
    assert data.data_dirs(tmp_path / "arg") == [
        tmp_path / "arg",
        tmp_path / "env",
        repo_root.parent / "shared" / "data" / "tfds",
        tmp_path / "home" / "tensorflow_datasets",
    ]
    monkeypatch.delenv("TFDS_DATA_DIR")
    assert data.data_dirs()[0] == repo_root.parent / "shared" / "data" / "tfds"


def test_first_directory_holding_the_dataset_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    assert not data.available("cifar100", data_dir=tmp_path / "arg")
    _fake_tfds_dir(tmp_path / "home" / "tensorflow_datasets", "cifar100", 1, 1, (2, 2, 3), 100)
    assert data.available("cifar100", data_dir=tmp_path / "arg")
    found = data._find_version_dir("cifar100", tmp_path / "arg")
    assert found == tmp_path / "home" / "tensorflow_datasets" / "cifar100" / "1.0.0"
    _fake_tfds_dir(tmp_path / "env", "cifar100", 1, 1, (2, 2, 3), 100)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "env"))
    assert data._find_version_dir("cifar100", tmp_path / "arg").parent.parent == tmp_path / "env"
    _fake_tfds_dir(tmp_path / "arg", "cifar100", 1, 1, (2, 2, 3), 100)
    assert data._find_version_dir("cifar100", tmp_path / "arg").parent.parent == tmp_path / "arg"


class _FakeBuilder:
    """Stands in for a tfds builder: 'downloads' by writing a prepared copy."""

    def __init__(self, name, *, data_dir, file_format):
        assert file_format == "array_record"
        self.name, self.data_dir = name, Path(data_dir)
        self.url_infos = {"https://example.invalid/data.tar.gz": None}
        self.prepared_with = None

    def download_and_prepare(self, *, file_format):
        self.prepared_with = file_format
        _fake_tfds_dir(self.data_dir, self.name, 3, 2, (32, 32, 3), 100)


def _mock_tfds(monkeypatch, examples=None, *, builders=None, calls=None):
    """Fake tfds builders (recorded in ``builders``) and sources (splits read in ``calls``)."""
    import tensorflow_datasets as tfds

    def fake_builder(name, **kwargs):
        builders.append(_FakeBuilder(name, **kwargs))
        return builders[-1]

    def fake_source(name, *, split, data_dir, download):
        assert not download
        calls.append(split)
        return _ListSource(examples[split])

    if builders is not None:
        monkeypatch.setattr(tfds, "builder", fake_builder)
    monkeypatch.setattr(tfds, "data_source", fake_source)
    monkeypatch.setattr(data, "_tensorflow_installed", lambda: True)
    monkeypatch.setattr(data, "_check_reachable", lambda urls: None)


def test_missing_dataset_is_downloaded_into_the_argument_or_env_dir(tmp_path, monkeypatch):
    builders = []
    _mock_tfds(monkeypatch, builders=builders)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "env"))
    found = data._find_version_dir("cifar100", tmp_path / "arg", download=True)
    assert found == tmp_path / "arg" / "cifar100" / "1.0.0"
    assert builders[0].prepared_with == "array_record"
    found = data._find_version_dir("cifar10", None, download=True)
    assert found == tmp_path / "env" / "cifar10" / "1.0.0"
    monkeypatch.delenv("TFDS_DATA_DIR")
    found = data._find_version_dir("mnist_corrupted", None, download=True)
    assert found.parent.parent == tmp_path / "home" / "tensorflow_datasets"  # tfds's default


def test_no_download_when_disabled(tmp_path, monkeypatch):
    builders = []
    _mock_tfds(monkeypatch, builders=builders)
    with pytest.raises(data.DatasetNotFoundError, match="downloads are off"):
        data._find_version_dir("cifar100", tmp_path, download=False)
    monkeypatch.setenv("JAXCL_NO_DOWNLOAD", "1")
    with pytest.raises(data.DatasetNotFoundError, match="downloads are off"):
        data._find_version_dir("cifar100", tmp_path)
    assert builders == []


def test_offline_download_fails_fast_with_every_searched_dir(tmp_path, monkeypatch):
    # The real tfds builder and its registered download URLs; the network refuses.
    def no_network(address, *args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(data, "_tensorflow_installed", lambda: True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(data.DatasetNotFoundError) as err:
        data._find_version_dir("cifar10", tmp_path / "arg", download=True)
    text = str(err.value)
    for searched in data.data_dirs(tmp_path / "arg"):
        assert str(searched) in text
    assert "unreachable" in text and "www.cs.toronto.edu:443" in text
    assert not (tmp_path / "arg" / "cifar10").exists()


def test_reachability_probe_gives_up_after_the_connect_timeout(monkeypatch):
    seen = []

    def record(address, timeout):
        seen.append((address, timeout))
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", record)
    with pytest.raises(OSError, match=re.escape("a.example:443 within")):
        data._check_reachable(["https://a.example/x.gz", "https://a.example/y.gz"])
    assert seen == [(("a.example", 443), data.CONNECT_TIMEOUT_S)]
    assert data.CONNECT_TIMEOUT_S <= 10


def test_preparing_without_tensorflow_names_the_remedy(tmp_path, monkeypatch):
    _mock_tfds(monkeypatch, builders=[])
    monkeypatch.setattr(data, "_tensorflow_installed", lambda: False)
    with pytest.raises(data.DatasetNotFoundError, match=re.escape("pip install -e '.[download]'")):
        data._find_version_dir("cifar100", tmp_path, download=True)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.needs_data(n)) for n in ("mnist", "fashion_mnist")]
)
def test_real_dataset_shapes_and_label_counts(name):
    ds = data.load(name)
    assert ds.train_x.shape == (60000, 28, 28, 1) and ds.train_x.dtype == np.uint8
    assert ds.test_x.shape == (10000, 28, 28, 1) and ds.num_classes == 10
    if name == "mnist":  # digits in MNIST's t10k-labels-idx1-ubyte (LeCun et al. 1998)
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


def _damage(cache, kind):
    if kind == "no checksum":  # as written by jaxcl before checksums
        cache.with_name(cache.name + ".sha256").unlink()
        return
    raw = bytearray(cache.read_bytes())
    if kind == "truncated":
        raw = raw[: len(raw) // 2]
    else:
        raw[len(raw) // 2] ^= 0x10  # one bit inside the image array's bytes
    cache.write_bytes(bytes(raw))


@pytest.mark.parametrize("kind", ["truncated", "bit-flipped", "no checksum"])
def test_damaged_cache_is_named_rebuilt_and_never_read(tmp_path, monkeypatch, kind):
    examples = _fake_tfds_dir(tmp_path / "tfds", "cifar100", 4, 3, (4, 4, 3), 100)
    calls = []
    _mock_tfds(monkeypatch, examples, calls=calls)
    monkeypatch.setenv("JAXCL_CACHE_DIR", str(tmp_path / "cache"))
    cache = tmp_path / "cache" / "cifar100-1.0.0.npz"
    data._load_cached.cache_clear()
    first = data.load("cifar100", data_dir=tmp_path / "tfds")
    assert calls == ["train", "test"] and cache.with_name(cache.name + ".sha256").exists()
    _damage(cache, kind)
    data._load_cached.cache_clear()
    with pytest.warns(UserWarning, match=re.escape(str(cache))):
        again = data.load("cifar100", data_dir=tmp_path / "tfds")
    assert calls == ["train", "test"] * 2  # rebuilt from the tfds source
    for got, want in zip(again, first, strict=True):
        np.testing.assert_array_equal(got, want)
    data._load_cached.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt cache verifies and is read
        data.load("cifar100", data_dir=tmp_path / "tfds")
    assert calls == ["train", "test"] * 2
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
