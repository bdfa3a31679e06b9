"""Stale momentum toy (SDM paper, App. D): the step taken when a silent weight re-activates.

Bricken et al., "Sparse Distributed Memory is a Continual Learner", ICLR 2023, App. D;
notebook ``TrentBrick/SDMContinualLearner/notebooks/StaleGradients.ipynb``.

A scalar parameter receives the gradient g = 0.2 at steps 0 and 1 (``--warmup``), then
nothing for ``s`` steps (a silent neuron), then g once more. We record the step each
optimizer applies (learning rate 1, so the step is the optimizer's direction) and report,
as a function of the silence length s:

* ``inflation@s``: the re-activation step divided by the step the same optimizer takes
  when the third gradient follows without silence (s = 0). 1 means the silence changed
  nothing; > 1 means an inflated step after quiescence.
* ``delta@s``: the re-activation step minus the true gradient, the notebook's quantity.
* ``drift@s``: total |movement| during the silence, while the true gradient is zero.

Methods use the real transformations: ``optax.sgd(1, momentum=0.9)`` (PyTorch-style
trace, the notebook's SGDM), ``optax.adam(1)`` (β = 0.9, 0.999, bias-corrected),
``optax.rmsprop(1, decay=0.99, eps=1e-8, eps_in_sqrt=False)`` (PyTorch's RMSprop, the
notebook's), ``jaxcl.optim.masked_adam(1)`` (inactive = zero gradient) and, labelled
``adam_notebook``, the notebook's Adam with *constant* divisors 1/(1-β₁) and 1/(1-β₂),
built exactly as a scaled Adam-without-bias-correction.

The toy is deterministic: ``--seeds`` is accepted and ignored (one value per metric).

    python experiments/stale_momentum.py --out results/stale_momentum
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.ticker
import numpy as np
import optax

from jaxcl import cli, report
from jaxcl.experiment import Experiment, checklist
from jaxcl.optim import masked_adam, scale_by_masked_adam

B1, B2, MOMENTUM, RMS_DECAY, EPS = 0.9, 0.999, 0.9, 0.99, 1e-8


def _notebook_adam() -> optax.GradientTransformation:
    # (m/(1-β₁)) / (sqrt(v/(1-β₂)) + ε) = sqrt(1-β₂)/(1-β₁) · m / (sqrt(v) + ε·sqrt(1-β₂)).
    scale = np.sqrt(1 - B2) / (1 - B1)
    return optax.chain(
        scale_by_masked_adam(
            B1, B2, EPS * np.sqrt(1 - B2), bias_correction=False, mask_by_gradient=False
        ),
        optax.scale(-scale),
    )


METHODS: dict[str, Callable[[], optax.GradientTransformation]] = {
    "sgd": lambda: optax.sgd(1.0),
    "sgd_momentum": lambda: optax.sgd(1.0, momentum=MOMENTUM),
    "adam": lambda: optax.adam(1.0, b1=B1, b2=B2, eps=EPS),
    "rmsprop": lambda: optax.rmsprop(1.0, decay=RMS_DECAY, eps=EPS, eps_in_sqrt=False),
    "masked_adam": lambda: masked_adam(1.0, B1, B2, EPS),
    "adam_notebook": _notebook_adam,
}
TABLE_SILENCES = (1, 10, 100, 1000, 10000)


def simulate(
    opt: optax.GradientTransformation, silences: np.ndarray, *, grad: float, warmup: int
) -> np.ndarray:
    """Steps (−update, learning rate 1) at every time step, one row per silence length.

    Row ``i`` sees ``grad`` at steps ``0..warmup-1`` and at step ``warmup + silences[i]``,
    zero elsewhere; all rows run ``warmup + max(silences) + 1`` steps.
    """
    horizon = int(warmup + silences.max() + 1)

    def run(silence):
        def body(state, t):
            active = (t < warmup) | (t == warmup + silence)
            g = jnp.where(active, grad, 0.0).astype(jnp.float32)
            update, state = opt.update(g, state, jnp.zeros(()))
            return state, -update

        _, steps = jax.lax.scan(body, opt.init(jnp.zeros(())), jnp.arange(horizon))
        return steps

    return np.asarray(jax.jit(jax.vmap(run))(jnp.asarray(silences)))


def nonzero_finite_float(text: str) -> float:
    """``argparse`` type of ``--grad``: the reference step divides by it, so not 0."""
    try:
        value = cli.finite_float(text)
    except argparse.ArgumentTypeError:
        value = 0.0
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be a finite nonzero number, got {text!r}")
    return value


def execute(methods, args: argparse.Namespace) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """Each method's step, inflation, delta and drift per silence (``args.silences[0] = 0``)."""
    warmup, silences = args.warmup, args.silences
    for name, make in methods:
        steps = simulate(make(), silences, grad=args.grad, warmup=warmup)
        at_reactivation = steps[np.arange(len(silences)), warmup + silences]
        t = np.arange(steps.shape[1])[None, :]
        quiet = (t >= warmup) & (t < (warmup + silences)[:, None])
        yield (
            name,
            {
                "step": at_reactivation,
                "inflation": at_reactivation / at_reactivation[0],
                "delta": at_reactivation - args.grad,
                "drift": np.where(quiet, np.abs(steps), 0.0).sum(axis=1),
            },
        )


def table_metrics(values, make, args: argparse.Namespace) -> dict[str, list[float]]:
    """The table's metrics at :data:`TABLE_SILENCES`, one "seed" (the toy is deterministic)."""
    per_seed = {"step@s=0": [values["step"][0]]}
    for s in TABLE_SILENCES:
        i = int(np.searchsorted(args.silences, s))
        for metric in ("inflation", "delta", "drift"):
            per_seed[f"{metric}@s={s}"] = [values[metric][i]]
    return per_seed


def claims(rows: list[dict]) -> dict[str, bool]:
    """The qualitative result: dense adaptive methods inflate, masked Adam does not."""
    by_method = {row["method"]: row["metrics"] for row in rows}
    longest = f"inflation@s={TABLE_SILENCES[-1]}"
    out = {}
    if "adam" in by_method:
        out["adam inflated after long quiescence"] = by_method["adam"][longest]["mean"] > 1.5
    if "rmsprop" in by_method:
        out["rmsprop inflated after quiescence"] = by_method["rmsprop"][longest]["mean"] > 1.2
    if "masked_adam" in by_method:
        metrics = by_method["masked_adam"]
        out["masked adam: no inflation, no drift"] = all(
            abs(stat["mean"] - 1.0) < 1e-3 for k, stat in metrics.items() if "inflation" in k
        ) and all(stat["mean"] == 0.0 for k, stat in metrics.items() if k.startswith("drift"))
    return out


def flags(parser: argparse.ArgumentParser) -> None:
    grad, warmup = "injected gradient value", "consecutive injections before the silence"
    parser.add_argument("--grad", type=nonzero_finite_float, default=0.2, help=grad)
    parser.add_argument("--warmup", type=cli.positive_int, default=2, help=warmup)


def silence_grid(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """The silence lengths simulated: 0, the table's, and a log grid unless ``--quick``."""
    grid = TABLE_SILENCES if args.quick else np.geomspace(1, max(TABLE_SILENCES), 41)
    silences = np.unique(np.concatenate([[0], np.round(grid), TABLE_SILENCES])).astype(np.int32)
    return {"silences": silences}


def run_config(args: argparse.Namespace) -> dict:
    return {
        "grad": args.grad,
        "warmup": args.warmup,
        "silences": args.silences.tolist(),
        "table_silences": list(TABLE_SILENCES),
        "hyperparameters": {"b1": B1, "b2": B2, "momentum": MOMENTUM, "rms_decay": RMS_DECAY},
        "learning_rate": 1.0,
        "seeds": "ignored (deterministic)",
        "quick": args.quick,
    }


def tables(rows: list[dict], args: argparse.Namespace) -> str:
    """The header, the inflation table, then the delta and drift table."""
    inflation_cols = [f"inflation@s={s}" for s in TABLE_SILENCES]
    return (
        f"Stale-momentum toy: g = {args.grad} at steps 0..{args.warmup - 1}, silence of s "
        f"steps, g again; learning rate 1. `adam_notebook` is the notebook's Adam with "
        f"constant divisors. Deterministic (--seeds ignored).\n\n"
        "Re-activation step relative to the step without silence (1 = no effect):\n\n"
        + report.markdown_table(
            rows, metrics=["step@s=0", *inflation_cols], percent=False, digits=3
        )
        + "\nRe-activation step minus the true gradient (the notebook's plot), and the drift "
        "during the longest silence. Adaptive methods step by about lr·sign(g) whatever |g|, "
        "so their delta mostly reflects scale; the ratio above isolates the silence.\n\n"
        + report.markdown_table(
            rows,
            metrics=[*(f"delta@s={s}" for s in TABLE_SILENCES), f"drift@s={TABLE_SILENCES[-1]}"],
            percent=False,
            digits=3,
        )
    )


def plot(rows: list[dict], args: argparse.Namespace, out: Path) -> None:
    """Inflation, delta and drift against the silence length, one line per row."""
    fig, axes = report.figure(1, 3, figsize=(15, 4.2))
    x = args.silences[1:]
    panels = [
        ("inflation", "re-activation step / step without silence"),
        ("delta", "re-activation step − true gradient (lr = 1)"),
        ("drift", "|movement| during the silence"),
    ]
    for ax, (metric, title) in zip(axes, panels, strict=True):
        for row in rows:
            name, values = row["method"], row["per_silence"][metric]
            style = {"ls": "--", "lw": 2.5} if name == "masked_adam" else {}
            ax.plot(x, values[1:], label=name, marker="." if len(x) < 10 else None, **style)
        ax.set_xscale("log")
        ax.set_xlabel("silence length (steps without gradient)")
        ax.set_title(title)
    axes[0].axhline(1.0, color="gray", lw=0.8, ls="--")
    axes[0].set_yscale("log")
    axes[0].yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes[0].yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[0].set_yticks([0.25, 0.5, 1, 2, 4])
    axes[2].set_yscale("symlog", linthresh=1e-3)
    axes[2].set_ylim(bottom=0)
    axes[0].legend()
    report.save_figure(fig, out / "stale_momentum.png")


EXPERIMENT = Experiment(
    name="stale_momentum",
    description=__doc__.splitlines()[0],
    methods=METHODS,
    execute=execute,
    flags=flags,
    derive=silence_grid,
    run_config=run_config,
    row_metrics=table_metrics,
    row_fields=lambda values, make, args: {"per_silence": values},
    metrics=("step@s=0", f"inflation@s={TABLE_SILENCES[-1]}"),
    table=tables,
    findings=lambda rows, args: checklist(claims(rows)),
    curves=False,
    plots=plot,
    default_seeds=1,
    checkpoints=False,
    data=False,
)


if __name__ == "__main__":
    cli.main(EXPERIMENT)
