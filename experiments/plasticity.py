"""Plasticity and loss sharpness (Koster & Kukla 2024): SGD vs SAM vs GNP on long MNIST streams.

Paper: "Neural Network Plasticity and Loss Sharpness", arXiv 2409.17300 (no public code;
SAM as Foret et al., arXiv 2010.01412, Algorithm 1; GNP as Zhao et al., arXiv 2202.03599,
code ``zhaoyang-0204/gnp`` ``training/training_core.py``, both as in :mod:`jaxcl.optim`).
Two streams, each trained with SGD, SAM and GNP at learning rates 0.01 and 0.001, every
seed of a configuration vmapped in one compiled program:

* ``permuted``: domain-incremental Permuted MNIST, 100 tasks, one 10-way head;
* ``class_pairs``: the 45 class pairs (0,1), (0,2), …, (8,9) of MNIST in that order, with
  the paper's 2-unit output (``--pair-head pair``: output j means "the task's j-th class in
  increasing order"); ``--pair-head shared`` uses a 10-way shared head instead.

Plasticity is the accuracy on each new task right after training it, ``R[t, t]`` (only the
current task is evaluated). The table gives its mean over the first and the last
``--window`` tasks and ``plasticity_loss = first − last`` (positive: plasticity lost);
one PNG per stream and learning rate shows the curves; below the table the paper's
findings are checked with Welch 95% CIs of the differences to SGD.

    python experiments/plasticity.py                 # 2 streams x 6 methods, 10 seeds
    python experiments/plasticity.py --timing        # + all seeds vmapped vs seed by seed
    python experiments/plasticity.py --quick         # seconds-long smoke run

The sensitivity sweep of SAM's ρ and GNP's r × α is ``experiments/plasticity_sweep.py``.

Unknowns of the paper, chosen here (all flags): the MLP 784-100-100-out (ReLU, biases,
He-normal init), batch 32, one epoch per task on the first 10000 training examples of the
task (a CPU budget), each task's whole test set, SAM ρ = 0.05 (SAM's default), GNP with the
paper's λ = 0.1 as r = 0.125 and α = λ / r = 0.8 (the official GNP recipe's α) in the
first-order form g = (1 − α) g₁ + α ∇L(w + r g₁/‖g₁‖) with the raw g₁ (Zhao et al.'s
formula; ``--gnp-normalize-first`` mixes the normalised g₁ as their code does), plain SGD
as every base, permutations drawn from ``--perm-seed`` 0 and shared by all run seeds, seeds
``PRNGKey(0..S−1)``.

Measured (defaults with ``--timing``, 10 seeds, 2 idle CPU cores): 22.5 min. Permuted
MNIST: SAM and GNP are significantly *worse* than SGD at both learning rates (plasticity
loss +1.7/+3.7 points at lr 0.01, +8.6/+22.0 at 0.001), so "no benefit" holds. Class
pairs: SAM loses significantly more plasticity than SGD, but by only +0.1 and +0.7 points;
GNP keeps plasticity *worst*, not best (SGD best at both learning rates). One vmapped
program for 10 seeds × 100 tasks: 68 s vs 86 s seed by seed (1.26×: on 2 CPU cores the
step is compute-bound, vmap saves dispatch only).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np

from jaxcl import cli, data, engine, learners, metrics, report, scenarios
from jaxcl.experiment import (
    Difference,
    Experiment,
    difference_table,
    differences,
    flags_run_config,
    quick_note,
    seed_means,
    seed_timing_extras,
)
from jaxcl.models.mlp import MLP
from jaxcl.optim import get_optimizer

STREAMS = ("permuted", "class_pairs")
COMPARED = ("sgd", "sam", "gnp")  # the optimizers compared
LEARNING_RATES = (0.01, 0.001)
METRICS = ("first", "last", "plasticity_loss")
NUM_PAIRS = math.comb(10, 2)  # the class pairs of MNIST's digits


@dataclasses.dataclass(frozen=True)
class Config:
    """One row of the table: the whole run as data (saved into results.json). The fields
    after ``num_tasks`` are flags, shared by every row: ``train_per_task``/``test_per_task``
    the first examples kept per task (None: all), GNP's mixing weight ``gnp_alpha`` = λ / r,
    ``pair_head`` ``"pair"`` (2 outputs) or ``"shared"`` (10) for class pairs."""

    stream: str
    optimizer: str
    learning_rate: float
    num_tasks: int
    width: int = cli.flag_field(100, cli.positive_int, "units per hidden layer")
    batch_size: int = cli.flag_field(32, cli.positive_int)
    epochs_per_task: int = cli.flag_field(1, cli.positive_int, "epochs per task", flag="--epochs")
    train_per_task: int | None = cli.flag_field(
        10000, cli.count_or_all, "training examples (0: all)"
    )
    test_per_task: int | None = cli.flag_field(None, cli.count_or_all, "test examples (0: all)")
    rho: float = cli.flag_field(0.05, cli.non_negative_float, "SAM radius")
    gnp_r: float = cli.flag_field(0.125, cli.non_negative_float, "GNP perturbation radius")
    gnp_alpha: float = cli.flag_field(0.8, cli.finite_float, "GNP alpha = lambda / r")
    gnp_normalize_first: bool = cli.flag_field(False, help="GNP mixes the normalised g1")
    pair_head: str = cli.flag_field("pair", help="class pairs' head", choices=("pair", "shared"))
    perm_seed: int = cli.flag_field(0, int, "seed of the permutations")


NAME = "{stream}/{optimizer}@{learning_rate:g}"  # a row's name, e.g. "permuted/sam@0.01"


def method_name(stream: str, optimizer: str, learning_rate: float) -> str:
    """A row's name, e.g. ``"permuted/sam@0.01"``."""
    return NAME.format(stream=stream, optimizer=optimizer, learning_rate=learning_rate)


METHODS = {
    method_name(*spec): spec for spec in itertools.product(STREAMS, COMPARED, LEARNING_RATES)
}


def build_scenario(config: Config, *, data_dir: str | None = None) -> scenarios.Scenario:
    """The stream of ``config`` on MNIST, standardised with MNIST's statistics."""
    mnist = data.preprocess(data.load("mnist", data_dir=data_dir), stats_of="mnist")
    sizes = {"max_train_per_task": config.train_per_task, "max_test_per_task": config.test_per_task}
    if config.stream == "permuted":
        return scenarios.permuted(mnist, num_tasks=config.num_tasks, seed=config.perm_seed, **sizes)
    return scenarios.class_pairs(mnist, num_tasks=config.num_tasks, **sizes)


def build_run(
    config: Config,
    *,
    data_dir: str | None = None,
    chunk_size: int = 1,
    grid: engine.Grid | None = None,
) -> engine.Run:
    """The compiled run of one configuration (all seeds vmapped when called); with
    ``grid``, of its cells (``grid.values`` replace the config's fields of those names)."""
    scenario = build_scenario(config, data_dir=data_dir)
    two_outputs = config.stream == "class_pairs" and config.pair_head == "pair"
    model = MLP(
        hidden=(config.width, config.width),
        num_classes=2 if two_outputs else scenario.num_classes,
        use_bias=True,
        weight_standardize=False,
    )

    def learner(traced: dict[str, Any]) -> Any:
        c = dataclasses.replace(config, **traced)
        hparams = {
            "sgd": {},
            "sam": {"rho": c.rho},
            "gnp": {"r": c.gnp_r, "alpha": c.gnp_alpha, "normalize_first": c.gnp_normalize_first},
        }[c.optimizer]
        optimizer = get_optimizer(c.optimizer, learning_rate=c.learning_rate, **hparams)
        learner = learners.supervised(model, optimizer, input_dim=scenario.input_dim)
        return learners.within_task_head(learner, scenario) if two_outputs else learner

    return engine.make_run(
        scenario,
        learner if grid is not None else learner({}),
        grid=grid,
        batch_size=config.batch_size,
        epochs_per_task=config.epochs_per_task,
        eval_tasks="current",
        chunk_size=chunk_size,
    )


def new_task_accuracy(results: engine.Results) -> np.ndarray:
    """``[S, T]`` accuracy on each task right after training it (NaN for diverged seeds)."""
    return metrics.new_task_accuracy(results.accuracy, diverged=results.diverged)


def compare_to_sgd(rows: list[dict]) -> dict[str, dict[str, Difference]]:
    """``{SAM or GNP row: {metric: Difference}}``, each row minus SGD's at its learning rate."""
    pairs = {
        method_name(stream, opt, lr): (method_name(stream, opt, lr), method_name(stream, "sgd", lr))
        for stream, lr, opt in itertools.product(STREAMS, LEARNING_RATES, ("sam", "gnp"))
    }
    return differences(rows, pairs, ("plasticity_loss", "last"))


def paper_findings(rows: list[dict]) -> list[str]:
    """The paper's three findings, checked per learning rate on the rows that were run."""
    lines, diffs = [], {METHODS[name]: d for name, d in compare_to_sgd(rows).items()}
    if perm := [
        (f"{opt}@{lr:g}", d) for (stream, opt, lr), d in diffs.items() if stream == "permuted"
    ]:
        helps = {"plasticity_loss": "lower", "last": "higher"}  # a significant benefit
        better = [n for n, d in perm if any(d[m].verdict == v for m, v in helps.items())]
        verdict = f"does NOT hold ({', '.join(better)} helps)" if better else "holds"
        lines.append(
            "Permuted MNIST, no significant benefit of SAM/GNP over SGD (smaller plasticity "
            f"loss or higher accuracy on the last tasks): {verdict}."
        )
    for (stream, opt, lr), d in diffs.items():
        if stream == "class_pairs" and opt == "sam":
            loss = d["plasticity_loss"]
            lines.append(
                f"Class pairs, lr {lr:g}: SAM loses significantly more plasticity than SGD: "
                f"{'holds' if loss.verdict == 'higher' else 'does NOT hold'} (Δ = "
                f"{loss.points(digits=2)} points)."
            )
    means = seed_means(rows, "plasticity_loss")
    for lr in LEARNING_RATES:
        names = {opt: method_name("class_pairs", opt, lr) for opt in COMPARED}
        if all(name in means for name in names.values()):
            best = min(COMPARED, key=lambda opt: means[names[opt]])
            lines.append(
                f"Class pairs, lr {lr:g}: GNP keeps plasticity best (smallest mean plasticity "
                f"loss; here {best}): {'holds' if best == 'gnp' else 'does NOT hold'}."
            )
    return lines


def header(rows: list[dict], args: argparse.Namespace, *, note: str = "") -> str:
    """The text above the table; ``note``, a sentence after the protocol's."""
    s = args.shared
    return (
        "Plasticity = accuracy on each task right after training it; first/last = mean over "
        f"the first/last {args.window} tasks; plasticity_loss = first − last (positive: "
        f"plasticity lost). {args.seeds} seeds, mean ± 95% CI. MLP 784-{s['width']}-"
        f"{s['width']}-out, batch {s['batch_size']}, {s['epochs_per_task']} epoch(s) per task "
        f"on {s['train_per_task'] or 'all'} training examples, SAM ρ={args.rho}, GNP "
        f"r={args.gnp_r} α={args.gnp_alpha} (λ={args.gnp_r * args.gnp_alpha:g}), class pairs "
        f"with a {'2-unit' if args.pair_head == 'pair' else '10-way shared'} head."
        f"{note}{quick_note(args)}\n\n"
    )


def table_findings(rows: list[dict]) -> str:
    """The table's differences to SGD and the verdict on the paper's findings."""
    title = "Difference to SGD at the same learning rate (Welch 95% CI, points)"
    text = difference_table(compare_to_sgd(rows), title=title, label="setting")
    if lines := paper_findings(rows):
        return text + "\nThe paper's findings here:\n\n" + "".join(f"- {x}\n" for x in lines)
    return text + (
        "\nThe paper's findings here: not checked (each needs the SGD row and the SAM/GNP "
        "rows of a stream at the same learning rate).\n"
    )


def plot_curves(rows: list[dict], args: argparse.Namespace, out: Path) -> None:
    """One PNG per stream and learning rate: new-task accuracy vs task, mean ± 95% CI."""
    for stream, lr in itertools.product(STREAMS, LEARNING_RATES):
        if chosen := [r for r in rows if r["stream"] == stream and r["learning_rate"] == lr]:
            report.plot_accuracy_curves(
                chosen,
                out / f"plasticity_{stream}_lr{lr:g}.png",
                title=f"{stream}, lr {lr:g}: plasticity (mean ± 95% CI, {args.seeds} seeds)",
                key="new_task_acc",
                label="optimizer",
                spread="ci95",
                xlabel="task",
                ylabel="accuracy on the task just trained",
                ylim=None,
            )


TIMED = NAME + " with {num_tasks} tasks"  # --timing's run


def timed_run(args: argparse.Namespace) -> tuple[Config, engine.Run]:
    """``--timing``'s run: permuted/sgd@0.01 with ``--timing-tasks`` tasks in one chunk."""
    tasks = 4 if args.quick else args.timing_tasks
    config = Config("permuted", "sgd", 0.01, num_tasks=tasks, **args.shared)
    return config, build_run(config, data_dir=args.data_dir, chunk_size=config.num_tasks)


def flags(parser: argparse.ArgumentParser) -> None:
    add, pos = parser.add_argument, cli.positive_int
    add("--permuted-tasks", type=pos, default=100, help="Permuted MNIST tasks")
    pairs = cli.int_between(1, NUM_PAIRS)
    add("--pair-tasks", type=pairs, default=NUM_PAIRS, help="class-pair tasks")
    cli.add_field_flags(parser, Config)
    add("--window", type=pos, default=10, help="tasks averaged at the start and the end")
    add("--timing", action="store_true", help="also time permuted/sgd@0.01 vmapped vs not")
    add("--timing-tasks", type=pos, default=100, help="Permuted MNIST tasks of the timing run")


def configure(spec: tuple, args: argparse.Namespace) -> Config:
    """A row's config: its stream, optimizer and learning rate (and a sweep cell's values)
    with the flags' shared fields."""
    stream, optimizer, learning_rate, *cell = spec
    shared = {**args.shared, **dict(*cell)}
    return Config(stream, optimizer, learning_rate, num_tasks=args.tasks[stream], **shared)


def derive(args: argparse.Namespace) -> dict[str, Any]:
    """Config fields shared by every row, tasks per stream, and the window they allow."""
    shared = cli.field_flag_values(args, Config)
    tasks = {"permuted": args.permuted_tasks, "class_pairs": args.pair_tasks}
    if args.quick:
        shared.update(width=32, train_per_task=64, test_per_task=64)
        tasks = {"permuted": 4, "class_pairs": 4}
    window = min(args.window, *(t // 2 for t in tasks.values())) or 1
    return {"shared": shared, "tasks": tasks, "window": window}


def row_fields(results: engine.Results, config: Config, args: argparse.Namespace) -> dict:
    return {
        "stream": config.stream,
        "optimizer": config.optimizer,
        "learning_rate": config.learning_rate,
        "window": args.window,
        "new_task_acc": new_task_accuracy(results),  # diverged seeds: NaN, written as null
    }


EXPERIMENT = Experiment(
    name="plasticity",
    description=__doc__.splitlines()[0],
    methods=METHODS,
    configure=configure,
    build=lambda config, args: build_run(
        config, data_dir=args.data_dir, chunk_size=cli.chunk_size(args, config.num_tasks)
    ),
    flags=flags,
    derive=derive,
    run_config=lambda args: {**flags_run_config("window", "tasks")(args), **args.shared},
    engine_metrics=False,
    row_metrics=lambda results, config, args: metrics.plasticity_loss(
        new_task_accuracy(results), window=args.window
    ),
    row_fields=row_fields,
    metrics=METRICS,
    header=header,
    findings=lambda rows, args: table_findings(rows),
    extras=seed_timing_extras(timed_run, curves=new_task_accuracy, describe=TIMED),
    curves=False,
    plots=plot_curves,
    default_seeds=10,
)


if __name__ == "__main__":
    cli.main(EXPERIMENT)
