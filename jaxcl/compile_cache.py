"""JAX's persistent compilation cache, for jaxcl's commands, benchmarks and tests.

On a CPU, a short run is mostly compiling: each experiment's program is compiled by XLA
before its first step. JAX can keep compiled executables on disk, keyed by the program,
its shapes and shardings, the backend and the versions of jax and jaxlib, and a later
process that compiles the same program loads it instead (JAX documentation, "Persistent
compilation cache"). :func:`enable` turns it on for this process, in ``jax/`` under
jaxcl's cache directory (:func:`jaxcl.io.cache_root`: ``$JAXCL_CACHE_DIR``, default
``~/.cache/jaxcl``). ``JAXCL_COMPILE_CACHE=0`` (or ``off``, ``false``, ``no``) turns it
off, as does an experiment's ``--no-compile-cache``.

An entry is only ever loaded by the same program on the same jax/jaxlib and backend, so a
changed program compiles afresh; the directory may be deleted at any time.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

from jaxcl.io import cache_root

__all__ = ["SWITCH_ENV", "cache_dir", "enable"]

SWITCH_ENV = "JAXCL_COMPILE_CACHE"
_OFF = ("0", "off", "false", "no")
# Cache every program: on CPU the many sub-second compiles of a run add up to most of it.
_MIN_COMPILE_SECONDS = 0.0


def cache_dir() -> Path | None:
    """The compiled programs' directory, ``<cache root>/jax``; None if switched off."""
    if os.environ.get(SWITCH_ENV, "").strip().lower() in _OFF:
        return None
    return cache_root() / "jax"


def enable() -> Path | None:
    """Turns on the persistent compilation cache in :func:`cache_dir`.

    Call it before the process compiles anything: JAX fixes its cache at the first compile.

    Returns:
      The directory in use, or None if the cache is switched off.
    """
    path = cache_dir()
    if path is None:
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", _MIN_COMPILE_SECONDS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
