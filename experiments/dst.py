"""Dynamic sparse training for continual learning (Yildirim et al., CPAL 2024): the grid.

Paper: "Continual Learning with Dynamic Sparse Training: Exploring Algorithms for Effective
Model Updates", arXiv 2308.14831; code ``muratonuryildirim/CL-with-DST`` (``cifar100.py``,
``core.py``). Task-incremental parameter isolation: each task trains a fresh sparse mask by
prune and regrow, then freezes it; the task identity selects its subnetwork at evaluation.
The grid: init {ERK, uniform} × growth {random, unfired, gradient, momentum, adaptive
(random for the first half of the tasks, gradient after)} × sparsity {80, 90, 95 %} ×
tasks {5, 10, 20}, cells named ``erk-random-s90-t5``; ACC, BWT and FWT.

Datasets (``--dataset``): ``fashion_mnist`` (default) and ``mnist`` train the small CNN of
:mod:`jaxcl.models.cnn` on the tasks of :func:`jaxcl.scenarios.class_groups` (2 and 4
rounds of class pairs for T = 10, 20); ``cifar100`` is the paper's setting: ResNet-18,
classes in natural order in T blocks, the authors' normalisation, epochs and update
frequencies per T (not available offline here: the loader is tested on mocked data).
Evaluation (``--evaluation``): ``task_il`` (default) takes the argmax over the task's
classes, FWT is GEM's; ``authors_code`` as the authors' code (see
:data:`jaxcl.sparse.EVALUATIONS`), with its ``fwt_authors``. Without normalisation layers
(the CNN) BWT is exactly 0.

Protocol (the authors' code unless noted): Adam (lr 1e-3, β = 0.9, 0.999) restarted each
task, learning rate ×0.1 at 1/2 and 3/4 of the task; batch 64; loss on the task's logits;
prune fraction cosine-annealed 0.5 → 0.005 over each task; magnitude pruning; a topology
update every ``update_frequency`` batches. Deviations (see jaxcl.sparse): exact per-layer
mask counts, regrown weights' Adam moments reset, free weights entering a task's mask
freshly initialised, no test-time augmentation, no best-train-accuracy checkpoint, and
(F-MNIST) far fewer steps than the paper's 25-100 CIFAR epochs.

The cells of one task count are the cells of one compiled grid (:func:`jaxcl.engine.grid`):
init, growth and sparsity are traced (the DST learner's per-layer counts and densities
and its growth index per task, :func:`jaxcl.learners.dst_config`), the task count and
everything else structural, so the default grid of 90 cells compiles 3 programs (one per
task count); its rows ``seed * cells + cell`` are checkpointed and resumable like seeds
(``--seed-chunk`` counts rows).

Measured (defaults, ``python experiments/dst.py``: Split-Fashion-MNIST, 3 seeds, 90 cells):
8.6 min on 2 idle CPU cores.
ERK beats uniform at every sparsity (+9.2, +12.7, +18.7 points at 80/90/95 %): uniform
starves the 72-weight first convolution. Momentum growth (moments moving at every free
weight, as in the authors' Adam) ranks like gradient growth, within 3 points in every
cell: both fill the whole network by the last tasks at 80 % (used_fraction ≈ 1), where
random and adaptive win with ERK; gradient is best at 95 %. BWT is 0 in every cell.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxcl import cli, data, engine, learners, metrics, report, scenarios, sparse
from jaxcl.experiment import Experiment, flags_run_config, quick_note
from jaxcl.models.cnn import CNN
from jaxcl.models.resnet import ResNet
from jaxcl.optim import masked_adam
from jaxcl.schedules import step_decay

INIT_NAMES = ("erk", "uniform")
GROWTH_NAMES = (*sparse.GROWTH, "adaptive")
SPARSITIES = (80, 90, 95)
TASK_COUNTS = (5, 10, 20)
COLUMNS = ("acc", "bwt", "fwt", "learning_acc", "used_fraction")
# The README's CIFAR-100 runs (``muratonuryildirim/CL-with-DST`` ``README.md``, its 5-,
# 10- and 20-task commands): epochs and update frequency per T.
CIFAR_SCHEDULE = {5: (100, 100), 10: (100, 400), 20: (25, 100)}
QUICK = dict(batch_size=16, epochs_per_task=1, update_frequency=2, channels=(4, 8), hidden=(16,))
QUICK.update(max_train_per_task=64, max_test_per_task=32, stage_sizes=(1, 1), widths=(4, 8))


@dataclasses.dataclass(frozen=True)
class Cell:
    """One row of the grid; ``config``: its task count's :class:`Config`, set by
    ``configure`` (the structural part of the cell's program)."""

    init: str
    growth: str
    sparsity: int
    num_tasks: int
    config: Config | None = None

    @property
    def name(self) -> str:
        return f"{self.init}-{self.growth}-s{self.sparsity}-t{self.num_tasks}"


# The grid's axes, in the table's order.
AXES = dict(num_tasks=TASK_COUNTS, sparsity=SPARSITIES, init=INIT_NAMES, growth=GROWTH_NAMES)
GRID = tuple(Cell(i, g, s, t) for t, s, i, g in itertools.product(*AXES.values()))


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything the cells of one task count share (saved into results.json); the fields
    ``dataset`` and ``evaluation`` are flags."""

    dataset: str = cli.flag_field("fashion_mnist", choices=("fashion_mnist", "mnist", "cifar100"))
    num_tasks: int = 5
    batch_size: int = 64
    epochs_per_task: int = 2
    learning_rate: float = 1e-3
    update_frequency: int = 10
    max_train_per_task: int | None = 2000
    max_test_per_task: int | None = 300
    evaluation: str = cli.flag_field("task_il", choices=tuple(sparse.EVALUATIONS))
    channels: tuple[int, ...] = (8, 16)  # CNN
    hidden: tuple[int, ...] = (64,)  # CNN
    stage_sizes: tuple[int, ...] = (2, 2, 2, 2)  # ResNet
    widths: tuple[int, ...] = (64, 128, 256, 512)  # ResNet


def config_for(dataset: str, num_tasks: int, *, quick: bool, evaluation: str) -> Config:
    config = Config(dataset, num_tasks, evaluation=evaluation)
    if dataset == "cifar100":
        epochs, frequency = CIFAR_SCHEDULE[num_tasks]
        full = dict(max_train_per_task=None, max_test_per_task=None)
        config = dataclasses.replace(
            config, epochs_per_task=epochs, update_frequency=frequency, **full
        )
    return dataclasses.replace(config, **QUICK) if quick else config


def build_scenario(config: Config, *, data_dir: str | None = None) -> scenarios.Scenario:
    ds = data.preprocess(data.load(config.dataset, data_dir=data_dir), stats_of=config.dataset)
    return scenarios.from_class_groups(
        ds,
        scenarios.class_groups(ds.num_classes, num_tasks=config.num_tasks),
        head=sparse.EVALUATIONS[config.evaluation],
        max_train_per_task=config.max_train_per_task,
        max_test_per_task=config.max_test_per_task,
    )


def model_for(config: Config, scenario: scenarios.Scenario) -> Any:
    """The CNN (F-MNIST, MNIST) or ResNet-18 (CIFAR-100) of ``config``."""
    if config.dataset == "cifar100":
        shapes = dict(stage_sizes=config.stage_sizes, widths=config.widths)
        return ResNet(**shapes, num_classes=scenario.num_classes, image_shape=(32, 32, 3))
    return CNN(num_classes=scenario.num_classes, channels=config.channels, hidden=config.hidden)


def run_options(config: Config, *, chunk_size: int) -> dict[str, Any]:
    return dict(
        batch_size=config.batch_size,
        epochs_per_task=config.epochs_per_task,
        eval_batch_size=500,
        chunk_size=chunk_size,
    )


def learner_for(config: Config, scenario: scenarios.Scenario, sparsity: learners.DSTConfig) -> Any:
    """The DST learner of ``config`` with ``sparsity`` (concrete, or a grid cell's, traced)."""
    sizes = dict(batch_size=config.batch_size, epochs_per_task=config.epochs_per_task)
    steps = engine.RunSpec.of(scenario, **sizes).task_steps[0]  # the engine's batches
    # LR ×0.1 at 1/2 and 3/4 of each task (the optimizer, hence its step count, restarts).
    return learners.dst(
        model_for(config, scenario),
        masked_adam(step_decay(config.learning_rate, total_steps=steps)),
        input_dim=scenario.input_dim,
        task_classes=scenario.class_mask,
        sparsity=sparsity,
        update_frequency=config.update_frequency,
        evaluation=config.evaluation,
    )


def cell_sparsity(config: Config, scenario: scenarios.Scenario, cell: Cell) -> learners.DSTConfig:
    """The learner's arrays of ``cell``'s density, init and growth (adaptive: one per task)."""
    adaptive = cell.growth == "adaptive"
    return learners.dst_config(
        model_for(config, scenario),
        input_dim=scenario.input_dim,
        num_tasks=scenario.num_tasks,
        density=1 - cell.sparsity / 100,
        init=cell.init,
        growth=learners.adaptive_growth(cell.num_tasks) if adaptive else cell.growth,
    )


def build_run(
    config: Config, scenario: scenarios.Scenario, cell: Cell, *, chunk_size: int = 1
) -> engine.Run:
    """The compiled run of one cell alone (its settings constants of the program)."""
    learner = learner_for(config, scenario, cell_sparsity(config, scenario, cell))
    return engine.make_run(scenario, learner, **run_options(config, chunk_size=chunk_size))


def build_grid(
    config: Config, scenario: scenarios.Scenario, cells: dict[str, Cell], *, chunk_size: int = 1
) -> engine.Run:
    """The compiled grid run of ``cells`` of one task count (their settings traced)."""
    values = {name: cell_sparsity(config, scenario, c)._asdict() for name, c in cells.items()}
    return engine.make_run(
        scenario,
        lambda hparams: learner_for(config, scenario, learners.DSTConfig(**hparams)),
        grid=engine.grid(values),
        **run_options(config, chunk_size=chunk_size),
    )


def configure(cell: Cell, args: argparse.Namespace) -> Cell:
    """``cell`` with its task count's :class:`Config` under the flags."""
    config = config_for(args.dataset, cell.num_tasks, quick=args.quick, evaluation=args.evaluation)
    return dataclasses.replace(cell, config=config)


def grid_run(cells: dict[str, Cell], args: argparse.Namespace) -> engine.Run:
    """The experiment's ``build_grid``: the cells of one task count (configured)."""
    config = next(iter(cells.values())).config
    scenario = build_scenario(config, data_dir=args.data_dir)
    return build_grid(config, scenario, cells, chunk_size=cli.chunk_size(args, config.num_tasks))


def row_metrics(results: engine.Results, cell: Cell, args: argparse.Namespace) -> dict:
    extra = {"used_fraction": results.diagnostics["used_fraction"][:, -1]}
    if args.evaluation == "authors_code":
        extra["fwt_authors"] = np.asarray(sparse.authors_fwt(results.accuracy))
    return extra


def row_fields(results: engine.Results, cell: Cell, args: argparse.Namespace) -> dict:
    fields = {f: getattr(cell, f) for f in ("init", "growth", "sparsity", "num_tasks")}
    return {"cell": fields, "config": dataclasses.asdict(cell.config)}


def header(rows: Sequence[dict], args: argparse.Namespace) -> str:
    blocks = {
        t: sum(r["seconds"] for r in rows if r["cell"]["num_tasks"] == t) for t in TASK_COUNTS
    }
    blocks = {t: round(s, 1) for t, s in blocks.items() if s}
    return (
        f"DST continual learning on Split-{args.dataset}, {args.seeds} seeds, evaluation "
        f"{args.evaluation}; mean ± 95% CI in %. used_fraction: share of all weights in some "
        f"task's mask at the end. Wall time {sum(blocks.values()):.0f} s (per task count: "
        f"{blocks}).{quick_note(args)}\n\n"
    )


def table(rows: Sequence[dict], args: argparse.Namespace) -> str:
    authors = ("fwt_authors",) if args.evaluation == "authors_code" else ()
    return report.markdown_table(rows, metrics=[*COLUMNS, *authors]) + "\n"


def acc_grid(rows: Sequence[dict]) -> np.ndarray:
    """Mean ACC of each cell, ``[task count, sparsity, init, growth]``; NaN where not run."""
    return report.metric_grid(rows, "acc", AXES, lambda row: row["cell"])


def findings(rows: Sequence[dict], args: argparse.Namespace) -> str:
    """The paper's qualitative claims, checked on these rows (ACC means over seeds)."""
    acc = 100 * acc_grid(rows)  # means of cells not run are NaN
    by_sparsity = metrics.nanmean(acc, axis=0)  # [sparsity, init, growth]
    fixed = len(sparse.GROWTH)
    erk_gain = metrics.nanmean(by_sparsity[:, 0, :fixed] - by_sparsity[:, 1, :fixed], axis=1)
    best = np.maximum(*(acc[..., GROWTH_NAMES.index(g)] for g in ("random", "gradient")))
    adaptive_gain = metrics.nanmean(acc[..., -1] - best, axis=(1, 2))  # [task count]
    lines = ["ERK − uniform ACC (mean over fixed growths and task counts), by sparsity:"]
    lines += [
        f"  {s}%: {d:+.2f} points"
        for s, d in zip(SPARSITIES, erk_gain, strict=True)
        if np.isfinite(d)
    ]
    lines.append("Growth ranking (ACC, mean over task counts), per init and sparsity:")
    for (i, init), (s, sparsity) in itertools.product(enumerate(INIT_NAMES), enumerate(SPARSITIES)):
        ranked = sorted((-by_sparsity[s, i, g], g) for g in range(len(GROWTH_NAMES)))
        ranked = [f"{GROWTH_NAMES[g]} {-a:.1f}" for a, g in ranked if np.isfinite(a)]
        if ranked:
            lines.append(f"  {init} {sparsity}%: " + " > ".join(ranked))
    lines.append("Adaptive (random then gradient) − the better of random and gradient:")
    lines += [
        f"  T={t}: {d:+.2f} points (mean over cells)"
        for t, d in zip(TASK_COUNTS, adaptive_gain, strict=True)
        if np.isfinite(d)
    ]
    return "\n".join(lines) + "\n"


def plot_heatmaps(rows: Sequence[dict], args: argparse.Namespace, out: Path) -> None:
    """One heatmap of ACC per task count: init × growth (rows) by sparsity (columns)."""
    labels = [f"{i}-{g}" for i in INIT_NAMES for g in GROWTH_NAMES]
    for t, by_sparsity in zip(TASK_COUNTS, acc_grid(rows), strict=True):
        if np.isfinite(by_sparsity).any():
            report.heatmap(
                by_sparsity.reshape(len(SPARSITIES), len(labels)).T,
                out / f"heatmap_acc_t{t}.png",
                row_labels=labels,
                column_labels=[f"{s}%" for s in SPARSITIES],
                title=f"{t} tasks: final average accuracy",
                xlabel="sparsity",
                colorbar_label="ACC",
            )


EXPERIMENT = Experiment(
    name="dst",
    description=__doc__.splitlines()[0],
    methods={cell.name: cell for cell in GRID},
    configure=configure,
    traced={cell.name: ("init", "growth", "sparsity") for cell in GRID},
    build_grid=grid_run,
    quick_methods=[c.name for c in GRID if c.num_tasks == 5 and c.sparsity == 90],
    flags=lambda parser: cli.add_field_flags(parser, Config),
    run_config=flags_run_config("dataset", "evaluation"),
    row_metrics=row_metrics,
    row_fields=row_fields,
    metrics=COLUMNS,
    header=header,
    table=table,
    findings=findings,
    curves=False,
    plots=plot_heatmaps,
    default_seeds=3,
)

if __name__ == "__main__":
    cli.main(EXPERIMENT)
