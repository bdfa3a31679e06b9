"""Datasets from tensorflow-datasets as numpy arrays, converted once and cached.

Data are read with ``tfds.data_source`` (array_record, random access, no TensorFlow) from
``data_dir``, else ``$TFDS_DATA_DIR``, else tfds's default directory. Nothing is ever
downloaded: a missing dataset is a :class:`DatasetNotFoundError` that names the dataset,
the directories searched and how to provide the data.

The decoded arrays are cached as ``.npz`` under ``$JAXCL_CACHE_DIR`` (default
``~/.cache/jaxcl``), keyed by dataset, version and split, so the PNG decoding (about 5 s
for 60k MNIST images) happens once per machine.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

# Per-channel (mean, std) of the training split on the [0, 1] scale.
NORMALIZATION_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    # The DST authors' constants (algorithms.md §3(c)).
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
PIXEL_SCALES = ("standardize", "unit", "raw", "minmax")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not in any of the searched tfds data directories."""


class ArrayDataset(NamedTuple):
    """A dataset's train and test splits as host arrays.

    Attributes:
      train_x: ``[N, ...]`` images (uint8 as stored, or float32 after :func:`preprocess`).
      train_y: ``[N]`` int32 labels.
      test_x: ``[M, ...]`` images.
      test_y: ``[M]`` int32 labels.
      num_classes: number of classes.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int


def data_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The tfds data directories searched, in order: argument, ``$TFDS_DATA_DIR``, default."""
    if data_dir is not None:
        return [Path(data_dir)]
    dirs = []
    if os.environ.get("TFDS_DATA_DIR"):
        dirs.append(Path(os.environ["TFDS_DATA_DIR"]))
    dirs.append(Path.home() / "tensorflow_datasets")
    return dirs


def _find_version_dir(name: str, data_dir: str | os.PathLike | None) -> Path:
    searched = data_dirs(data_dir)
    for root in searched:
        versions = sorted((root / name).glob("*/dataset_info.json"))
        if versions:
            return versions[-1].parent  # the newest prepared version
    raise DatasetNotFoundError(
        f"dataset {name!r} was not found; searched {[str(d) for d in searched]} for "
        f"'{name}/<version>/dataset_info.json'. Provide a prepared tfds copy (array_record "
        f"format) and point to it with data_dir=... or TFDS_DATA_DIR=...; in this project "
        f"MNIST and Fashion-MNIST are in ../shared/data/tfds (see its README). jaxcl never "
        f"downloads data."
    )


def _cache_dir() -> Path:
    return Path(os.environ.get("JAXCL_CACHE_DIR", Path.home() / ".cache" / "jaxcl"))


def _read_split(version_dir: Path, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_datasets as tfds

    source = tfds.data_source(
        name, split=split, data_dir=str(version_dir.parent.parent), download=False
    )
    examples = source.__getitems__(range(len(source)))
    images = np.stack([ex["image"] for ex in examples])
    labels = np.asarray([ex["label"] for ex in examples], dtype=np.int32)
    return images, labels


def _num_classes(version_dir: Path) -> int:
    import json

    # tfds writes the feature spec to features.json (older versions: into dataset_info.json).
    for name in ("features.json", "dataset_info.json"):
        path = version_dir / name
        if not path.exists():
            continue
        spec = json.loads(path.read_text())
        spec = spec.get("features", spec)
        for feature in spec.get("featuresDict", {}).get("features", {}).values():
            if "classLabel" in feature:
                return int(feature["classLabel"]["numClasses"])
    raise ValueError(f"no class label feature found in {version_dir}")


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, version_dir: Path) -> ArrayDataset:
    cache = _cache_dir() / f"{name}-{version_dir.name}.npz"
    # The cache key includes the source file's mtime, so a re-prepared copy is re-read.
    stamp = int((version_dir / "dataset_info.json").stat().st_mtime)
    if cache.exists():
        with np.load(cache) as z:
            if int(z["stamp"]) == stamp:
                return ArrayDataset(
                    z["train_x"], z["train_y"], z["test_x"], z["test_y"], int(z["num_classes"])
                )
    train_x, train_y = _read_split(version_dir, name, "train")
    test_x, test_y = _read_split(version_dir, name, "test")
    data = ArrayDataset(train_x, train_y, test_x, test_y, _num_classes(version_dir))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, stamp=stamp, **data._asdict())
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only cache directory only costs the decoding time next run
    return data


def load(name: str, *, data_dir: str | os.PathLike | None = None) -> ArrayDataset:
    """Loads a tfds image-classification dataset's train and test splits as uint8 arrays.

    Args:
      name: tfds name, e.g. ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``, ``"cifar100"``.
      data_dir: tfds data directory; default ``$TFDS_DATA_DIR`` then ``~/tensorflow_datasets``.

    Returns:
      An :class:`ArrayDataset` with images ``[N, H, W, C]`` uint8 and int32 labels.

    Raises:
      DatasetNotFoundError: the dataset is in none of the searched directories.
    """
    return _load_cached(name, _find_version_dir(name, data_dir).resolve())


def preprocess(
    data: ArrayDataset, *, pixel_scale: str = "standardize", stats_of: str | None = None
) -> ArrayDataset:
    """Flattens images to ``[N, D]`` float32 and rescales pixels.

    Args:
      data: uint8 images as returned by :func:`load`.
      pixel_scale: ``"standardize"``: (x/255 − mean)/std with the dataset's statistics;
        ``"unit"``: x/255; ``"raw"``: x in [0, 255] (the SDM paper's baselines);
        ``"minmax"``: per-example min-max scaling to [0, 1] (FlyModel).
      stats_of: whose mean/std ``"standardize"`` uses (the CLASSP code uses MNIST's for
        Fashion-MNIST too); required for ``"standardize"``.
    """
    if pixel_scale not in PIXEL_SCALES:
        raise ValueError(f"pixel_scale must be one of {PIXEL_SCALES}, got {pixel_scale!r}")

    def scale(x: np.ndarray) -> np.ndarray:
        x = x.reshape(x.shape[0], -1).astype(np.float32)
        if pixel_scale == "unit":
            return x / 255.0
        if pixel_scale == "raw":
            return x
        if pixel_scale == "minmax":
            lo, hi = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
            return (x - lo) / np.maximum(hi - lo, 1e-12)
        if stats_of not in NORMALIZATION_STATS:
            raise ValueError(
                f"stats_of must be one of {sorted(NORMALIZATION_STATS)} for "
                f"pixel_scale='standardize', got {stats_of!r}"
            )
        mean, std = (np.asarray(s, np.float32) for s in NORMALIZATION_STATS[stats_of])
        channels = len(mean)
        x = x.reshape(x.shape[0], -1, channels) / 255.0
        return ((x - mean) / std).reshape(x.shape[0], -1)

    return data._replace(train_x=scale(data.train_x), test_x=scale(data.test_x))
