"""Throughput of the headline Hard ASH run against the machine's dense matmul rate.

For 1, 4, 16 and 64 vmapped seeds it reports compile time, wall time of a whole
Split-MNIST run (5 tasks, one epoch each, plus the 6 evaluations on the 10k test set),
training examples per second per seed, and achieved FLOP/s. FLOPs are counted
analytically for the model's matmuls (forward, weight gradients and the hidden-layer
gradient; padding rows of the last partial batch are not counted); element-wise work
(weight standardisation, activation, optimizer) is not counted, so the ratio to the
measured matmul rate is an honest lower bound on how busy the machine is. The persistent
compilation cache (:mod:`jaxcl.compile_cache`) is on: with a warm cache, ``compile_s`` is
the time to load the program (``JAXCL_COMPILE_CACHE=0`` measures compiling).

    python benchmarks/throughput.py [--seeds 1,4,16,64] [--out results/throughput.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import hard_ash
from jaxcl import compile_cache, engine
from jaxcl.io import write_json


def matmul_rate(n: int = 2048, repeats: int = 10) -> float:
    """Measured FLOP/s of a dense float32 ``[n, n] @ [n, n]`` matmul (best of repeats)."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def model_flops(run: engine.Run, sizes: tuple[int, ...]) -> float:
    """Matmul FLOPs of one seed's whole run: training, then every evaluation."""
    layers = list(itertools.pairwise(sizes))
    forward = sum(2 * i * o for i, o in layers)
    # Weight gradients of every layer, input gradients of every layer but the first.
    backward = forward + sum(2 * i * o for i, o in layers[1:])
    sc = run.scenario
    train_examples = examples_per_seed(run)
    evaluations = sc.num_tasks + 1  # before training and after each task, on every task
    eval_examples = int(np.sum(sc.test_count)) * evaluations
    return train_examples * (forward + backward) + eval_examples * forward


def examples_per_seed(run: engine.Run) -> int:
    """Training examples one seed sees in a whole run (every task's epochs)."""
    return int(np.sum(np.asarray(run.scenario.train_count) * np.asarray(run.spec.epochs)))


def measure(num_seeds: int, run: engine.Run, flops_per_seed: float) -> dict:
    keys = engine.seed_keys(range(num_seeds))
    start = time.perf_counter()
    state, _ = run.init(keys)
    run.compiled_chunk(state)
    compile_s = time.perf_counter() - start
    run(keys)  # warm: every cache filled
    start = time.perf_counter()
    results = run(keys)
    wall = time.perf_counter() - start
    examples = examples_per_seed(run)
    return {
        "seeds": num_seeds,
        "compile_s": round(compile_s, 2),
        "wall_s": round(wall, 2),
        "train_examples_per_s_per_seed": round(examples / wall, 1),
        "train_examples_per_s_total": round(num_seeds * examples / wall, 1),
        "achieved_gflops": round(num_seeds * flops_per_seed / wall / 1e9, 2),
        "final_acc_mean": float(np.mean(results.pooled_accuracy[:, -1])),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="1,4,16,64", help="comma-separated seed counts")
    parser.add_argument("--out", default="results/throughput.json")
    args = parser.parse_args(argv)
    cache = compile_cache.enable()
    peak = matmul_rate()
    config = hard_ash.Config("hard_ash", "adagrad")
    run = hard_ash.build_run(config)
    flops = model_flops(run, (784, *config.hidden, 10))
    rows = []
    print(f"dense matmul rate: {peak / 1e9:.1f} GFLOP/s; model FLOPs per seed {flops / 1e9:.1f} G")
    for n in (int(s) for s in args.seeds.split(",")):
        row = measure(n, run, flops)
        row["fraction_of_matmul_rate"] = round(row["achieved_gflops"] * 1e9 / peak, 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
    payload = {
        "device": str(jax.devices()[0]),
        "compile_cache": None if cache is None else str(cache),
        "jax": jax.__version__,
        "matmul_gflops": round(peak / 1e9, 2),
        "model_gflops_per_seed": round(flops / 1e9, 2),
        "rows": rows,
    }
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
