"""Plasticity and loss sharpness: the sensitivity sweep of SAM's ρ and GNP's r × α.

The protocol, its flags and its table are ``experiments/plasticity.py``'s (Koster & Kukla
2024, arXiv 2409.17300); the paper gives no sweep. At lr 0.01 (:data:`SWEEP_LR`) on both
streams, SAM at ρ in :data:`SAM_RHOS` and GNP at r in :data:`GNP_RS` × α in
:data:`GNP_ALPHAS`, beside SGD. ρ, r and α are traced (:func:`jaxcl.engine.grid`): each
stream's SAM cells are one compiled program, its GNP cells another (4 programs and the 2
SGD rows instead of 38 programs). The table holds the SGD rows; below it, each cell's
plasticity loss minus SGD's and the cells where the paper's findings hold. A sweep cell at
the table's values is not the table's row bit for bit: there ρ, r, α are Python constants
(1 − α is computed in float64, then rounded to float32; traced, it is computed in
float32), so losses differ in their last bits.

    python experiments/plasticity_sweep.py --train-per-task 2000 --permuted-tasks 50
    python experiments/plasticity_sweep.py --quick   # a smoke run of every cell

Measured (``--train-per-task 2000 --permuted-tasks 50``, 10 seeds; 6 compiled programs,
25 min on 2 idle CPU cores; ``results/plasticity_sweep/``): no SAM or GNP cell loses
significantly less plasticity than SGD on either stream. The loss grows with ρ and with r
and α: on class pairs SAM is within 0.0 points of SGD up to ρ = 0.02, +0.2 at ρ = 0.05 and
+0.7 at 0.1 (both significant), then collapses (+27.2 at ρ = 0.2, +38.6 at 0.5: the last
tasks at chance); GNP is within 0.1 points at r = 0.05 and significantly worse from r =
0.125, α = 0.5 (+0.4; +0.8 at the table's α = 0.8), up to +39.6 at r = 0.5, α = 0.8. The
paper's GNP finding (GNP keeps plasticity best) holds in no cell: at r = 0.05 GNP ties SGD
and SAM at ρ = 0.01 (means within 0.02 points). On permuted MNIST every SAM and GNP cell
loses significantly more plasticity than SGD (ρ = 0.01 and r = 0.05, α = 0.2 by +0.5 ±
0.5). The same command before the models' faster kernel gradient (``models.Dense``) gave the
SGD rows bit for bit and every cell's mean within 0.3 points, but three borderline verdicts
the other way (on class pairs GNP r = 0.05, α = 0.2 lowest of all by 0.0 points and GNP r =
0.125, α = 0.2 significantly worse than SGD; on permuted MNIST SAM ρ = 0.01 not
significantly worse): float rounding decides ties this close.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
from pathlib import Path

# Run as a script, this file's folder is on sys.path, not the checkout that holds it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments import plasticity
from experiments.plasticity import STREAMS, Config, method_name
from jaxcl import cli, engine, report
from jaxcl.experiment import difference, seed_means

SWEEP_LR = 0.01
SAM_RHOS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
GNP_RS = (0.05, 0.125, 0.25, 0.5)
GNP_ALPHAS = (0.2, 0.5, 0.8)
SWEPT = {"sam": ("rho",), "gnp": ("gnp_r", "gnp_alpha")}  # the traced fields


def sweep_cells(stream: str) -> dict[str, tuple[str, str, float, dict[str, float]]]:
    """The sweep's cells of ``stream``: ``{name: (stream, optimizer, lr, traced values)}``."""
    cells = {}
    for rho in SAM_RHOS:
        name = f"{method_name(stream, 'sam', SWEEP_LR)}/rho={rho:g}"
        cells[name] = (stream, "sam", SWEEP_LR, {"rho": rho})
    for r, alpha in itertools.product(GNP_RS, GNP_ALPHAS):
        name = f"{method_name(stream, 'gnp', SWEEP_LR)}/r={r:g}/alpha={alpha:g}"
        cells[name] = (stream, "gnp", SWEEP_LR, {"gnp_r": r, "gnp_alpha": alpha})
    return cells


SWEEP = {name: spec for stream in STREAMS for name, spec in sweep_cells(stream).items()}
SGD_ROWS = {
    name: plasticity.METHODS[name] for name in (method_name(s, "sgd", SWEEP_LR) for s in STREAMS)
}


def grid_run(configs: dict[str, Config], args: argparse.Namespace) -> engine.Run:
    """The experiment's ``build_grid``: sweep cells of one stream and optimizer."""
    first = next(iter(configs.values()))
    traced = SWEPT[first.optimizer]
    grid = engine.grid({n: {f: getattr(c, f) for f in traced} for n, c in configs.items()})
    chunk_size = cli.chunk_size(args, first.num_tasks)
    return plasticity.build_run(first, data_dir=args.data_dir, chunk_size=chunk_size, grid=grid)


def _cell(rows: list[dict], name: str, sgd: str) -> str:
    """``"+1.2 ± 0.3*"``: the cell's plasticity loss minus SGD's (* significant)."""
    d = difference(rows, name, sgd, "plasticity_loss")
    return d.points() + ("*" if d.significant else "")


def _listed(labels: list[str]) -> str:
    return ", ".join(labels) if labels else "none"


def sweep_findings(rows: list[dict]) -> str:
    """The sensitivity sweep: each cell's plasticity loss minus SGD's, and where in the sweep
    the paper's findings hold (computed from the rows; nothing assumed)."""
    by_method = {row["method"]: row for row in rows}
    losses = seed_means(rows, "plasticity_loss")
    text = ""
    for stream in STREAMS:
        sgd = method_name(stream, "sgd", SWEEP_LR)
        cells = {n: spec for n, spec in sweep_cells(stream).items() if n in by_method}
        if sgd not in by_method or not cells:
            continue
        sam = {n: v["rho"] for n, (_, o, _, v) in cells.items() if o == "sam"}
        gnp = {n: (v["gnp_r"], v["gnp_alpha"]) for n, (_, o, _, v) in cells.items() if o == "gnp"}
        text += (
            f"\nSweep, {stream}, lr {SWEEP_LR:g}: plasticity loss minus SGD's (points, Welch "
            f"95% CI, * significant; SGD's own: {100 * losses[sgd]:+.1f}):\n\n"
        )
        if sam:
            text += "| SAM ρ | " + " | ".join(f"{rho:g}" for rho in sam.values()) + " |\n"
            text += "|---" * (len(sam) + 1) + "|\n| Δ | "
            text += " | ".join(_cell(rows, n, sgd) for n in sam) + " |\n\n"
        if gnp:
            alphas = sorted({a for _, a in gnp.values()})
            text += "| GNP r \\ α | " + " | ".join(f"{a:g}" for a in alphas) + " |\n"
            text += "|---" * (len(alphas) + 1) + "|\n"
            for r in sorted({r for r, _ in gnp.values()}):
                at = {a: n for n, (r_, a) in gnp.items() if r_ == r}
                line = " | ".join(_cell(rows, at[a], sgd) if a in at else "–" for a in alphas)
                text += f"| {r:g} | {line} |\n"
        labels = {n: f"SAM ρ={rho:g}" for n, rho in sam.items()}
        labels.update({n: f"GNP r={r:g} α={a:g}" for n, (r, a) in gnp.items()})
        verdicts = {n: difference(rows, n, sgd, "plasticity_loss").verdict for n in labels}
        lower = [labels[n] for n, v in verdicts.items() if v == "lower"]
        higher = [labels[n] for n, v in verdicts.items() if v == "higher"]
        text += (
            f"\n- significantly less plasticity loss than SGD: {_listed(lower)}\n"
            f"- significantly more plasticity loss than SGD: {_listed(higher)}\n"
        )
        if stream == "class_pairs" and gnp:
            rivals = min(losses[n] for n in (sgd, *sam))
            best = [n for n in gnp if losses[n] < rivals]
            significant = sum(verdicts[n] == "lower" for n in best)
            text += (
                "- the paper's GNP finding, GNP keeps plasticity best (mean plasticity loss "
                f"below SGD's and below SAM's at every swept ρ), holds at: "
                f"{_listed([labels[n] for n in best])} ({len(best)} of {len(gnp)} GNP cells; "
                f"significantly below SGD's in {significant} of them)\n"
            )
    return text


def table_rows(rows: list[dict]) -> list[dict]:
    """The SGD rows, those of plasticity.py's table (the cells are in the findings)."""
    return [r for r in rows if r["method"] in SGD_ROWS]


SWEEP_NOTE = (
    f" The sweep's cells (lr {SWEEP_LR:g}) take the ρ, r and α in their names, traced: "
    "one compiled program per stream and optimizer."
)

EXPERIMENT = dataclasses.replace(
    plasticity.EXPERIMENT,
    name="plasticity_sweep",
    description=__doc__.splitlines()[0],
    methods={**SGD_ROWS, **SWEEP},
    traced={name: SWEPT[spec[1]] for name, spec in SWEEP.items()},
    build_grid=grid_run,
    header=lambda rows, args: plasticity.header(rows, args, note=SWEEP_NOTE),
    table=lambda rows, args: report.markdown_table(table_rows(rows), metrics=plasticity.METRICS),
    findings=lambda rows, args: plasticity.table_findings(table_rows(rows)) + sweep_findings(rows),
    plots=lambda rows, args, out: plasticity.plot_curves(table_rows(rows), args, out),
)


if __name__ == "__main__":
    cli.main(EXPERIMENT)
