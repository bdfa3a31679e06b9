"""File I/O: atomic writes, JSON files, JSON-safe floats and digests of array trees.

A write goes to a temporary file in the target directory, is flushed to disk and renamed
over the final name (POSIX ``rename`` is atomic), so a crash never leaves a half-written
file behind: readers see the old file or the new one. JSON has no NaN or infinity:
:func:`finite_or_none` writes a non-finite number (a diverged seed, a missing value) as
``null``.

This is the storage layer's only module: :mod:`jaxcl.checkpoint`, :mod:`jaxcl.execution`
and :mod:`jaxcl.report` write through it. A digest covers whole arrays, also those sharded
over the hosts of a multi-process run (:func:`jaxcl.processes.host_array`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxcl.processes import host_array

__all__ = [
    "CACHE_DIR_ENV",
    "atomic_write_bytes",
    "atomic_write_text",
    "cache_root",
    "digest",
    "finite_or_none",
    "json_ready",
    "read_json",
    "write_json",
]

CACHE_DIR_ENV = "JAXCL_CACHE_DIR"


def cache_root() -> Path:
    """jaxcl's cache directory: ``$JAXCL_CACHE_DIR``, default ``~/.cache/jaxcl``.

    It holds decoded datasets (:mod:`jaxcl.data`) and, under ``jax/``, compiled programs
    (:mod:`jaxcl.compile_cache`); everything in it can be rebuilt, so it may be deleted.
    """
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "jaxcl").expanduser()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes ``data`` to ``path`` through a temporary file and an atomic rename.

    The parent directories are created; the file is readable by everyone (0644).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def finite_or_none(x: Any) -> float | None:
    """``float(x)`` if it is finite, else None (JSON's ``null``).

    >>> finite_or_none(0.5), finite_or_none(float("nan")), finite_or_none(np.float32("inf"))
    (0.5, None, None)
    """
    x = float(x)
    return x if math.isfinite(x) else None


def _json_default(obj: Any) -> Any:
    """What ``json.dumps`` writes for a value it does not know."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    return str(obj)


def json_ready(obj: Any, *, finite: bool = False) -> Any:
    """``obj`` as :func:`write_json` stores it (tuples become lists, numpy values numbers);
    ``finite``: NaN and infinities become None (JSON's ``null``: JSON has no NaN).

    >>> json_ready({"shape": (2, 3), "lr": np.float64(0.5), "rows": np.arange(2)})
    {'shape': [2, 3], 'lr': 0.5, 'rows': [0, 1]}
    >>> json_ready({"curve": np.array([0.5, np.nan, np.inf])}, finite=True)
    {'curve': [0.5, None, None]}
    """
    text = json.dumps(obj, default=_json_default)
    return json.loads(text, parse_constant=(lambda constant: None) if finite else None)


def write_json(path: str | os.PathLike, obj: Any, *, sort_keys: bool = False) -> Path:
    """Writes ``obj`` as indented JSON (with a final newline) to ``path`` atomically.

    numpy values become numbers and lists, tuples and sets lists, anything else its
    ``str`` (as :func:`json_ready`).
    """
    text = json.dumps(obj, indent=2, sort_keys=sort_keys, default=_json_default)
    return atomic_write_text(path, text + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value in ``path`` (UTF-8).

    Raises:
      OSError: ``path`` cannot be read.
      UnicodeDecodeError: it is not UTF-8.
      json.JSONDecodeError: it is not JSON (a ``ValueError``).
    """
    return json.loads(Path(path).read_text(encoding="utf-8"))


def digest(tree: Any) -> str:
    """SHA-256 over every leaf's dtype, shape and bytes, in tree order (hex).

    Collective in a multi-process run whose ``tree`` holds arrays spread over processes.
    """
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        array = host_array(leaf)
        h.update(f"{array.dtype}{array.shape}".encode())
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()
