"""Whole-process time of an experiment with a cold and then a warm compilation cache.

Each command runs twice as a fresh process with ``JAXCL_CACHE_DIR`` pointing at a new
directory holding only the decoded datasets (copied from the current cache root, so neither
run decodes images): the first run compiles every program and fills the compilation cache
(cold), the second loads them (warm) (:mod:`jaxcl.compile_cache`). Both write into a scratch
``--out`` with ``--no-checkpoint`` where the command takes it, so the second run redoes all
the work but the compiling. Reported: both wall times, their ratio and the cache's size.

    python benchmarks/compile_cache.py [--commands quick,default] [--out results/benchmarks]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jaxcl import compile_cache
from jaxcl.io import cache_root, write_json

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "quick": ["experiments/hard_ash.py", "--quick"],
    "default": ["experiments/hard_ash.py"],
}


def timed_process(argv: list[str], env: dict[str, str]) -> float:
    """Seconds from the start of ``python argv`` to its exit (it must succeed)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def measure(argv: list[str]) -> dict:
    """Cold then warm whole-process seconds of ``argv`` with a fresh cache directory."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "cache"
        root.mkdir()
        for arrays in cache_root().glob("*.npz*"):  # decoded datasets and their checksums
            shutil.copy2(arrays, root)
        cache = root / "jax"
        env = {**os.environ, "JAXCL_CACHE_DIR": str(root), "PYTHONPATH": str(ROOT)}
        env.pop(compile_cache.SWITCH_ENV, None)
        full = [*argv, "--out", str(Path(scratch) / "out"), "--no-checkpoint"]
        cold = timed_process(full, env)
        size = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
        entries = sum(1 for _ in cache.iterdir())
        warm = timed_process(full, env)
    return {
        "command": " ".join(["python", *argv]),
        "cold_s": round(cold, 1),
        "warm_s": round(warm, 1),
        "warm_over_cold": round(warm / cold, 3),
        "cache_entries": entries,
        "cache_mb": round(size / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", default=",".join(COMMANDS), help=f"of {list(COMMANDS)}")
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args(argv)
    names = args.commands.split(",")
    unknown = sorted(set(names) - set(COMMANDS))
    if unknown:
        parser.error(f"--commands must be among {sorted(COMMANDS)}, got {unknown}")
    rows = []
    for name in names:
        rows.append({"name": name, **measure(COMMANDS[name])})
        print(rows[-1], flush=True)
    payload = {"cpu_count": os.cpu_count(), "rows": rows}
    write_json(Path(args.out) / "compile_cache.json", payload)
    return payload


if __name__ == "__main__":
    main()
