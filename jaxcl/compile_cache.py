"""JAX's persistent compilation cache, for jaxcl's commands, benchmarks and tests.

On a CPU, a short run is mostly compiling: each experiment's program is compiled by XLA
before its first step. JAX can keep compiled executables on disk, keyed by the program,
its shapes and shardings, the backend and the versions of jax and jaxlib, and a later
process that compiles the same program loads it instead (JAX documentation, "Persistent
compilation cache"). :func:`enable` turns it on for this process:

* directory: ``$JAXCL_CACHE_DIR``; unset, ``$XDG_CACHE_HOME/jaxcl/jax`` (default
  ``~/.cache/jaxcl/jax``);
* off: ``JAXCL_CACHE_DIR=off`` (or ``0``, ``none``, empty), or an experiment's
  ``--no-compile-cache``.

A cache entry can only be reused by the same program on the same jax/jaxlib and backend,
so a stale entry is never loaded for a changed program; the directory may be deleted at
any time.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

__all__ = ["CACHE_DIR_ENV", "cache_dir", "enable"]

CACHE_DIR_ENV = "JAXCL_CACHE_DIR"
_OFF = ("", "0", "off", "none")
# Cache every program: on CPU the many sub-second compiles of a run add up to most of it.
_MIN_COMPILE_SECONDS = 0.0


def cache_dir() -> Path | None:
    """The cache directory that ``$JAXCL_CACHE_DIR`` selects (module docstring); None: off."""
    value = os.environ.get(CACHE_DIR_ENV)
    if value is None:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(base) / "jaxcl" / "jax"
    if value.strip().lower() in _OFF:
        return None
    return Path(value).expanduser()


def enable(directory: str | os.PathLike | None = None) -> Path | None:
    """Turns on the persistent compilation cache in ``directory`` (default :func:`cache_dir`).

    Call it before the process compiles anything: JAX fixes its cache at the first compile.

    Returns:
      The directory in use, or None if the cache is off.
    """
    path = cache_dir() if directory is None else Path(directory)
    if path is None:
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", _MIN_COMPILE_SECONDS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
