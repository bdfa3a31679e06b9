"""Experiment outputs: results.json, table.md and plots, always written atomically.

Every experiment (:func:`jaxcl.cli.run_experiment`) writes the same ``results.json`` shape::

    {"experiment": str, "config": {...}, "jaxcl_version": str,
     "rows": [{"method": str, "metrics": {name: {"mean", "ci95", "per_seed"}}, ...}]}

``config`` is the run-level configuration shared by every row; each row records its own
method configuration. Rows of several runs are combined by :func:`merge_rows` (see
:func:`jaxcl.cli.previous_results` for when that is allowed).

Every file is written through :mod:`jaxcl.io` (a temporary file renamed over the final
name), so a crash never leaves a half-written file behind.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxcl import __version__, _checks, metrics
from jaxcl.io import atomic_write_bytes, atomic_write_text, finite_or_none, read_json, write_json

__all__ = [
    "diverged_seeds",
    "figure",
    "format_stat",
    "heatmap",
    "markdown_table",
    "merge_rows",
    "metric_grid",
    "per_seed",
    "plot_accuracy_curves",
    "plot_metric_bars",
    "read_results",
    "result_row",
    "save_figure",
    "write_results",
    "write_table",
]


def write_results(
    out_dir: str | os.PathLike,
    *,
    experiment: str,
    config: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Writes ``results.json`` into ``out_dir`` (atomically) and returns its path.

    ``extra`` adds top-level entries that are not rows (e.g. a timing measurement).
    """
    for row in rows:
        if "method" not in row or "metrics" not in row:
            raise ValueError(f"each row needs 'method' and 'metrics' keys, got {sorted(row)}")
    payload = {
        "experiment": experiment,
        "config": dict(config),
        "jaxcl_version": __version__,
        "rows": list(rows),
        **dict(extra or {}),
    }
    return write_json(Path(out_dir) / "results.json", payload)


def read_results(path: str | os.PathLike) -> dict[str, Any] | None:
    """A ``results.json`` payload, or None when ``path`` does not exist.

    Raises:
      ValueError: the file is not a results.json (unreadable JSON, no rows), naming it.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        payload = read_json(path)
        if not all(isinstance(row.get("method"), str) for row in payload["rows"]):
            raise ValueError("a row without a method name")
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as err:
        raise ValueError(
            f"{str(path)!r} is not a readable results.json ({err}); move it away or delete it"
        ) from err
    return payload


def merge_rows(
    old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]], *, order: Sequence[str]
) -> list[Mapping[str, Any]]:
    """``old`` and ``new`` rows, one per method: a new row replaces an old one of its method.

    Rows are sorted by ``order`` (the table's canonical method order); methods not in it
    (e.g. renamed since) follow in their previous order.
    """
    by_method = {row["method"]: row for row in old}
    by_method.update({row["method"]: row for row in new})
    rank = {method: i for i, method in enumerate(order)}
    return sorted(by_method.values(), key=lambda row: rank.get(row["method"], len(rank)))


def per_seed(row: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A row's per-seed values of every metric, as float64 arrays (NaN where null)."""
    return {
        name: np.asarray(stat["per_seed"], dtype=np.float64)
        for name, stat in row["metrics"].items()
    }


def format_stat(stat: Mapping[str, Any] | None, *, percent: bool = True, digits: int = 1) -> str:
    """A metric of a row as ``"mean ± ci95"`` (``"–"`` when missing), diverged seeds noted.

    ``percent`` shows fractions as percentages; ``digits`` decimals are shown.
    """
    if stat is None or stat.get("mean") is None:
        return "–"
    scale = 100.0 if percent else 1.0
    text = f"{stat['mean'] * scale:.{digits}f}"
    if stat.get("ci95") is not None:
        text += f" ± {stat['ci95'] * scale:.{digits}f}"
    if stat.get("n_excluded"):
        text += f" ({stat['n_excluded']} diverged)"
    return text


def markdown_table(
    rows: Sequence[Mapping[str, Any]],
    *,
    metrics: Sequence[str],
    paper: Mapping[str, Mapping[str, float]] | None = None,
    percent: bool = True,
    digits: int = 1,
) -> str:
    """A markdown table: one line per method, mean ± 95% CI per metric.

    Args:
      rows: rows as written to results.json.
      metrics: metric names, in column order.
      paper: optional ``{method: {metric: value}}`` of published numbers (fractions);
        each appears in a "paper" column beside ours.
      percent: show fractions as percentages.
      digits: decimals shown.
    """
    scale = 100.0 if percent else 1.0
    paper = paper or {}
    # A "paper" column only beside metrics for which some published number exists.
    with_paper = {name for name in metrics if any(name in ref for ref in paper.values())}
    header = ["method"]
    for name in metrics:
        header.append(name + (" (%)" if percent else ""))
        if name in with_paper:
            header.append(f"{name} paper")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row["method"])]
        for name in metrics:
            cells.append(format_stat(row["metrics"].get(name), percent=percent, digits=digits))
            if name in with_paper:
                ref = paper.get(row["method"], {}).get(name)
                cells.append("–" if ref is None else f"{ref * scale:.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(out_dir: str | os.PathLike, text: str, name: str = "table.md") -> Path:
    """Writes a markdown table into ``out_dir`` atomically."""
    return atomic_write_text(Path(out_dir) / name, text)


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: int = 120) -> Path:
    """Saves a matplotlib figure as PNG atomically, then closes it."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def figure(*args: Any, **kwargs: Any) -> Any:
    """``plt.subplots`` on the non-interactive Agg backend (safe on headless machines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def plot_accuracy_curves(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    title: str,
    floor: float | None = None,
    key: str = "pooled_acc_after_task",
    label: str = "method",
    spread: str = "seeds",
    xlabel: str = "tasks trained",
    ylabel: str = "accuracy on all test images",
    ylim: tuple[float, float] | None = (0, 1),
) -> Path:
    """Per-seed accuracy curves over the tasks: a PNG with a line per row.

    Each row's ``key`` entry (``[S, T]`` per seed, null for NaN; rows without it are left
    out; default: the accuracy on all test images after each task) is drawn as its seed
    mean with dots, named by the row's ``label`` entry, with its spread over the seeds in
    the same colour: ``spread="seeds"`` a faint line per seed, ``"ci95"`` a band of the
    95% confidence interval of the mean (Student's t, :func:`jaxcl.metrics.mean_ci95`;
    NaN seeds left out). Rows after the tenth are dashed. ``floor`` (e.g. the accuracy of
    a model that knows only the last task) is drawn dotted; ``ylim`` None scales the y
    axis to the curves.
    """
    _checks.one_of("spread", spread, ("ci95", "seeds"))
    fig, ax = figure(figsize=(7, 4.5))
    from matplotlib.ticker import MaxNLocator  # after figure() chose the Agg backend

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    curves = [r for r in rows if key in r]
    for i, row in enumerate(curves):
        per_seed = np.asarray(row[key], dtype=np.float64)  # null -> NaN
        tasks = np.arange(1, per_seed.shape[1] + 1)
        style = {"color": f"C{i % 10}", "ls": "-" if i < 10 else "--"}
        mean, half = metrics.mean_ci95(per_seed, ignore_nan=True)
        if spread == "seeds":
            ax.plot(tasks, per_seed.T, alpha=0.25, lw=0.8, **style)
        else:
            ax.fill_between(tasks, mean - half, mean + half, color=style["color"], alpha=0.25)
        ax.plot(tasks, mean, marker=".", label=row[label], **style)
    if floor is not None:
        ax.axhline(floor, color="gray", ls=":", label="forgetting floor")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, ylim=ylim)
    ax.legend(fontsize=7, ncol=2 if len(curves) > 10 else 1)
    return save_figure(fig, path)


def plot_metric_bars(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    panels: Mapping[str, Sequence[str]],
    labels: Sequence[str] | None = None,
    ylabel: str,
    percent: bool = True,
) -> Path:
    """Grouped bars of metrics per method, mean ± 95% CI: a PNG with a panel per entry.

    ``panels`` maps each panel's title to the metrics it shows, the same number in every
    panel: a group of bars per row (method) and a bar per metric with its 95% CI as the
    error bar (from the rows' ``"mean"`` and ``"ci95"``; a missing mean leaves no bar, a
    missing CI no error bar). The i-th metric of every panel has one colour and the
    legend entry ``labels[i]`` (default: the first panel's metric names), so panels can
    show one quantity measured two ways side by side. ``percent`` shows fractions as
    percentages on a 0–100 axis (else 0–1).
    """
    names = list(panels.values())
    n = len(names[0]) if names else 0
    if not n or any(len(metric_names) != n for metric_names in names):
        _checks.fail("panels", "non-empty lists of metrics, one length in every panel", panels)
    labels = list(names[0] if labels is None else labels)
    if len(labels) != n:
        _checks.fail("labels", f"{n} names (one per metric of a panel)", labels)
    scale, width = (100.0 if percent else 1.0), 0.81 / n
    fig, axes = figure(1, len(names), figsize=(6 * len(names), 4.5), sharey=True, squeeze=False)
    x = np.arange(len(rows))
    for ax, (title, metric_names) in zip(axes[0], panels.items(), strict=True):
        for i, (name, legend) in enumerate(zip(metric_names, labels, strict=True)):
            stats = [row["metrics"].get(name) or {} for row in rows]
            mean = [np.nan if s.get("mean") is None else scale * s["mean"] for s in stats]
            err = [0.0 if s.get("ci95") is None else scale * s["ci95"] for s in stats]
            offset = (i - (n - 1) / 2) * width
            ax.bar(x + offset, mean, width, yerr=err, label=legend, capsize=2)
        ax.set_xticks(x, [row["method"] for row in rows], rotation=35, ha="right")
        ax.set(title=title, ylim=(0, scale))
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_ylabel(ylabel)
    handles, legends = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, legends, loc="lower center", ncol=n, bbox_to_anchor=(0.5, -0.2))
    return save_figure(fig, path)


def metric_grid(
    rows: Sequence[Mapping[str, Any]],
    metric: str,
    axes: Mapping[str, Sequence[Any]],
    place: Callable[[Mapping[str, Any]], Mapping[str, Any]],
) -> np.ndarray:
    """Each row's mean ``metric`` at its place in a grid of ``axes``, e.g. for :func:`heatmap`.

    Args:
      rows: results.json rows.
      metric: a key of each row's ``"metrics"``.
      axes: ``{axis: its values in order}``; the grid has shape ``[len(values) ...]``.
      place: ``row -> {axis: value}``, where the row stands on every axis.

    Returns:
      float64 array of the means; NaN where no row stands or the mean is null.

    >>> rows = [{"method": "relu+sgd", "metrics": {"acc": {"mean": 0.5}}}]
    >>> axes = {"activation": ["relu", "tanh"], "optimizer": ["sgd"]}
    >>> at = lambda row: dict(zip(axes, row["method"].split("+")))
    >>> metric_grid(rows, "acc", axes, at).tolist()
    [[0.5], [nan]]
    """
    grid = np.full([len(values) for values in axes.values()], np.nan)
    for row in rows:
        mean, at = row["metrics"][metric]["mean"], place(row)
        grid[tuple(values.index(at[axis]) for axis, values in axes.items())] = (
            np.nan if mean is None else mean
        )
    return grid


def heatmap(
    grid: Any,
    path: str | os.PathLike,
    *,
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    title: str,
    xlabel: str | None = None,
    colorbar_label: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "viridis",
    percent: bool = True,
    digits: int = 1,
) -> Path:
    """A ``[rows, columns]`` grid as a PNG heatmap, each finite cell's value printed in it.

    NaN cells (e.g. methods not run) stay blank. Colours run from ``vmin`` to ``vmax``
    (default: the smallest and largest finite values); values are printed as in
    :func:`markdown_table` (``percent``, ``digits``), in whichever of black and white has
    the higher contrast ratio with the cell's colour: black when its relative luminance
    exceeds √(1.05 · 0.05) − 0.05 ≈ 0.179 (WCAG 2.1, definitions of "contrast ratio" and
    "relative luminance"). Column labels longer than four characters are slanted; the
    figure grows with the grid.

    Raises:
      ValueError: a grid that is not 2-D, labels that do not match its shape, or no finite
        value when ``vmin`` or ``vmax`` is left to default.
    """
    grid = np.asarray(grid, dtype=np.float64)
    _checks.rank("grid", grid, 2)
    for name, labels, size in [
        ("row_labels", row_labels, grid.shape[0]),
        ("column_labels", column_labels, grid.shape[1]),
    ]:
        if len(labels) != size:
            _checks.fail(name, f"{size} labels, one per grid {name.split('_')[0]}", labels)
    finite = grid[np.isfinite(grid)]
    if not finite.size and (vmin is None or vmax is None):
        _checks.fail("grid", "finite somewhere when vmin or vmax is not given", grid)
    vmin = finite.min() if vmin is None else vmin
    vmax = finite.max() if vmax is None else vmax
    rows, columns = grid.shape
    fig, ax = figure(figsize=(1.2 * columns + 2, 0.45 * rows + 1.5))
    im = ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    slant = {"rotation": 30, "ha": "right"} if max(map(len, column_labels)) > 4 else {}
    ax.set_xticks(range(columns), column_labels, **slant)
    ax.set_yticks(range(rows), row_labels)
    scale = 100.0 if percent else 1.0
    for (y, x), v in np.ndenumerate(grid):
        if np.isfinite(v):
            rgb = np.asarray(im.cmap(im.norm(v)))[:3]
            linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
            color = "k" if linear @ [0.2126, 0.7152, 0.0722] > 0.179 else "w"
            text = f"{v * scale:.{digits}f}"
            ax.text(x, y, text, ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(im, ax=ax, label=colorbar_label)
    ax.set(xlabel=xlabel, title=title)
    return save_figure(fig, path)


def diverged_seeds(results: Any) -> dict[int, int]:
    """``{seed: step}`` of the seeds of :class:`jaxcl.engine.Results` whose loss diverged."""
    return {int(s): int(results.diverged_at[s]) for s in np.flatnonzero(results.diverged)}


def result_row(method: str, results: Any, **extra: Any) -> dict[str, Any]:
    """A results.json row from :class:`jaxcl.engine.Results`.

    Metrics (per seed, then mean and 95% CI) are those of :func:`jaxcl.metrics.summarize`:
    ``pooled_acc`` (sample-pooled accuracy over every task's test set after the last task:
    the full test set for a class split), ``acc`` (GEM's ACC, the task mean of the last
    row), ``bwt``, ``fwt`` (against the untrained model), ``forgetting`` (Chaudhry),
    ``learning_acc`` (mean of R[j, j]) and ``avg_incremental_acc``. Diverged seeds count
    as NaN, are excluded from the statistics, and are listed
    with the step where their loss stopped being finite.
    """
    per_seed = metrics.summarize(
        results.accuracy,
        b=results.init_accuracy,
        correct=results.correct,
        count=results.count[:, None],
    )
    per_seed = {k: metrics.nan_where_diverged(v, results.diverged) for k, v in per_seed.items()}
    curve = metrics.nan_where_diverged(results.pooled_accuracy, results.diverged)
    row: dict[str, Any] = {"method": method, "metrics": metrics.summary_table(per_seed)}
    row["pooled_acc_after_task"] = [[finite_or_none(v) for v in seed] for seed in curve]
    row["diverged_seeds"] = diverged_seeds(results)
    row.update(extra)
    return row
