"""A small resumable run in its own process, for the kill/resume and device tests.

usage: python tests/_resumable_job.py OUT SEEDS SEED_CHUNK SLEEP [METHODS]
Runs METHODS (default 1) methods one after the other, as an experiment does: method 0
checkpoints in OUT/ckpt, method k > 0 in OUT/ckpt<k>. With SLEEP > 0 each chunk first
prints ``chunk <start>`` on stdout, then sleeps. Writes OUT/results.npz (method 0's
per-seed results) when every method is done.
"""

import sys
import time
from pathlib import Path

import flax.linen as nn
import numpy as np
import optax

from jaxcl import data, engine, execution, learners, scenarios


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(4)(nn.relu(nn.Dense(32)(x)))


def build() -> engine.Run:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 8)) * 2
    y, yt = np.arange(400) % 4, np.arange(100) % 4
    ds = data.ArrayDataset(
        (centers[y] + rng.normal(size=(400, 8))).astype(np.float32),
        y.astype(np.int32),
        (centers[yt] + rng.normal(size=(100, 8))).astype(np.float32),
        yt.astype(np.int32),
        4,
    )
    sc = scenarios.permuted(ds, num_tasks=8, seed=0)
    learner = learners.supervised(MLP(), optax.adam(1e-2), input_dim=8)
    return engine.make_run(sc, learner, batch_size=16, chunk_size=1)


def main(out: str, seeds: str, seed_chunk: str, sleep: str, methods: str = "1") -> None:
    run = build()
    if float(sleep) > 0:  # slow the host loop down so a test can signal it mid-chunk
        original = run.run_chunk

        def slow(state, start):
            print(f"chunk {start}", flush=True)
            time.sleep(float(sleep))
            return original(state, start)

        run.run_chunk = slow
    done = []
    for k in range(int(methods)):
        done.append(
            execution.run_seeds(
                run,
                [int(s) for s in seeds.split(",")],
                checkpoint_dir=Path(out) / ("ckpt" + (str(k) if k else "")),
                fingerprint={"job": "test", **({"method": k} if k else {})},
                seed_chunk_size=int(seed_chunk) or None,
            )
        )
        print(f"method {k} finished", flush=True)
    results = done[0]
    np.savez(
        Path(out) / "results.npz",
        correct=results.correct,
        loss=results.train_loss,
        diverged_at=results.diverged_at,
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
