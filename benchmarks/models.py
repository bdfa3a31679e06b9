"""Training-step speed of each model family against the large-matmul rate and its roofline probe.

For every family (SDMLP 1K and 10K, the CLASSP CNN, the DST CNN, ResNet-18 on 32×32
inputs, the Hard ASH MLP) and 1 and 5 vmapped seeds, it times what the experiments run:
``jit(vmap(scan(learner.update)))`` over fixed batches, with the learner, model, optimizer
and batch size that the experiment's own builder makes (``experiments/<name>.py``,
``build_run``) on synthetic data of the real shapes. Each batch is per seed, as the
engine gathers it. The rows: SDM's ``sdmlp_k10`` (1K) and ``sdmlp_10k`` (GABA Top-K, SGD
with global-norm clipping, batch 128), CLASSP's ``classp_paper`` (batch 32), DST's
``erk-random-s90-t5`` cell with the Fashion-MNIST CNN and with the CIFAR-100 ResNet-18
(masked Adam, batch 64), Hard ASH's ``hard_ash+adagrad`` (batch 64). Two references are
measured in the same run:

* the **large-matmul rate**: a dense float32 2048×2048 matmul
  (:func:`benchmarks.throughput.matmul_rate`);
* the family's **roofline probe**: the same layer shapes as bare matmuls (a convolution as
  its im2col matmul ``[B·H'·W', kh·kw·C] @ [kh·kw·C, O]``, of the same FLOPs), forward,
  weight gradient and input gradient (none for the first layer), followed by the family's
  own optimizer update, in a ``lax.scan``: the most a step of that shape can reach here.
  What a step does beyond that (activations, normalisation, top-k, dropout, SDM's weight
  projection, DST's masks and topology updates, im2col copies) is what the fraction of
  the probe charges it for.

FLOPs are counted two ways. *Analytic*: ``2·M·K·N`` per matmul/conv layer of the forward
pass (read from the jaxpr of ``learner.predict``), three times per layer (forward, weight
and input gradients) except twice for the first; element-wise work (activations,
normalisation, optimizer, masks, top-k) is not counted. *Compiled*: XLA's
``compiled.cost_analysis()["flops"]`` of the timed program per step, which also counts
element-wise work. Achieved GFLOP/s and both fractions use the **analytic** count, so the
fraction of the probe is exactly the probe's step time over the family's.

Deviations from the experiments, none of which changes the work of a step: synthetic data
(64 examples per class), so schedules sized by the data (SDM's GABA T, DST's learning-rate
and death-rate schedules) differ; one fixed set of batches of task 0; DST's topology update
runs at its real frequency (every 10 steps for the CNN; ResNet-18's every 100 does not
fall in the few steps timed).

    python benchmarks/models.py [--seeds 1,5] [--families ...] [--out results/benchmarks]
    python benchmarks/models.py --quick        # tiny shapes, 2 steps: a smoke run

Measured on an AMD EPYC machine (2 CPU cores, otherwise idle), jax 0.10.2, with
``python benchmarks/models.py --resnet-batch-size 16`` (2.6 min wall; ResNet-18 at batch
16, its experiment's is 64; steps timed per call: SDMLP 10K 5, CLASSP 10, ResNet-18 2,
the others 20; ResNet-18's 5-seed call timed once). Large-matmul rate 200.5 GFLOP/s.
GFLOP per step (all seeds) and GFLOP/s are analytic; "probe/mm" is the probe's own
fraction of the large-matmul rate; "before" is the same benchmark just before the speed
work (top-k by bisection, kernel gradients as one xᵀg product, ResNet's convolutions as
patch matrix products on CPU, the standardised matmul's written-out gradient)::

    family         seeds batch   step ms  GFLOP  GFLOP/s  of mm  probe/mm  of probe (before)
    sdmlp_1k           1   128      3.35  0.409    122.1   0.61      0.84      0.73   (0.51)
    sdmlp_1k           5   128     20.00   2.05    102.3   0.51      0.73      0.70   (0.70)
    sdmlp_10k          1   128     41.11   4.09     99.5   0.50      0.66      0.75   (0.42)
    sdmlp_10k          5   128    215.02   20.5     95.1   0.47      0.62      0.76   (0.19)
    classp_cnn         1    32     26.69   2.29     85.8   0.43      0.64      0.67   (0.66)
    classp_cnn         5    32    134.75   11.5     85.0   0.42      0.65      0.66   (0.68)
    dst_cnn            1    64      1.27 0.0448     35.3   0.18      0.34      0.51   (0.20)
    dst_cnn            5    64      6.99  0.224     32.0   0.16      0.25      0.65   (0.12)
    resnet18           1    16    177.09   13.4     75.9   0.38      0.52      0.73   (0.04)
    resnet18           5    16    981.97   67.2     68.5   0.34      0.51      0.67   (0.04)
    hard_ash_mlp       1    64      2.00  0.205    102.5   0.51      0.67      0.77   (0.52)
    hard_ash_mlp       5    64     11.51   1.02     88.9   0.44      0.57      0.78   (0.63)

Single runs: repeated ones vary by up to ~20 % per row (the DST CNN's 5-seed step
measured 5.8 and 7.0 ms, its probe 49-71 GFLOP/s). XLA's compiled count is 1.03-1.8× the
analytic one (most for ResNet-18's patch copies and the DST CNN's masks and topology
updates, element-wise work the analytic count leaves out). Below 0.8 of the probe: what
the probe does not charge for, the DST CNN's masks and topology updates, SDMLP's top-k and
weight projection, the CNNs' element-wise layers and XLA:CPU's per-operation overhead at
these small shapes; the CNNs' patch copies cost less (``benchmarks/conv.py``: the CLASSP
CNN's main convolution with its gradients at 0.84-0.88 of its bare products).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.extend import core as jex_core

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.throughput import matmul_rate
from experiments import classp, dst, hard_ash, sdm
from jaxcl import compile_cache, data, engine, learners, report, scenarios, types
from jaxcl.io import write_json

PyTree = Any

# data_dir of the synthetic loader: no real load uses it, so a dataset cache keyed by
# data_dir never mixes synthetic with real data.
SYNTHETIC = "<synthetic-benchmark-data>"
# Image shape and number of classes of the datasets the experiments load.
IMAGES = {
    "mnist": ((28, 28, 1), 10),
    "fashion_mnist": ((28, 28, 1), 10),
    "cifar100": ((32, 32, 3), 100),
}
TRAIN_PER_CLASS = 64  # a Split-MNIST task (2 classes) fills SDM's batch of 128
TEST_PER_CLASS = 4
QUICK_STEPS = 2
SLOW_CALL_S = 10.0


class Layer(NamedTuple):
    """A matmul of the forward pass, ``[m, k] @ [k, n]`` (a conv as its im2col matmul)."""

    kind: str  # "dot" or "conv"
    m: int
    k: int
    n: int

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n


class Setup(NamedTuple):
    """One family as its experiment builds it.

    Attributes:
      learner: the experiment's learner.
      optimizer: the optax transformation given to the learner.
      update_args: extra arguments the learner passes to ``optimizer.update`` that change
        its work (DST's ``mask``), as a function of the parameters.
      scenario: the (synthetic) scenario the learner was built for.
      batch_size: examples per step.
      config: the experiment's configuration (recorded in the results).
    """

    learner: types.Learner
    optimizer: optax.GradientTransformation
    update_args: Callable[[PyTree], dict[str, Any]]
    scenario: scenarios.Scenario
    batch_size: int
    config: Any


class Family(NamedTuple):
    name: str
    build: Callable[[bool, int | None], Setup]  # (quick, batch size override) -> Setup
    steps: int  # timed steps per call in a full run


def synthetic_load(name: str, *, data_dir: Any = None, **_: Any) -> data.ArrayDataset:
    """Random uint8 images of dataset ``name``'s shape, every class equally often."""
    if data_dir != SYNTHETIC:
        raise ValueError(f"data_dir must be the benchmark's {SYNTHETIC!r}, got {data_dir!r}")
    if name not in IMAGES:
        raise ValueError(f"name must be one of {sorted(IMAGES)}, got {name!r}")
    shape, classes = IMAGES[name]
    rng = np.random.default_rng(0)

    def split(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.tile(np.arange(classes, dtype=np.int32), per_class)
        return rng.integers(0, 256, (len(y), *shape), dtype=np.uint8), y

    return data.ArrayDataset(*split(TRAIN_PER_CLASS), *split(TEST_PER_CLASS), classes)


@contextlib.contextmanager
def recording(module: Any, name: str) -> Iterator[list[tuple[tuple, dict]]]:
    """Patches ``module.name`` to record the arguments of every call (then call it)."""
    original = getattr(module, name)
    calls: list[tuple[tuple, dict]] = []

    def record(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    with mock.patch.object(module, name, record):
        yield calls


def _built(build_run: Callable[[], engine.Run], constructor: str, config: Any) -> Setup:
    """Runs an experiment's builder on synthetic data, recording the learner's ingredients."""
    with (
        mock.patch.object(data, "load", synthetic_load),
        recording(learners, constructor) as calls,
    ):
        run = build_run()
    if len(calls) != 1:
        raise RuntimeError(f"the builder must make one {constructor} learner, made {len(calls)}")
    (_, optimizer, *_), _ = calls[0]
    update_args = _all_free if constructor == "dst" else _no_args
    return Setup(run.learner, optimizer, update_args, run.scenario, run.spec.batch_size, config)


def _all_free(params: PyTree) -> dict[str, Any]:
    """DST's ``mask=`` in its first task: every weight is free."""
    return {"mask": jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)}


def _no_args(params: PyTree) -> dict[str, Any]:
    return {}


def _resized(config: Any, batch_size: int | None) -> Any:
    return config if batch_size is None else dataclasses.replace(config, batch_size=batch_size)


def sdmlp(method: str) -> Callable[[bool, int | None], Setup]:
    """An SDM row (``experiments/sdm.py``) at its default 10 epochs per task."""

    def build(quick: bool, batch_size: int | None) -> Setup:
        config = sdm.config_for(
            sdm.METHODS[method], dataset="mnist", epochs_per_task=10, pixel_scale="raw", quick=quick
        )
        config = _resized(config, batch_size)
        return _built(lambda: sdm.build_run(config, data_dir=SYNTHETIC), "sdmlp", config)

    return build


def classp_cnn(quick: bool, batch_size: int | None) -> Setup:
    """``classp_paper`` of ``experiments/classp.py`` (the PyTorch MNIST CNN, CLASSP, batch 32)."""
    config = _resized(classp.METHODS["classp_paper"], batch_size or (4 if quick else None))
    return _built(lambda: classp.build_run(config, data_dir=SYNTHETIC), "supervised", config)


def dst_model(dataset: str) -> Callable[[bool, int | None], Setup]:
    """An ERK, random-growth, 90 %-sparse, 5-task cell of ``experiments/dst.py``: the CNN on
    Fashion-MNIST, ResNet-18 on CIFAR-100 (masked Adam, batch 64)."""

    def build(quick: bool, batch_size: int | None) -> Setup:
        config = _resized(dst.config_for(dataset, 5, quick=quick, evaluation="task_il"), batch_size)

        def build_run():
            scenario = dst.build_scenario(config, data_dir=SYNTHETIC)
            return dst.build_run(config, scenario, dst.Cell("erk", "random", 90, 5))

        return _built(build_run, "dst", config)

    return build


def hard_ash_mlp(quick: bool, batch_size: int | None) -> Setup:
    """The headline ``hard_ash+adagrad`` of ``experiments/hard_ash.py`` (784-1000-10, batch 64)."""
    headline = hard_ash.configure(hard_ash.METHODS["hard_ash+adagrad"], quick=quick)
    config = _resized(headline, batch_size)
    return _built(lambda: hard_ash.build_run(config, data_dir=SYNTHETIC), "supervised", config)


FAMILIES = (
    Family("sdmlp_1k", sdmlp("sdmlp_k10"), steps=20),
    Family("sdmlp_10k", sdmlp("sdmlp_10k"), steps=5),
    Family("classp_cnn", classp_cnn, steps=10),
    Family("dst_cnn", dst_model("fashion_mnist"), steps=20),
    Family("resnet18", dst_model("cifar100"), steps=2),
    Family("hard_ash_mlp", hard_ash_mlp, steps=20),
)
FAMILY_NAMES = tuple(f.name for f in FAMILIES)


# ------------------------------------------------------------------ analytic FLOPs
def _prod(xs) -> int:
    return math.prod(int(x) for x in xs)


def _layer(eqn: Any) -> Layer | None:
    """The matmul of a ``dot_general`` or ``conv_general_dilated`` equation, else None."""
    name = eqn.primitive.name
    if name == "dot_general":
        (lc, rc), (lb, _) = eqn.params["dimension_numbers"]
        lhs, rhs = (v.aval.shape for v in eqn.invars)
        if lb:
            raise ValueError(f"batched dot_general (batch dims {lb}) is not a layer")
        m = _prod(d for i, d in enumerate(lhs) if i not in lc)
        n = _prod(d for i, d in enumerate(rhs) if i not in rc)
        return Layer("dot", m, _prod(lhs[i] for i in lc), n)
    if name == "conv_general_dilated":
        if eqn.params["feature_group_count"] != 1 or eqn.params["batch_group_count"] != 1:
            raise ValueError("grouped convolutions are not counted")
        _, rhs_spec, out_spec = eqn.params["dimension_numbers"]
        kernel, out = eqn.invars[1].aval.shape, eqn.outvars[0].aval.shape
        k = kernel[rhs_spec[1]] * _prod(kernel[i] for i in rhs_spec[2:])
        m = out[out_spec[0]] * _prod(out[i] for i in out_spec[2:])
        return Layer("conv", m, k, kernel[rhs_spec[0]])
    return None


def _layers_of(jaxpr: Any) -> list[Layer]:
    layers = []
    for eqn in jaxpr.eqns:
        if "branches" in eqn.params or eqn.primitive.name in ("scan", "while"):
            raise ValueError(f"forward passes with {eqn.primitive.name} are not counted")
        layer = _layer(eqn)
        if layer is not None:
            layers.append(layer)
        for sub in jex_core.jaxprs_in_params(eqn.params):
            layers += _layers_of(sub)
    return layers


def forward_layers(setup: Setup, state: PyTree) -> list[Layer]:
    """The matmul/conv layers of one seed's forward pass on a batch, in order."""
    x = jnp.zeros((setup.batch_size, setup.scenario.input_dim), jnp.float32)
    closed = jax.make_jaxpr(lambda s, x: setup.learner.predict(s, x, jnp.int32(0)))(state, x)
    layers = _layers_of(closed.jaxpr)
    if not layers:
        raise ValueError("the forward pass has no matmul or convolution")
    return layers


def step_flops(layers: list[Layer]) -> int:
    """Forward, weight-gradient and input-gradient FLOPs (no input gradient for the first)."""
    return sum((2 if i == 0 else 3) * layer.flops for i, layer in enumerate(layers))


@functools.cache
def counted_iterations(steps: int) -> int:
    """How many iterations of a ``steps``-long scan XLA's cost analysis counts (1 or steps)."""

    def flops(n: int) -> float:
        loop = jax.jit(lambda w: jax.lax.scan(lambda w, _: (w @ w, None), w, None, length=n)[0])
        return loop.lower(jnp.ones((8, 8), jnp.float32)).compile().cost_analysis()["flops"]

    return steps if flops(2 * steps) > 1.5 * flops(steps) else 1


# ------------------------------------------------------------------ timed programs
def _call_seconds(compiled: Any, args: tuple) -> float:
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    return time.perf_counter() - start


def timed(compiled: Any, args: tuple, repeats: int) -> float:
    """Best wall time of ``repeats`` calls after a warm-up call.

    A warm-up call longer than :data:`SLOW_CALL_S` is the measurement itself (one-time
    costs are negligible at that length), which keeps ResNet-18's 5 seeds affordable.
    """
    first = _call_seconds(compiled, args)
    if first > SLOW_CALL_S:
        return first
    return min(_call_seconds(compiled, args) for _ in range(repeats))


def fixed_batches(setup: Setup, *, steps: int, seeds: int) -> types.Batch:
    """``steps`` batches of task 0 (x and y per seed, as the engine gathers them)."""
    sc = setup.scenario
    if sc.input_perm is not None:
        raise ValueError("scenarios with an input transform are not benchmarked")
    task_rows = np.asarray(sc.train_idx[0, : int(sc.train_count[0])])
    rows = task_rows[np.arange(steps * setup.batch_size) % len(task_rows)]
    x = np.asarray(sc.train_x)[rows].reshape(steps, setup.batch_size, -1)
    y = np.asarray(sc.train_y)[rows].reshape(steps, setup.batch_size)
    logit_mask = np.asarray(sc.logit_mask(0))
    return types.Batch(
        x=jnp.asarray(np.broadcast_to(x, (seeds, *x.shape))),
        y=jnp.asarray(np.broadcast_to(y, (seeds, *y.shape))),
        valid=jnp.ones((steps, setup.batch_size), bool),
        task=jnp.zeros((steps,), jnp.int32),
        logit_mask=jnp.asarray(np.broadcast_to(logit_mask, (steps, sc.num_classes))),
        epoch=jnp.zeros((steps,), jnp.int32),
        index=jnp.arange(steps, dtype=jnp.int32),
        task_steps=jnp.full((steps,), steps, jnp.int32),
    )


# Per seed: x and y; shared, as in the engine: everything that does not depend on the seed.
BATCH_AXES = types.Batch(
    x=0, y=0, valid=None, task=None, logit_mask=None, epoch=None, index=None, task_steps=None
)


def initial_states(setup: Setup, seeds: int) -> tuple[PyTree, jax.Array]:
    """Each seed's learner state at the start of task 0, and its key for the steps."""

    def init(key):
        k_init, k_task, k_steps = jax.random.split(key, 3)
        state = setup.learner.init(k_init)
        return setup.learner.begin_task(state, jnp.int32(0), k_task), k_steps

    return jax.jit(jax.vmap(init))(engine.seed_keys(range(seeds)))


def train_program(setup: Setup, states: PyTree, keys: jax.Array, batches: types.Batch):
    """The compiled ``vmap(scan(learner.update))`` over the batches."""

    def run(state, key, batches):
        def step(carry, batch):
            state, key = carry
            key, k_step = jax.random.split(key)
            state, loss = setup.learner.update(state, batch, k_step)
            return (state, key), loss

        return jax.lax.scan(step, (state, key), batches)

    program = jax.jit(jax.vmap(run, in_axes=(0, 0, BATCH_AXES)))
    return program.lower(states, keys, batches).compile()


def probe_program(setup: Setup, layers: list[Layer], *, seeds: int, steps: int):
    """The compiled roofline probe and its arguments (module docstring).

    Per seed and layer, fixed inputs ``a [m, k]`` and targets ``t [m, n]``; each step
    computes ``y = a W``, ``e = s (y − t)`` (the gradient of a least-squares loss, with
    ``s = 1/(√m + √k)²`` so that the optimizer's steps stay stable), the weight gradient
    ``aᵀ e`` and, but for the first layer, the input gradient ``e Wᵀ``, then the family's
    optimizer update of all weights.
    """
    optimizer = optax.with_extra_args_support(setup.optimizer)
    scales = [1.0 / (math.sqrt(layer.m) + math.sqrt(layer.k)) ** 2 for layer in layers]

    rng = np.random.default_rng(0)

    def normal(*shape: int, scale: float = 1.0) -> jax.Array:  # per seed; no compile
        return jnp.asarray(scale * rng.standard_normal((seeds, *shape), np.float32))

    params = [normal(layer.k, layer.n, scale=layer.k**-0.5) for layer in layers]
    inputs = [normal(layer.m, layer.k) for layer in layers]
    targets = [normal(layer.m, layer.n) for layer in layers]

    def run(params, opt_state, inputs, targets):
        def step(carry, _):
            params, opt_state, _ = carry
            grads, input_grads = [], []
            for i, (w, a, t, s) in enumerate(zip(params, inputs, targets, scales, strict=True)):
                e = s * (a @ w - t)
                grads.append(a.T @ e)
                if i > 0:
                    input_grads.append(e @ w.T)
            args = setup.update_args(params)
            updates, opt_state = optimizer.update(grads, opt_state, params, **args)
            return (optax.apply_updates(params, updates), opt_state, input_grads), None

        zeros = [jnp.zeros((layer.m, layer.k)) for layer in layers[1:]]
        return jax.lax.scan(step, (params, opt_state, zeros), None, length=steps)[0]

    args = (params, jax.jit(jax.vmap(optimizer.init))(params), inputs, targets)
    return jax.jit(jax.vmap(run)).lower(*args).compile(), args


def _cost_flops(compiled: Any, steps: int) -> float:
    return float(compiled.cost_analysis()["flops"]) / counted_iterations(steps)


def measure(
    family: Family, setup: Setup, *, seeds: int, steps: int, repeats: int, matmul: float
) -> tuple[dict, list[Layer]]:
    """One row: the family's step and its probe, for ``seeds`` vmapped seeds."""
    start = time.perf_counter()
    states, keys = initial_states(setup, seeds)
    batches = fixed_batches(setup, steps=steps, seeds=seeds)
    train = train_program(setup, states, keys, batches)
    compile_s = time.perf_counter() - start
    step_s = timed(train, (states, keys, batches), repeats) / steps
    layers = forward_layers(setup, jax.tree.map(lambda a: a[0], states))
    probe, probe_args = probe_program(setup, layers, seeds=seeds, steps=steps)
    probe_s = timed(probe, probe_args, repeats) / steps
    analytic = seeds * step_flops(layers)
    achieved, ceiling = analytic / step_s, analytic / probe_s
    row = {
        "family": family.name,
        "seeds": seeds,
        "batch_size": setup.batch_size,
        "steps_timed": steps,
        "compile_s": round(compile_s, 2),
        "step_ms": round(1e3 * step_s, 3),
        "probe_step_ms": round(1e3 * probe_s, 3),
        "analytic_gflop_per_step": analytic / 1e9,
        "compiled_gflop_per_step": _cost_flops(train, steps) / 1e9,
        "probe_compiled_gflop_per_step": _cost_flops(probe, steps) / 1e9,
        "achieved_gflops": achieved / 1e9,
        "probe_gflops": ceiling / 1e9,
        "fraction_of_matmul_rate": achieved / matmul,
        "probe_fraction_of_matmul_rate": ceiling / matmul,
        "fraction_of_probe": achieved / ceiling,
    }
    return row, layers


def markdown(rows: list[dict], matmul: float) -> str:
    """The family × seeds table."""
    head = (
        "| family | seeds | batch | step ms | GFLOP/step analytic (compiled) | GFLOP/s "
        "| of matmul rate | probe GFLOP/s | probe of matmul rate | of probe |\n"
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
    )
    lines = [
        f"| {r['family']} | {r['seeds']} | {r['batch_size']} | {r['step_ms']:.2f} "
        f"| {r['analytic_gflop_per_step']:.3g} ({r['compiled_gflop_per_step']:.3g}) "
        f"| {r['achieved_gflops']:.1f} | {r['fraction_of_matmul_rate']:.2f} "
        f"| {r['probe_gflops']:.1f} | {r['probe_fraction_of_matmul_rate']:.2f} "
        f"| {r['fraction_of_probe']:.2f} |\n"
        for r in rows
    ]
    note = (
        f"\nLarge-matmul rate {matmul / 1e9:.1f} GFLOP/s. Fractions use the analytic FLOPs "
        "(matmul/conv layers only); the compiled count (XLA cost analysis) adds element-wise "
        "work.\n"
    )
    return head + "".join(lines) + note


def _config_record(config: Any) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="1,5", help="comma-separated vmapped seed counts")
    parser.add_argument(
        "--families", default=",".join(FAMILY_NAMES), help=f"comma-separated, of {FAMILY_NAMES}"
    )
    parser.add_argument("--steps", type=int, default=None, help="timed steps per call (>= 2)")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls (best is kept)")
    parser.add_argument("--resnet-batch-size", type=int, default=None, help="default: 64")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 2 steps, 1 repeat")
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args(argv)
    cache = compile_cache.enable()
    names = args.families.split(",")
    unknown = sorted(set(names) - set(FAMILY_NAMES))
    if unknown:
        parser.error(f"--families must be among {sorted(FAMILY_NAMES)}, got {unknown}")
    if args.steps is not None and args.steps < 2:
        parser.error(f"--steps must be >= 2, got {args.steps}")
    seed_counts = [int(s) for s in args.seeds.split(",")]
    repeats = 1 if args.quick else args.repeats
    matmul = matmul_rate(256, repeats=3) if args.quick else matmul_rate()
    print(f"large-matmul rate: {matmul / 1e9:.1f} GFLOP/s", flush=True)
    rows, families = [], {}
    for family in (f for f in FAMILIES if f.name in names):
        batch = args.resnet_batch_size if family.name == "resnet18" else None
        setup = family.build(args.quick, batch)
        steps = args.steps or (QUICK_STEPS if args.quick else family.steps)
        for seeds in seed_counts:
            row, layers = measure(
                family, setup, seeds=seeds, steps=steps, repeats=repeats, matmul=matmul
            )
            rows.append(row)
            print(json.dumps(row), flush=True)
        families[family.name] = {
            "config": _config_record(setup.config),
            "layers": [layer._asdict() for layer in layers],
            "analytic_gflop_per_seed_step": step_flops(layers) / 1e9,
        }
    table = markdown(rows, matmul)
    print("\n" + table)
    payload = {
        "device": str(jax.devices()[0]),
        "compile_cache": None if cache is None else str(cache),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "quick": args.quick,
        "matmul_gflops": matmul / 1e9,
        "flops_basis": "analytic (matmul/conv layers: forward, weight and input gradients)",
        "families": families,
        "rows": rows,
        "table": table,
    }
    out = Path(args.out)
    write_json(out / "models.json", payload)
    report.write_table(out, table, name="models.md")
    return payload


if __name__ == "__main__":
    main()
