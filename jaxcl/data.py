"""Datasets from tensorflow-datasets as numpy arrays, converted once and cached.

Data are read with ``tfds.data_source`` (array_record, random access, no TensorFlow) from
the first of these that holds a prepared copy: the ``data_dir`` argument, ``$TFDS_DATA_DIR``,
``../shared/data/tfds`` beside the checkout (relative to the repository root) and tfds's
default directory ``~/tensorflow_datasets``. A dataset found nowhere is downloaded and
prepared by tfds into ``data_dir``, else ``$TFDS_DATA_DIR``, else the default directory,
unless downloads are off (``download=False`` or ``$JAXCL_NO_DOWNLOAD`` set, as in the
tests) or the download hosts cannot be reached within a few seconds; then a
:class:`DatasetNotFoundError` names the dataset, every directory searched and the remedy.

The decoded arrays are cached as ``.npz`` under ``$JAXCL_CACHE_DIR`` (default
``~/.cache/jaxcl``), keyed by dataset, version and split, so the PNG decoding (about 5 s
for 60k MNIST images) happens once per machine. A SHA-256 beside each cache file is
checked on every load: a damaged cache is reported by name and rebuilt, never read.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import os
import socket
import warnings
import zipfile
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import numpy as np

from jaxcl import _checks
from jaxcl.io import cache_root

__all__ = [
    "CONNECT_TIMEOUT_S",
    "NORMALIZATION_STATS",
    "PIXEL_SCALES",
    "ArrayDataset",
    "DatasetNotFoundError",
    "available",
    "data_dirs",
    "load",
    "preprocess",
]

# Per-channel (mean, std) of the training split on the [0, 1] scale.
NORMALIZATION_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    # The DST authors' constants (``muratonuryildirim/CL-with-DST`` ``utils.py`` ``load_dataset``).
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


# The repository root is the parent of the package directory; the project's shared data
# sit beside the checkout.
_SHARED_DATA_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "tfds"
# Seconds to wait for a TCP connection to a download host before calling the machine offline
# (tfds itself retries a failed connection for minutes).
CONNECT_TIMEOUT_S = 5.0


def data_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The tfds data directories searched, in order.

    The ``data_dir`` argument, ``$TFDS_DATA_DIR``, ``../shared/data/tfds`` beside the
    checkout, then tfds's default ``~/tensorflow_datasets``.
    """
    dirs = [] if data_dir is None else [Path(data_dir)]
    if os.environ.get("TFDS_DATA_DIR"):
        dirs.append(Path(os.environ["TFDS_DATA_DIR"]))
    return [*dirs, _SHARED_DATA_DIR, Path.home() / "tensorflow_datasets"]


def _download_dir(data_dir: str | os.PathLike | None) -> Path:
    """Where a missing dataset is prepared: as tfds would, never the shared directory."""
    if data_dir is not None:
        return Path(data_dir)
    return Path(os.environ.get("TFDS_DATA_DIR") or Path.home() / "tensorflow_datasets")


def _prepared_version_dir(name: str, dirs: list[Path]) -> Path | None:
    for root in dirs:
        versions = sorted((root / name).glob("*/dataset_info.json"))
        if versions:
            return versions[-1].parent  # the newest prepared version
    return None


def available(name: str, *, data_dir: str | os.PathLike | None = None) -> bool:
    """Whether a prepared copy of ``name`` is in one of :func:`data_dirs` (never downloads)."""
    return _prepared_version_dir(name, data_dirs(data_dir)) is not None


def _check_reachable(urls) -> None:
    """Raises OSError unless a TCP connection to every download host opens quickly."""
    hosts = set()
    for url in urls:
        parts = urlsplit(url)
        hosts.add((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)))
    for host, port in sorted(hosts):
        try:
            with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
                pass
        except OSError as err:
            raise OSError(
                f"no connection to {host}:{port} within {CONNECT_TIMEOUT_S:g} s: {err!r}"
            ) from err


def _tensorflow_installed() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _download_and_prepare(name: str, target: Path) -> None:
    """Lets tfds download ``name`` and prepare it as array_record under ``target``.

    Raises:
      RuntimeError: the download or preparation failed; the message says why.
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=str(target), file_format="array_record")
    except tfds.core.registered.DatasetNotFoundError as err:
        raise RuntimeError(f"tfds does not know it: {err}") from err
    try:
        _check_reachable(builder.url_infos or {})
    except OSError as err:
        raise RuntimeError(f"its download hosts are unreachable (offline?): {err}") from err
    if not _tensorflow_installed():
        raise RuntimeError(
            "tfds encodes the images with TensorFlow while preparing: install it once with "
            "`pip install -e '.[download]'`"
        )
    try:
        builder.download_and_prepare(file_format="array_record")
    except (OSError, tfds.download.DownloadError) as err:
        raise RuntimeError(f"tfds could not download and prepare it: {err}") from err


def _find_version_dir(
    name: str, data_dir: str | os.PathLike | None, download: bool | None = None
) -> Path:
    searched = data_dirs(data_dir)
    found = _prepared_version_dir(name, searched)
    if found is not None:
        return found
    if download is None:
        download = not os.environ.get("JAXCL_NO_DOWNLOAD")
    if not download:
        why = "downloads are off (download=False or $JAXCL_NO_DOWNLOAD is set)"
    else:
        target = _download_dir(data_dir)
        try:
            _download_and_prepare(name, target)
        except RuntimeError as err:
            why = f"downloading it into {target} failed: {err}"
        else:
            found = _prepared_version_dir(name, [target])
            if found is not None:
                return found
            why = f"tfds prepared nothing under {target}"
    raise DatasetNotFoundError(
        f"dataset {name!r} was not found; searched {[str(d) for d in searched]} for "
        f"'{name}/<version>/dataset_info.json', and {why}. Provide a prepared tfds copy "
        f"(array_record format) and point to it with data_dir=... or TFDS_DATA_DIR=...; in "
        f"this project MNIST and Fashion-MNIST are in ../shared/data/tfds beside the checkout."
    )


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


def _checksum_path(cache: Path) -> Path:
    return cache.with_name(cache.name + ".sha256")


def _read_cache(cache: Path, stamp: int) -> ArrayDataset | None:
    """The cached arrays, or None if the cache is missing, stale or damaged (with a warning)."""
    try:
        raw = cache.read_bytes()
    except FileNotFoundError:
        return None
    checksum = _checksum_path(cache)
    expected = checksum.read_text().strip() if checksum.exists() else None
    if hashlib.sha256(raw).hexdigest() != expected:
        problem = "has no checksum file" if expected is None else "fails its SHA-256 check"
        warnings.warn(
            f"data cache {cache} {problem} ({checksum.name}): it is damaged or incomplete; "
            f"rebuilding it from the tfds source",
            stacklevel=4,
        )
        return None
    try:
        with np.load(io.BytesIO(raw)) as z:
            if int(z["stamp"]) != stamp:
                return None  # the tfds copy was re-prepared since
            return ArrayDataset(
                z["train_x"], z["train_y"], z["test_x"], z["test_y"], int(z["num_classes"])
            )
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as err:
        warnings.warn(
            f"data cache {cache} is unreadable ({err}); rebuilding it from the tfds source",
            stacklevel=4,
        )
        return None


def _write_cache(cache: Path, stamp: int, data: ArrayDataset) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, stamp=stamp, **data._asdict())
    raw = buffer.getvalue()
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    tmp_checksum = cache.with_name(f"{cache.name}.sha256.{os.getpid()}.tmp")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(raw)
        tmp_checksum.write_text(hashlib.sha256(raw).hexdigest() + "\n")
        # A crash between the two renames leaves a mismatch, which the next load rebuilds.
        os.replace(tmp, cache)
        os.replace(tmp_checksum, _checksum_path(cache))
    except OSError:
        pass  # a read-only or full cache directory only costs the decoding time next run
    finally:
        tmp.unlink(missing_ok=True)
        tmp_checksum.unlink(missing_ok=True)


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, version_dir: Path) -> ArrayDataset:
    cache = cache_root() / f"{name}-{version_dir.name}.npz"
    # The cache key includes the source file's mtime, so a re-prepared copy is re-read.
    stamp = int((version_dir / "dataset_info.json").stat().st_mtime)
    data = _read_cache(cache, stamp)
    if data is None:
        train_x, train_y = _read_split(version_dir, name, "train")
        test_x, test_y = _read_split(version_dir, name, "test")
        data = ArrayDataset(train_x, train_y, test_x, test_y, _num_classes(version_dir))
        _write_cache(cache, stamp, data)
    return data


def load(
    name: str, *, data_dir: str | os.PathLike | None = None, download: bool | None = None
) -> ArrayDataset:
    """Loads a tfds image-classification dataset's train and test splits as uint8 arrays.

    Args:
      name: tfds name, e.g. ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``, ``"cifar100"``.
      data_dir: tfds data directory searched first (see :func:`data_dirs` for the rest).
      download: whether a dataset found nowhere may be downloaded and prepared by tfds;
        default: yes unless ``$JAXCL_NO_DOWNLOAD`` is set.

    Returns:
      An :class:`ArrayDataset` with images ``[N, H, W, C]`` uint8 and int32 labels.

    Raises:
      DatasetNotFoundError: the dataset is in none of the searched directories and could
        not be downloaded.
    """
    return _load_cached(name, _find_version_dir(name, data_dir, download).resolve())


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
    _checks.one_of("pixel_scale", pixel_scale, PIXEL_SCALES)

    def scale(x: np.ndarray) -> np.ndarray:
        x = x.reshape(x.shape[0], -1).astype(np.float32)
        if pixel_scale == "unit":
            return x / 255.0
        if pixel_scale == "raw":
            return x
        if pixel_scale == "minmax":
            lo, hi = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
            return (x - lo) / np.maximum(hi - lo, 1e-12)
        _checks.one_of("stats_of", stats_of, NORMALIZATION_STATS)
        mean, std = (np.asarray(s, np.float32) for s in NORMALIZATION_STATS[stats_of])
        channels = len(mean)
        x = x.reshape(x.shape[0], -1, channels) / 255.0
        return ((x - mean) / std).reshape(x.shape[0], -1)

    return data._replace(train_x=scale(data.train_x), test_x=scale(data.test_x))
