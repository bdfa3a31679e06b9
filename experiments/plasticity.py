"""Plasticity and loss sharpness (Koster & Kukla 2024): SGD vs SAM vs GNP on long MNIST streams.

Paper: "Neural Network Plasticity and Loss Sharpness", arXiv 2409.17300 (no public code;
algorithms.md §4). Two streams, each trained with SGD, SAM and GNP at learning rates
0.01 and 0.001, every seed of a configuration vmapped in one compiled program:

* ``permuted``: domain-incremental Permuted MNIST, 100 tasks, one 10-way head;
* ``class_pairs``: the 45 class pairs (0,1), (0,2), …, (8,9) of MNIST in that order, with
  the paper's 2-unit output (``--pair-head pair``: output j means "the task's j-th class in
  increasing order", so one unit stands for different digits in different tasks);
  ``--pair-head shared`` uses a 10-way shared head instead.

Plasticity is the accuracy on each new task right after training it, ``R[t, t]`` (the
engine evaluates only the current task, ``eval_tasks="current"``). The table gives, per
setting, its mean over the first and over the last ``--window`` tasks and their
difference ``plasticity_loss = first − last`` (positive: plasticity lost); one PNG per
stream and learning rate shows the curves (mean ± 95% CI over seeds). Below the table the
paper's findings are checked with Welch 95% CIs of the differences to SGD.

Commands::

    python experiments/plasticity.py                 # 2 streams x 6 methods, 10 seeds
    python experiments/plasticity.py --timing        # + all seeds vmapped vs seed by seed
    python experiments/plasticity.py --quick         # seconds-long smoke run

Unknowns of the paper, chosen here (all flags): the MLP 784-100-100-out (three fully
connected layers, ReLU, biases, He-normal init; ``--width``), batch 32, one epoch per task
on the first 10000 training examples of the task (``--train-per-task``; a CPU budget), the
whole test set of each task, SAM ρ = 0.05 (the SAM default), GNP with the paper's
λ = 0.1 as r = 0.125 and α = λ / r = 0.8 (the official GNP recipe's α) in the first-order
form g = (1 − α) g₁ + α ∇L(w + r g₁/‖g₁‖) with the raw g₁ (Zhao et al.'s formula;
``--gnp-normalize-first`` mixes the normalised g₁ as their code does), plain SGD without
momentum or weight decay as every base, permutations drawn from ``--perm-seed`` 0 and
shared by all run seeds, seeds ``PRNGKey(0..S−1)``.

Measured (defaults with ``--timing``, 10 seeds, 2 idle CPU cores): 22.5 min wall. Permuted
MNIST: SAM and GNP are significantly *worse* than SGD at both learning rates (plasticity
loss +1.7/+3.7 points at lr 0.01, +8.6/+22.0 at 0.001), so "no benefit" holds. Class
pairs: SAM loses significantly more plasticity than SGD, but by only +0.1 and +0.7 points;
GNP keeps plasticity *worst*, not best (SGD best at both learning rates). One vmapped
program for 10 seeds × 100 tasks: 68 s vs 86 s seed by seed (1.26×: on 2 CPU cores the
step is compute-bound, vmap saves dispatch only).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxcl import cli, data, engine, learners, metrics, report, scenarios, types
from jaxcl.models.mlp import MLP
from jaxcl.optim import get_optimizer

STREAMS = ("permuted", "class_pairs")
OPTIMIZERS = ("sgd", "sam", "gnp")
PAIR_HEADS = ("pair", "shared")
LEARNING_RATES = (0.01, 0.001)
METRICS = ("first", "last", "plasticity_loss")
CLASS_PAIRS = tuple(itertools.combinations(range(10), 2))  # MNIST's digits, in order


@dataclasses.dataclass(frozen=True)
class Config:
    """One row of the table: the whole run as data (saved into results.json).

    Attributes:
      stream: ``"permuted"`` or ``"class_pairs"``.
      optimizer: ``"sgd"``, ``"sam"`` or ``"gnp"``.
      learning_rate: SGD's step size (the base of SAM and GNP too).
      num_tasks: tasks of the stream (100 permutations; up to 45 pairs).
      width: units of each of the two hidden layers.
      batch_size: examples per step.
      epochs_per_task: passes over each task's training examples.
      train_per_task: first training examples kept per task (None: all).
      test_per_task: first test examples kept per task (None: all).
      rho: SAM's radius ρ.
      gnp_r: GNP's perturbation radius r.
      gnp_alpha: GNP's mixing weight α = λ / r.
      gnp_normalize_first: mix the normalised first gradient (GNP's official code).
      pair_head: ``"pair"`` (2 outputs) or ``"shared"`` (10 outputs) for class pairs.
      perm_seed: seed of the pixel permutations.
    """

    stream: str
    optimizer: str
    learning_rate: float
    num_tasks: int
    width: int = 100
    batch_size: int = 32
    epochs_per_task: int = 1
    train_per_task: int | None = 10000
    test_per_task: int | None = None
    rho: float = 0.05
    gnp_r: float = 0.125
    gnp_alpha: float = 0.8
    gnp_normalize_first: bool = False
    pair_head: str = "pair"
    perm_seed: int = 0

    def __post_init__(self):
        for field, allowed in [
            ("stream", STREAMS),
            ("optimizer", OPTIMIZERS),
            ("pair_head", PAIR_HEADS),
        ]:
            if getattr(self, field) not in allowed:
                raise ValueError(f"{field} must be one of {allowed}, got {getattr(self, field)!r}")

    @property
    def name(self) -> str:
        return method_name(self.stream, self.optimizer, self.learning_rate)


def method_name(stream: str, optimizer: str, learning_rate: float) -> str:
    """A row's name, e.g. ``"permuted/sam@0.01"``."""
    return f"{stream}/{optimizer}@{learning_rate:g}"


def build_scenario(config: Config, *, data_dir: str | None = None) -> scenarios.Scenario:
    """The stream of ``config`` on MNIST, standardised with MNIST's statistics."""
    mnist = data.preprocess(data.load("mnist", data_dir=data_dir), stats_of="mnist")
    sizes = {
        "max_train_per_task": config.train_per_task,
        "max_test_per_task": config.test_per_task,
    }
    if config.stream == "permuted":
        return scenarios.permuted(mnist, num_tasks=config.num_tasks, seed=config.perm_seed, **sizes)
    if not 1 <= config.num_tasks <= len(CLASS_PAIRS):
        raise ValueError(f"num_tasks must be in [1, {len(CLASS_PAIRS)}], got {config.num_tasks}")
    return scenarios.from_class_groups(mnist, CLASS_PAIRS[: config.num_tasks], **sizes)


def pair_head(learner: types.Learner, scenario: scenarios.Scenario) -> types.Learner:
    """A learner whose network has 2 outputs for two-class tasks: the paper's 2-hot head.

    Training relabels each example with its class's rank within the task's pair; for
    evaluation the two logits are placed on the pair's classes (the others can never win),
    so the engine scores predictions against the original digit labels.
    """
    class_mask = np.asarray(scenario.class_mask)
    if not np.all(class_mask.sum(1) == 2):
        raise ValueError(f"pair_head needs two classes per task, got {class_mask.sum(1)}")
    # [T, 2] int32: small, fine as a constant of the compiled program.
    pairs = jnp.asarray(np.stack([np.flatnonzero(m) for m in class_mask]), jnp.int32)

    def update(state, batch: types.Batch, key):
        y = (batch.y == pairs[batch.task, 1]).astype(jnp.int32)
        return learner.update(state, batch._replace(y=y, logit_mask=jnp.ones(2, bool)), key)

    def predict(state, x, task):
        logits = learner.predict(state, x, task)
        lowest = jnp.finfo(logits.dtype).min
        full = jnp.full((x.shape[0], scenario.num_classes), lowest, logits.dtype)
        return full.at[:, pairs[task]].set(logits)

    return learner._replace(update=update, predict=predict)


def build_optimizer(config: Config):
    """SGD, or SAM / GNP around SGD, with the config's hyperparameters."""
    if config.optimizer == "sgd":
        return get_optimizer("sgd", learning_rate=config.learning_rate)
    if config.optimizer == "sam":
        return get_optimizer("sam", learning_rate=config.learning_rate, rho=config.rho)
    return get_optimizer(
        "gnp",
        learning_rate=config.learning_rate,
        r=config.gnp_r,
        alpha=config.gnp_alpha,
        normalize_first=config.gnp_normalize_first,
    )


def build_run(config: Config, *, data_dir: str | None = None, chunk_size: int = 1) -> engine.Run:
    """The compiled run of one configuration (all seeds vmapped when called)."""
    scenario = build_scenario(config, data_dir=data_dir)
    two_outputs = config.stream == "class_pairs" and config.pair_head == "pair"
    model = MLP(
        hidden=(config.width, config.width),
        num_classes=2 if two_outputs else scenario.num_classes,
        use_bias=True,
        weight_standardize=False,
    )
    learner = learners.supervised(model, build_optimizer(config), input_dim=scenario.input_dim)
    if two_outputs:
        learner = pair_head(learner, scenario)
    return engine.make_run(
        scenario,
        learner,
        batch_size=config.batch_size,
        epochs_per_task=config.epochs_per_task,
        eval_tasks="current",
        chunk_size=chunk_size,
    )


def new_task_accuracy(results: engine.Results) -> np.ndarray:
    """``[S, T]`` accuracy on each task right after training it (NaN for diverged seeds)."""
    diag = np.diagonal(results.accuracy, axis1=1, axis2=2)
    return np.where(np.asarray(results.diverged)[:, None], np.nan, diag)


def plasticity_metrics(curves: np.ndarray, window: int) -> dict[str, np.ndarray]:
    """Per seed: mean of the first and of the last ``window`` tasks, and first − last."""
    first = curves[:, :window].mean(-1)
    last = curves[:, -window:].mean(-1)
    return {"first": first, "last": last, "plasticity_loss": first - last}


def compare_to_sgd(per_seed: dict[str, dict[str, np.ndarray]], lrs, streams) -> list[dict]:
    """SAM and GNP minus SGD at the same learning rate: plasticity loss and last tasks."""
    rows = []
    for stream in streams:
        for lr in lrs:
            sgd = per_seed.get(method_name(stream, "sgd", lr))
            for opt in ("sam", "gnp"):
                other = per_seed.get(method_name(stream, opt, lr))
                if sgd is None or other is None:
                    continue
                row = {"stream": stream, "lr": lr, "optimizer": opt}
                for m in ("plasticity_loss", "last"):
                    row[m] = metrics.difference_ci95(other[m], sgd[m])
                rows.append(row)
    return rows


def _significant(diff: tuple[float, float], sign: int) -> bool:
    mean, half = diff
    return bool(np.isfinite(half) and sign * mean > half)


def findings(per_seed: dict[str, dict[str, np.ndarray]], lrs, streams) -> list[str]:
    """The paper's three findings, checked per learning rate on the rows that were run."""
    lines = []
    diffs = compare_to_sgd(per_seed, lrs, streams)
    perm = [d for d in diffs if d["stream"] == "permuted"]
    if perm:
        helped = [
            f"{d['optimizer']}@{d['lr']:g}"
            for d in perm
            if _significant(d["plasticity_loss"], -1) or _significant(d["last"], +1)
        ]
        verdict = "holds" if not helped else f"does NOT hold ({', '.join(helped)} helps)"
        lines.append(
            "Permuted MNIST, no significant benefit of SAM/GNP over SGD (smaller plasticity "
            f"loss or higher accuracy on the last tasks): {verdict}."
        )
    pairs = {d["lr"]: d for d in diffs if d["stream"] == "class_pairs" and d["optimizer"] == "sam"}
    for lr, d in pairs.items():
        ok = _significant(d["plasticity_loss"], +1)
        lines.append(
            f"Class pairs, lr {lr:g}: SAM loses significantly more plasticity than SGD: "
            f"{'holds' if ok else 'does NOT hold'} (Δ = {100 * d['plasticity_loss'][0]:+.2f} "
            f"± {100 * d['plasticity_loss'][1]:.2f} points)."
        )
    for lr in lrs:
        losses = {
            opt: np.nanmean(per_seed[name]["plasticity_loss"])
            for opt in OPTIMIZERS
            if (name := method_name("class_pairs", opt, lr)) in per_seed
        }
        if len(losses) == len(OPTIMIZERS):
            best = min(losses, key=losses.get)
            lines.append(
                f"Class pairs, lr {lr:g}: GNP keeps plasticity best (smallest mean plasticity "
                f"loss; here {best}): {'holds' if best == 'gnp' else 'does NOT hold'}."
            )
    return lines


def plot_curves(rows: list[dict], streams, lrs, out: Path) -> list[Path]:
    """One PNG per stream and learning rate: new-task accuracy vs task, mean ± 95% CI."""
    paths = []
    for stream, lr in itertools.product(streams, lrs):
        chosen = [r for r in rows if r["stream"] == stream and r["learning_rate"] == lr]
        if not chosen:
            continue
        fig, ax = report.figure(figsize=(7, 4))
        for i, row in enumerate(chosen):
            curves = np.asarray(row["new_task_acc"], dtype=float)
            finite = np.isfinite(curves).all(-1)
            mean, half = metrics.mean_ci95(100 * curves[finite])
            tasks = np.arange(1, curves.shape[1] + 1)
            ax.plot(tasks, mean, color=f"C{i}", label=row["optimizer"])
            ax.fill_between(tasks, mean - half, mean + half, color=f"C{i}", alpha=0.25)
        ax.set(
            xlabel="task",
            ylabel="accuracy on the task just trained (%)",
            title=f"{stream}, lr {lr:g}: plasticity (mean ± 95% CI, {curves.shape[0]} seeds)",
        )
        ax.grid(alpha=0.3)
        ax.legend()
        path = out / f"plasticity_{stream}_lr{lr:g}.png"
        report.save_figure(fig, path)
        paths.append(path)
    return paths


def time_vmapped_vs_sequential(config: Config, seeds: int, *, data_dir: str | None) -> dict:
    """Wall time of all seeds in one vmapped program vs the same seeds one at a time.

    Compilation is timed separately (one compile per seed count); the run times exclude
    it. Also checks that every seed's curve is the same either way.
    """
    run = build_run(config, data_dir=data_dir, chunk_size=config.num_tasks)
    timing: dict[str, Any] = {"config": dataclasses.asdict(config), "seeds": seeds}
    curves = {}
    for mode, groups in [("vmapped", [list(range(seeds))]), ("seed_by_seed", None)]:
        groups = groups or [[s] for s in range(seeds)]
        start = time.perf_counter()
        state, _ = run.init(engine.seed_keys(groups[0]))
        run.compiled_chunk(state)
        timing[f"{mode}_compile_s"] = round(time.perf_counter() - start, 2)
        start = time.perf_counter()
        curves[mode] = np.concatenate(
            [new_task_accuracy(run(engine.seed_keys(g))) for g in groups], axis=0
        )
        timing[f"{mode}_run_s"] = round(time.perf_counter() - start, 2)
    timing["speedup"] = round(timing["seed_by_seed_run_s"] / timing["vmapped_run_s"], 2)
    timing["max_abs_curve_difference"] = float(
        np.abs(curves["vmapped"] - curves["seed_by_seed"]).max()
    )
    return timing


def _parser(names: list[str]):
    parser = cli.experiment_parser(
        __doc__.split("\n")[0], methods=names, default_seeds=10, default_out="results/plasticity"
    )
    parser.add_argument("--data-dir", default=None, help="tfds data dir (else $TFDS_DATA_DIR)")
    parser.add_argument(
        "--permuted-tasks", type=cli.positive_int, default=100, help="Permuted MNIST tasks"
    )
    parser.add_argument(
        "--pair-tasks",
        type=cli.int_between(1, len(CLASS_PAIRS)),
        default=len(CLASS_PAIRS),
        help="class-pair tasks",
    )
    parser.add_argument(
        "--width", type=cli.positive_int, default=100, help="units per hidden layer"
    )
    parser.add_argument("--batch-size", type=cli.positive_int, default=32)
    parser.add_argument("--epochs", type=cli.positive_int, default=1, help="epochs per task")
    parser.add_argument(
        "--train-per-task",
        type=cli.non_negative_int,
        default=10000,
        help="training examples per task (0: all)",
    )
    parser.add_argument(
        "--test-per-task",
        type=cli.non_negative_int,
        default=0,
        help="test examples per task (0: all)",
    )
    parser.add_argument("--rho", type=cli.non_negative_float, default=0.05, help="SAM radius")
    parser.add_argument(
        "--gnp-r", type=cli.non_negative_float, default=0.125, help="GNP perturbation radius"
    )
    parser.add_argument(
        "--gnp-alpha", type=cli.finite_float, default=0.8, help="GNP alpha = lambda / r"
    )
    parser.add_argument("--gnp-normalize-first", action="store_true")
    parser.add_argument("--pair-head", choices=PAIR_HEADS, default="pair")
    parser.add_argument("--perm-seed", type=int, default=0, help="seed of the permutations")
    parser.add_argument(
        "--window",
        type=cli.positive_int,
        default=10,
        help="tasks averaged at the start and the end",
    )
    parser.add_argument(
        "--timing",
        action="store_true",
        help="also time permuted/sgd@0.01 with all seeds vmapped vs seed by seed",
    )
    parser.add_argument(
        "--timing-tasks",
        type=cli.positive_int,
        default=100,
        help="Permuted MNIST tasks of the timing run",
    )
    return parser


def run_row(config: Config, args, window: int) -> dict:
    """Runs one configuration for all seeds; its results.json row."""
    start = time.perf_counter()
    chunk = cli.chunk_size(args, config.num_tasks)
    run = build_run(config, data_dir=args.data_dir, chunk_size=chunk)
    results = cli.run_method(run, args, config.name, config)
    seconds = time.perf_counter() - start
    curves = new_task_accuracy(results)
    per_seed = plasticity_metrics(curves, window)
    diverged = np.flatnonzero(results.diverged)
    row = {
        "method": config.name,
        "metrics": metrics.summary_table(per_seed),
        "stream": config.stream,
        "optimizer": config.optimizer,
        "learning_rate": config.learning_rate,
        "window": window,
        # JSON has no NaN: diverged seeds are null.
        "new_task_acc": [[None if np.isnan(v) else float(v) for v in c] for c in curves],
        "diverged_seeds": {int(s): int(results.diverged_at[s]) for s in diverged},
        "config": dataclasses.asdict(config),
        "seconds": round(seconds, 2),
    }
    m = row["metrics"]
    print(
        f"{config.name:>24}: first {100 * (m['first']['mean'] or np.nan):.1f}  last "
        f"{100 * (m['last']['mean'] or np.nan):.1f}  loss "
        f"{100 * (m['plasticity_loss']['mean'] or np.nan):+.1f} points ({seconds:.0f} s)",
        flush=True,
    )
    return row


def summary_text(rows, per_seed, shared: dict, args) -> str:
    """The table, the differences to SGD and the verdict on the paper's findings."""
    streams = [s for s in STREAMS if any(r["stream"] == s for r in rows)]
    lrs = sorted({r["learning_rate"] for r in rows}, reverse=True)
    width = shared["width"]
    text = (
        "Plasticity = accuracy on each task right after training it; first/last = mean over "
        f"the first/last {rows[0]['window']} tasks; plasticity_loss = first − last "
        f"(positive: plasticity lost). {args.seeds} seeds, mean ± 95% CI. MLP "
        f"784-{width}-{width}-out, batch {shared['batch_size']}, {shared['epochs_per_task']} "
        f"epoch(s) per task on {shared['train_per_task'] or 'all'} training examples, SAM "
        f"ρ={args.rho}, GNP r={args.gnp_r} α={args.gnp_alpha} "
        f"(λ={args.gnp_r * args.gnp_alpha:g}), class pairs with a "
        f"{'2-unit' if args.pair_head == 'pair' else '10-way shared'} head."
        f"{' QUICK smoke configuration.' if args.quick else ''}\n\n"
        + report.markdown_table(rows, metrics=METRICS)
    )
    diffs = compare_to_sgd(per_seed, lrs, streams)
    if diffs:
        text += "\nDifference to SGD at the same learning rate (Welch 95% CI, points):\n\n"
        text += "| setting | Δ plasticity_loss | Δ last |\n|---|---|---|\n"
        for d in diffs:
            cells = [
                f"{100 * d[m][0]:+.1f} ± {100 * d[m][1]:.1f}" for m in ("plasticity_loss", "last")
            ]
            text += f"| {d['stream']}/{d['optimizer']}@{d['lr']:g} | {cells[0]} | {cells[1]} |\n"
    lines = findings(per_seed, lrs, streams)
    if lines:
        text += "\nThe paper's findings here:\n\n" + "".join(f"- {line}\n" for line in lines)
    else:
        text += (
            "\nThe paper's findings here: not checked (each needs the SGD row and the SAM/GNP "
            "rows of a stream at the same learning rate).\n"
        )
    return text


def timing_text(t: dict) -> str:
    c = t["config"]
    return (
        f"\nWall time of {method_name(c['stream'], c['optimizer'], c['learning_rate'])} with "
        f"{c['num_tasks']} tasks and {t['seeds']} seeds: one vmapped program "
        f"{t['vmapped_run_s']} s (+ {t['vmapped_compile_s']} s compile) vs seed by seed "
        f"{t['seed_by_seed_run_s']} s (+ {t['seed_by_seed_compile_s']} s compile): "
        f"{t['speedup']}× faster; largest per-seed curve difference "
        f"{t['max_abs_curve_difference']:.2g}.\n"
    )


def main(argv: list[str] | None = None) -> list[dict]:
    names = [method_name(s, o, lr) for s in STREAMS for o in OPTIMIZERS for lr in LEARNING_RATES]
    args = _parser(names).parse_args(argv)
    methods = cli.selected_methods(args, names)
    shared = {
        "width": args.width,
        "batch_size": args.batch_size,
        "epochs_per_task": args.epochs,
        "train_per_task": args.train_per_task or None,
        "test_per_task": args.test_per_task or None,
        "rho": args.rho,
        "gnp_r": args.gnp_r,
        "gnp_alpha": args.gnp_alpha,
        "gnp_normalize_first": args.gnp_normalize_first,
        "pair_head": args.pair_head,
        "perm_seed": args.perm_seed,
    }
    tasks = {"permuted": args.permuted_tasks, "class_pairs": args.pair_tasks}
    if args.quick:
        shared.update(width=32, train_per_task=64, test_per_task=64)
        tasks = {"permuted": 4, "class_pairs": 4}
    window = min(args.window, *(t // 2 for t in tasks.values())) or 1
    run_config = {"seeds": args.seeds, "quick": args.quick, "window": window, "tasks": tasks}
    run_config.update(shared)
    previous = cli.previous_results(
        args, experiment="plasticity", config=run_config, methods=methods
    )
    rows = []
    for name in methods:
        stream, rest = name.split("/")
        optimizer, lr = rest.split("@")
        config = Config(stream, optimizer, float(lr), num_tasks=tasks[stream], **shared)
        rows.append(run_row(config, args, window))
    rows = report.merge_rows(previous["rows"], rows, order=names)
    per_seed = {row["method"]: report.per_seed(row) for row in rows}
    text = summary_text(rows, per_seed, shared, args)
    timing = previous.get("timing")  # kept from an earlier --timing run unless re-measured
    if args.timing:
        timing_tasks = 4 if args.quick else args.timing_tasks
        config = Config("permuted", "sgd", 0.01, num_tasks=timing_tasks, **shared)
        timing = time_vmapped_vs_sequential(config, args.seeds, data_dir=args.data_dir)
    if timing is not None:
        text += timing_text(timing)
    print("\n" + text)
    out = Path(args.out)
    report.write_results(
        out, experiment="plasticity", config=run_config, rows=rows, extra={"timing": timing}
    )
    report.write_table(out, text)
    plot_curves(rows, [s for s in STREAMS if s in {r["stream"] for r in rows}], LEARNING_RATES, out)
    return rows


if __name__ == "__main__":
    cli.main(main)
