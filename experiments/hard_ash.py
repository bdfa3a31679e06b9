"""Hard ASH (Keskinen 2024): sparse activations + adaptive optimizers on Split-MNIST.

Paper: "Sparsity and the right optimizer make a continual learner", arXiv 2404.17651.
Protocol as the authors' code ran it (``LesserScholar/hard-ash``):
MNIST split into {0,1}, {2,3}, ..., {8,9}; one epoch per task; batch 64 with the last
partial batch kept; 784-1000-10 MLP without biases, He-normal init and weight
standardisation of the hidden layer; optimizer state never reset; the update clipped
element-wise to ±0.01; evaluation on the full 10k test set with argmax over all 10 logits
(class-incremental). The headline: Hard ASH (α=3, z_k=2.3) with Adagrad (lr 2e-4, initial
accumulator 1e-6) reaches 78.3% (mean of 5 runs).

Commands::

    python experiments/hard_ash.py            # headline + ReLU/SGD, 5 seeds vmapped
    python experiments/hard_ash.py --grid     # every activation x optimizer cell
    python experiments/hard_ash.py --quick    # seconds-long smoke run

The configuration axis: the cells of ``--grid`` that share an optimizer family are the
cells of one compiled program (6 programs instead of 66). The activation is chosen by index
among the program's activations (``lax.switch``; under the vmapped rows every branch is
computed and the row's selected), and the activation parameters ``alpha``, ``z_k``, ``a``
and the ``learning_rate`` are traced; every other hyperparameter (``k``, ``groups``, ``d``,
the optimizer family and its decay rates, the width) is structural and must agree within
a program. Each cell's accuracies are those of its run alone (``--quick --grid``: every
row of results.json as with 66 programs). Computing every activation costs little: XLA's
cost analysis of the default width (1000 units) counts 8 % more FLOPs per row than a run
of one activation.

Deviations: the code draws top-k's k from {64, 96} and LWTA's groups from {25, 50, 100}
at random when not sweeping; we pin k=64 and groups=50 (the table says so). Seeds are
``PRNGKey(0..S-1)`` (the authors used 12345..12349 with a different RNG stream).

The paper's permuted-MNIST plasticity section is ``experiments/hard_ash_permuted.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax

from jaxcl import _checks, cli, data, engine, learners, report, scenarios
from jaxcl.activations import get_activation
from jaxcl.experiment import Experiment, quick_note
from jaxcl.models.mlp import MLP
from jaxcl.optim import get_optimizer

PAPER_POOLED_ACC = {"hard_ash+adagrad": 0.783}
FORGETTING_FLOOR = 0.1983  # always predicting the last task's two classes

# Pinned hyperparameters of the authors' non-sweep mode.
PINNED_ACTIVATIONS: dict[str, dict[str, Any]] = {
    "hard_ash": {"alpha": 3.0, "z_k": 2.3},
    "ash": {"alpha": 3.0, "z_k": 2.3},
    # The Hard ASH code: gradient flows through the k-th value, output clipped to [0, 2].
    "topk_subtract": {"k": 64, "stop_gradient": False, "clip_max": 2.0},
    "topk_mask": {"k": 64},
    "lwta": {"groups": 50},
    "elephant": {"a": 0.16, "d": 4.0},
    "relu": {},
    "swish": {},
    "sigmoid": {},
    "hard_sigmoid": {},
    "gumbel": {},
}
PINNED_OPTIMIZERS: dict[str, dict[str, Any]] = {
    "adagrad": {"learning_rate": 2e-4, "initial_accumulator_value": 1e-6},
    "adam": {"learning_rate": 1e-5, "b1": 0.98, "b2": 0.9995},
    "adam_nobc": {"learning_rate": 1e-5, "b1": 0.98, "b2": 0.9995},
    "rmsprop": {"learning_rate": 5.5e-6, "decay": 0.9993},
    "sgd": {"learning_rate": 4e-4},
    "momentum": {"learning_rate": 1e-5, "momentum": 0.998},
}
HEADLINE = ("hard_ash+adagrad", "relu+sgd")
# Traced in a grid: the activation parameters and the learning rate (module docstring).
TRACED = ("alpha", "z_k", "a", "learning_rate")


Hparams = tuple[tuple[str, Any], ...]


@dataclasses.dataclass(frozen=True)
class Config:
    """One row of the study: the whole run as data (saved into results.json).

    ``activation_hparams`` and ``optimizer_hparams`` (``(name, value)`` pairs) default to
    the :data:`PINNED_ACTIVATIONS` and :data:`PINNED_OPTIMIZERS` entries, top-k's k capped
    at a tenth of the hidden width and LWTA's groups lowered to a divisor of it (valid for
    narrow smoke models: the --quick grid's 64 units get 32 groups).
    """

    activation: str
    optimizer: str
    hidden: tuple[int, ...] = (1000,)
    batch_size: int = 64
    epochs_per_task: int = 1
    update_clip: float = 0.01
    max_train_per_task: int | None = None
    max_test_per_task: int | None = None
    activation_hparams: Hparams | None = None
    optimizer_hparams: Hparams | None = None

    def __post_init__(self):
        # Resolved here so that the config (the checkpoint fingerprint) holds the values used.
        if self.activation_hparams is None:
            kwargs = dict(PINNED_ACTIVATIONS[self.activation])
            width = self.hidden[-1]
            if "k" in kwargs:
                kwargs["k"] = min(kwargs["k"], max(1, width // 10))
            if "groups" in kwargs and width % kwargs["groups"]:
                # The largest group count up to the pinned one that divides the width.
                kwargs["groups"] = max(g for g in range(1, kwargs["groups"] + 1) if width % g == 0)
            object.__setattr__(self, "activation_hparams", tuple(sorted(kwargs.items())))
        if self.optimizer_hparams is None:
            pinned = tuple(sorted(PINNED_OPTIMIZERS[self.optimizer].items()))
            object.__setattr__(self, "optimizer_hparams", pinned)


# --quick: a 64-unit MLP on 256 / 128 images per task.
QUICK = dict(hidden=(64,), max_train_per_task=256, max_test_per_task=128)
# Every activation x optimizer cell; --grid runs them all.
METHODS = {f"{a}+{o}": Config(a, o) for a in PINNED_ACTIVATIONS for o in PINNED_OPTIMIZERS}


def configure(config: Config, *, quick: bool) -> Config:
    """The configuration run: under ``quick``, :data:`QUICK` (pinned values resolved anew)."""
    return Config(config.activation, config.optimizer, **QUICK) if quick else config


def load_mnist(data_dir: str | None = None) -> data.ArrayDataset:
    """MNIST standardised with its own statistics."""
    return data.preprocess(data.load("mnist", data_dir=data_dir), stats_of="mnist")


def run_on(scenario: scenarios.Scenario, config: Config, *, chunk_size: int = 1) -> engine.Run:
    """The compiled run of one configuration's MLP, activation and optimizer on ``scenario``."""
    model = MLP(
        hidden=config.hidden,
        activation=get_activation(config.activation, **dict(config.activation_hparams)),
    )
    optimizer = get_optimizer(
        config.optimizer, clip_updates=config.update_clip, **dict(config.optimizer_hparams)
    )
    learner = learners.supervised(model, optimizer, input_dim=scenario.input_dim)
    return engine.make_run(
        scenario,
        learner,
        batch_size=config.batch_size,
        epochs_per_task=config.epochs_per_task,
        chunk_size=chunk_size,
    )


def split_mnist(config: Config, *, data_dir: str | None = None) -> scenarios.Scenario:
    """Split-MNIST with ``config``'s per-task sizes."""
    return scenarios.split(
        load_mnist(data_dir),
        classes_per_task=2,
        max_train_per_task=config.max_train_per_task,
        max_test_per_task=config.max_test_per_task,
    )


def build_run(config: Config, *, data_dir: str | None = None, chunk_size: int = 1) -> engine.Run:
    """The compiled Split-MNIST run of one configuration."""
    return run_on(split_mnist(config, data_dir=data_dir), config, chunk_size=chunk_size)


def _split(hparams: Hparams) -> tuple[dict[str, Any], Hparams]:
    """The traced entries of ``hparams`` (:data:`TRACED`) and the structural ones."""
    return (
        {name: value for name, value in hparams if name in TRACED},
        tuple((name, value) for name, value in hparams if name not in TRACED),
    )


def _fixed(config: Config) -> Config:
    """What one grid program fixes: ``config`` but its activation and :data:`TRACED`."""
    optimizer = _split(config.optimizer_hparams)[1]
    return dataclasses.replace(
        config, activation="", activation_hparams=(), optimizer_hparams=optimizer
    )


def grid_on(
    scenario: scenarios.Scenario, configs: Mapping[str, Config], *, chunk_size: int = 1
) -> engine.Run:
    """The compiled grid run of configurations that differ only in their activation and
    traced hyperparameters (:data:`TRACED`), one cell per entry of ``configs``.

    The activation is a traced index into the configurations' activations (in order of
    appearance). A traced hyperparameter that a cell's activation does not take gets the
    first value given in the grid: every row computes every activation (a valid value
    keeps the unused branches finite).

    Raises:
      ValueError: configurations that differ in a structural hyperparameter, naming it.
    """
    first = next(iter(configs.values()))
    fixed = {name: _fixed(c) for name, c in configs.items()}
    if len(set(fixed.values())) > 1:
        _checks.fail("the structural hyperparameters", "the same in every cell of a grid", fixed)
    branches: dict[str, tuple[tuple[str, ...], Hparams]] = {}
    for c in configs.values():
        traced, static = _split(c.activation_hparams)
        branch = (tuple(sorted(traced)), static)
        if branches.setdefault(c.activation, branch) != branch:
            allowed = "the same in every cell of a grid"
            _checks.fail(f"{c.activation}'s structural hyperparameters", allowed, static)
    values = {
        name: {**_split(c.activation_hparams)[0], **_split(c.optimizer_hparams)[0]}
        for name, c in configs.items()
    }
    fill: dict[str, Any] = {}
    for given in values.values():
        fill = {**given, **fill}
    order = list(branches)
    cells = {
        name: {**fill, **values[name], "activation": order.index(c.activation)}
        for name, c in configs.items()
    }
    optimizer_traced = sorted(_split(first.optimizer_hparams)[0])

    def build(hparams: Mapping[str, Any]) -> Any:
        functions = [
            get_activation(a, **dict(static), **{n: hparams[n] for n in names})
            for a, (names, static) in branches.items()
        ]

        def activation(x: jax.Array) -> jax.Array:
            return jax.lax.switch(hparams["activation"], functions, x)

        optimizer = get_optimizer(
            first.optimizer,
            clip_updates=first.update_clip,
            **dict(_split(first.optimizer_hparams)[1]),
            **{n: hparams[n] for n in optimizer_traced},
        )
        model = MLP(hidden=first.hidden, activation=activation)
        return learners.supervised(model, optimizer, input_dim=scenario.input_dim)

    return engine.make_run(
        scenario,
        build,
        grid=engine.grid(cells),
        batch_size=first.batch_size,
        epochs_per_task=first.epochs_per_task,
        chunk_size=chunk_size,
    )


def header(rows: list[dict], args: argparse.Namespace) -> str:
    topk, lwta = (
        dict(configure(Config(a, "sgd"), quick=args.quick).activation_hparams)
        for a in ("topk_mask", "lwta")
    )
    return (
        f"Split-MNIST, {args.seeds} seeds, 1 epoch/task, batch 64; pooled_acc = accuracy on "
        f"all test images after task 5 (paper's metric); forgetting floor "
        f"{100 * FORGETTING_FLOOR:.2f}%.{quick_note(args)}"
        f"\nPinned: topk k={topk['k']}, lwta groups={lwta['groups']}.\n\n"
    )


def plot_heatmap(rows: list[dict], args: argparse.Namespace, out: Path) -> None:
    """Final accuracy of each activation x optimizer cell run (more than two rows)."""
    if len(rows) <= 2:
        return
    acts = [a for a in PINNED_ACTIVATIONS if any(r["method"].startswith(a + "+") for r in rows)]
    opts = [o for o in PINNED_OPTIMIZERS if any(r["method"].endswith("+" + o) for r in rows)]
    axes = {"activation": acts, "optimizer": opts}  # a method is "<activation>+<optimizer>"
    grid = report.metric_grid(
        rows, "pooled_acc", axes, lambda r: dict(zip(axes, r["method"].split("+"), strict=True))
    )
    report.heatmap(
        grid,
        out / "grid_heatmap.png",
        row_labels=acts,
        column_labels=opts,
        title="Split-MNIST final accuracy (mean over seeds)",
        colorbar_label="final accuracy",
        vmin=0,
        vmax=1,
    )


EXPERIMENT = Experiment(
    name="hard_ash",
    description=__doc__.splitlines()[0],
    methods=METHODS,
    configure=lambda config, args: configure(config, quick=args.quick),
    traced={name: ("activation", "activation_hparams", "optimizer_hparams") for name in METHODS},
    build_grid=lambda configs, args: grid_on(
        split_mnist(next(iter(configs.values())), data_dir=args.data_dir),
        configs,
        chunk_size=cli.chunk_size(args, 5),
    ),
    default_methods=HEADLINE,
    method_sets={"grid": tuple(METHODS)},
    paper={m: {"pooled_acc": v} for m, v in PAPER_POOLED_ACC.items()},
    header=header,
    forgetting_floor=FORGETTING_FLOOR,
    plots=plot_heatmap,
)


if __name__ == "__main__":
    cli.main(EXPERIMENT)
