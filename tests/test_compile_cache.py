"""The persistent compilation cache: where it lives, how it is turned off, that it hits."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxcl import compile_cache

ROOT = Path(__file__).resolve().parents[1]

# A program compiled in a fresh process; prints the compilation-cache events JAX records.
PROGRAM = """
import jax, jax.numpy as jnp
from jaxcl import compile_cache
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
print(compile_cache.enable())
jax.jit(lambda x: jnp.sin(x) * 3)(jnp.ones(5)).block_until_ready()
print(sorted({e.rsplit("/", 1)[-1] for e in events if e.endswith(("_hits", "_misses"))}))
"""


@pytest.mark.parametrize(
    ("env", "want"),
    [
        ({"HOME": "/h"}, Path("/h/.cache/jaxcl/jax")),
        ({"JAXCL_CACHE_DIR": "/y/cache"}, Path("/y/cache/jax")),
        ({"JAXCL_CACHE_DIR": "/y/cache", "JAXCL_COMPILE_CACHE": "0"}, None),
        ({"JAXCL_COMPILE_CACHE": "off"}, None),
        ({"JAXCL_COMPILE_CACHE": "1"}, Path("/h/.cache/jaxcl/jax")),
    ],
)
def test_the_directory_and_off(monkeypatch, env, want):
    for name in ("JAXCL_CACHE_DIR", "JAXCL_COMPILE_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", "/h")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert compile_cache.cache_dir() == want


def _run(root, switch="1"):
    env = {
        **os.environ,
        "JAXCL_CACHE_DIR": str(root),
        "JAXCL_COMPILE_CACHE": switch,
        "PYTHONPATH": str(ROOT),
    }
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.splitlines()


def test_a_second_process_loads_what_the_first_compiled(tmp_path):
    cache = tmp_path / "jax"
    assert _run(tmp_path) == [str(cache), "['cache_misses']"]
    written = sorted(cache.iterdir())
    assert written
    assert _run(tmp_path) == [str(cache), "['cache_hits']"]
    assert sorted(cache.iterdir()) == written
    assert _run(tmp_path, switch="0") == ["None", "[]"]
