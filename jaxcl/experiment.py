"""An experiment as data: methods, how one runs, its table and its findings.

An :class:`Experiment` describes a benchmark table; :func:`jaxcl.cli.run_experiment`
runs it (flags, the method loop with checkpoints, rows, ``results.json``, ``table.md``,
plots) and :func:`jaxcl.cli.main` runs it as a command. Everything that differs between
experiments is a field of the description, data or a small function; everything they
share is in the library.

How an experiment file is written (``experiments/<name>.py``; a user's own benchmark is
the same, see the README's "Your own benchmark"):

1. **Methods.** ``METHODS = {name: spec}`` in the table's order, a spec being the method's
   configuration (a frozen dataclass: it is the checkpoint's fingerprint and the row's
   ``"config"``) or whatever ``configure(spec, args)`` makes one from under the run's
   flags (``--quick`` sizes, ``--dataset``, ...). ``default_methods`` is the subset run
   without ``--methods`` (``quick_methods`` under ``--quick``); ``method_sets`` adds a
   flag per named subset (``{"grid": names}`` gives ``--grid``).
2. **The protocol.** ``build(config, args) -> engine.Run``: data, scenario, model,
   optimizer, learner and :func:`jaxcl.engine.make_run` (pass it
   ``chunk_size=cli.chunk_size(args, num_tasks)``, the checkpoint interval). The library
   runs every seed of the method, resumably, and makes the row. Per-method seed counts:
   ``seeds(config, args)``; a measurement of the trained learners (an evaluation the
   engine does not do, e.g. :func:`jaxcl.evaluation.training_accuracy`):
   ``final_diagnostics(run, config)``. Methods that are not engine runs at all (a toy
   computed in NumPy) give ``execute`` instead of ``build``; a row's ``seconds`` is the
   time until it is yielded.
2b. **Sweeps.** ``traced = {method: names of its config's fields that are traced}``:
   methods whose configs agree on every other field (the structural ones) run as the cells
   of one compiled program (:func:`jaxcl.engine.grid`: seeds × cells on one vmapped axis,
   checkpointed and resumable as seeds are), built by ``build_grid(configs, args) ->
   engine.Run`` from ``{method: config}``, whose grid's cells are those methods in that
   order. A traced method always runs as a cell, also alone; other methods run ``build``.
   ``--help`` says which hyperparameters are traced.
3. **Rows.** A row holds the engine's metrics (``report.result_row``: ``pooled_acc``,
   ``acc``, ``bwt``, ``fwt``, ``forgetting``, ...; ``engine_metrics=False`` leaves them
   out, for runs that evaluate only the current task), ``config`` and ``seconds``; the
   learner diagnostics named in ``diagnostics`` (``results.diagnostics``) after the last
   task as metrics and after every task as ``diagnostics_after_task``; plus
   ``row_metrics(outcome, config, args)`` (more per-seed metrics, e.g. from
   ``results.diagnostics``) and ``row_fields(outcome, config, args)`` (more entries, e.g.
   curves as arrays, NaN written as null; an entry it returns replaces the row's own,
   ``"config"`` included). Diverged seeds are NaN in the engine's metrics; do the same in
   yours.
4. **Flags.** ``flags(parser)`` adds the experiment's own flags (checked by the
   ``argparse`` types of :mod:`jaxcl.cli`; the fields of a config dataclass made by
   :func:`jaxcl.cli.flag_field` are flags by :func:`jaxcl.cli.add_field_flags`, their
   values read back by :func:`jaxcl.cli.field_flag_values`); ``derive(args)`` returns
   values computed from the flags once (e.g. a task count that depends on ``--quick``),
   set on ``args`` for every later hook; ``run_config(args)`` is results.json's
   ``"config"``, everything shared by the rows that changes results (rows of another run
   configuration are never merged; :func:`flags_run_config` names the flags it holds).
5. **Table and findings.** ``metrics`` are the table's columns, ``paper`` the published
   numbers beside them (``{method: {metric: fraction}}``), ``header(rows, args)`` the
   text above (:func:`quick_note` marks a smoke run); ``table(rows, args)`` replaces the
   standard table (several tables, numbers that depend on a flag). ``findings(rows,
   args)`` is the text below: the paper's claims checked on the rows, e.g. with
   :func:`comparisons` (Welch 95% intervals of "A beats B"), :func:`differences` and
   :func:`difference_table` (several metrics per pair) or :func:`checklist`.
   ``extras(previous, args)`` adds top-level results.json entries that are not rows and
   their text (:func:`seed_timing_extras`: a ``--timing`` of vmapped against sequential
   seeds).
6. **Plots.** ``accuracy_after_each_task.png`` (every row's accuracy on all test images
   after each task, with ``forgetting_floor``) unless ``curves=False``; ``plots(rows, args,
   out_dir)`` draws the experiment's own.
7. End the file with ``if __name__ == "__main__": cli.main(EXPERIMENT)``; tests call
   ``cli.run_experiment(EXPERIMENT, argv)``, which returns the rows.

Every hook's ``args`` is the parsed ``argparse.Namespace``: the common flags (``seeds``,
``out``, ``quick``, ``methods``, ``data_dir``, ``checkpoint_every``, ``seed_chunk``,
``no_checkpoint``), the experiment's own and the derived values.

Where the scripts' particular needs go: SDM's fewer seeds for 10K-neuron rows, ``seeds``;
its dead units after each task, ``diagnostics``; its ``--dataset``, ``flags`` +
``configure`` + a ``table`` with that dataset's paper numbers; CLASSP's evaluation on the
training sets, ``final_diagnostics``; its two tables, ``table``; DST's grid cells, one
program per task count, ``traced`` + ``build_grid`` (and ``quick_methods``); plasticity's
current-task-only evaluation, ``engine_metrics=False``; its timing of vmapped against
sequential seeds, ``extras`` from :func:`seed_timing_extras`; its ρ/r/α sweep, another
experiment (``dataclasses.replace`` of it) whose methods are ``traced``; Hard ASH's
``--grid``, ``method_sets`` and one program per optimizer family (``traced``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxcl import _checks, engine, execution, metrics, report

__all__ = [
    "Difference",
    "Experiment",
    "checklist",
    "comparisons",
    "config_record",
    "difference",
    "difference_table",
    "differences",
    "flags_run_config",
    "quick_note",
    "seed_means",
    "seed_timing",
    "seed_timing_extras",
    "standard_run_config",
]

Rows = Sequence[dict[str, Any]]
Args = argparse.Namespace
Execute = Callable[[list[tuple[str, Any]], Args], Iterable[tuple[str, Any]]]
Extras = Callable[[Mapping[str, Any], Args], tuple[Mapping[str, Any], str]]


def config_record(config: Any) -> dict[str, Any] | None:
    """A method's configuration as a dict (a dataclass's fields, a mapping's items), as
    results.json and checkpoint fingerprints hold it; None for anything else."""
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    return dict(config) if isinstance(config, Mapping) else None


def standard_run_config(args: argparse.Namespace) -> dict[str, Any]:
    """The run-level configuration of most experiments: the seed count and ``--quick``."""
    return {"seeds": args.seeds, "quick": args.quick}


def flags_run_config(*names: str) -> Callable[[Args], dict[str, Any]]:
    """A ``run_config``: :func:`standard_run_config`, then the flags ``names`` (``args.<name>``,
    derived values included), in that order.

    >>> flags_run_config("dataset")(argparse.Namespace(seeds=3, quick=False, dataset="mnist"))
    {'seeds': 3, 'quick': False, 'dataset': 'mnist'}
    """
    return lambda args: {
        **standard_run_config(args),
        **{name: getattr(args, name) for name in names},
    }


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One benchmark table, run by :func:`jaxcl.cli.run_experiment` (module docstring).

    Attributes:
      name: results.json's ``"experiment"``; the default ``--out`` is ``results/<name>``.
      description: one line, the command's ``--help``.
      methods: ``{name: spec}``, the table's rows in order (names without commas).
      build: ``(config, args) -> engine.Run``, one method's compiled run.
      execute: instead of ``build``: ``(methods, args)`` with ``methods`` the selected
        ``(name, config)`` pairs, yielding ``(name, outcome)`` as each finishes; an
        outcome is :class:`jaxcl.engine.Results` or anything ``row_metrics`` reads.
      traced: ``{method: field names}``, the fields of the method's config that are traced
        hyperparameters (module docstring, Sweeps); methods not named have none.
      build_grid: ``({method: config}, args) -> engine.Run``, the grid run of methods that
        differ only in their traced fields (cells named by the methods, in order).
      configure: ``(spec, args) -> config``; None: the spec is the config.
      default_methods: the methods run without ``--methods``; None: all.
      quick_methods: the methods run with ``--quick`` and without ``--methods``; None:
        ``default_methods``.
      method_sets: ``{set name: method names}``, each run by the flag ``--<set name>``.
      flags: ``parser -> None``, adds the experiment's flags.
      derive: ``args -> {name: value}``, values computed from the flags, set on ``args``.
      run_config: ``args -> results.json's "config"``.
      seeds: ``(config, args) -> int``, a method's seed count; None: ``--seeds``.
      final_diagnostics: ``(run, config) -> execution.FinalDiagnostics`` of a method.
      engine_metrics: rows hold the engine's metrics (:func:`jaxcl.report.result_row`).
      diagnostics: names of the learner's per-task scalar diagnostics the rows hold:
        each one's per-seed value after the last task as a metric, and all of them after
        every task as ``diagnostics_after_task`` (``{name: [S][T]}``). A name a method's
        learner does not report is left out of its row.
      row_metrics: ``(outcome, config, args) -> {metric: [S] per-seed values}``.
      row_fields: ``(outcome, config, args) -> {key: value}``, more row entries, made
        JSON-ready (:func:`jaxcl.io.json_ready`: arrays as lists, NaN as null).
      metrics: the table's columns, also printed as each row finishes.
      paper: ``{method: {metric: fraction}}``, published numbers shown beside ours.
      header: ``(rows, args) -> str``, the text above the table.
      table: ``(rows, args) -> str``, replaces the standard table of ``metrics``.
      findings: ``(rows, args) -> str``, the text below the table.
      extras: ``(previous payload, args) -> ({key: value}, text)``: top-level results.json
        entries beside the rows and their text, after the findings. ``previous`` is the
        earlier ``results.json`` of the same run configuration (``{"rows": [...]}`` when
        there is none), so a measurement not re-run can be kept.
      forgetting_floor: the accuracy of a model that knows only the last task, drawn in
        the accuracy plot.
      curves: write ``accuracy_after_each_task.png`` (rows need ``pooled_acc_after_task``).
      plots: ``(rows, args, out_dir) -> None``, the experiment's own plots.
      default_seeds: the default of ``--seeds``.
      checkpoints: take the checkpoint flags (resumable runs); False for runs of seconds.
      data: take ``--data-dir`` (a tfds data directory).
    """

    name: str
    description: str
    methods: Mapping[str, Any]
    build: Callable[[Any, Args], engine.Run] | None = None
    execute: Execute | None = None
    traced: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
    build_grid: Callable[[Mapping[str, Any], Args], engine.Run] | None = None
    configure: Callable[[Any, Args], Any] | None = None
    default_methods: Sequence[str] | None = None
    quick_methods: Sequence[str] | None = None
    method_sets: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
    flags: Callable[[argparse.ArgumentParser], None] | None = None
    derive: Callable[[Args], Mapping[str, Any]] | None = None
    run_config: Callable[[Args], Mapping[str, Any]] = standard_run_config
    seeds: Callable[[Any, Args], int] | None = None
    final_diagnostics: Callable[[engine.Run, Any], execution.FinalDiagnostics] | None = None
    engine_metrics: bool = True
    diagnostics: Sequence[str] = ()
    row_metrics: Callable[[Any, Any, Args], Mapping[str, Any]] | None = None
    row_fields: Callable[[Any, Any, Args], Mapping[str, Any]] | None = None
    metrics: Sequence[str] = ("pooled_acc", "acc", "bwt", "forgetting")
    paper: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)
    header: Callable[[Rows, Args], str] | None = None
    table: Callable[[Rows, Args], str] | None = None
    findings: Callable[[Rows, Args], str] | None = None
    extras: Extras | None = None
    forgetting_floor: float | None = None
    curves: bool = True
    plots: Callable[[Rows, Args, Path], None] | None = None
    default_seeds: int = 5
    checkpoints: bool = True
    data: bool = True

    def __post_init__(self) -> None:
        if not self.methods:
            _checks.fail("methods", "a non-empty mapping of names to specs", self.methods)
        for name in self.methods:
            if not isinstance(name, str) or not name or "," in name:
                _checks.fail("each method name", "a non-empty string without commas", name)
        builds = self.build is not None or self.build_grid is not None
        if builds == (self.execute is not None):
            given = "both" if builds else "neither"
            _checks.fail("build (or build_grid) or execute", "given (exactly one)", given)
        for name, fields in self.traced.items():
            if isinstance(fields, str) or not fields or not all(isinstance(f, str) for f in fields):
                _checks.fail(f"traced[{name!r}]", "a non-empty sequence of field names", fields)
        if self.execute is None and self.traced and self.build_grid is None:
            _checks.fail("build_grid", "given for the methods with traced fields", None)
        if self.execute is None and len(self.traced) < len(self.methods) and self.build is None:
            _checks.fail("build", "given for the methods without traced fields", None)
        named = {
            "default_methods": self.default_methods or (),
            "quick_methods": self.quick_methods or (),
            "paper": self.paper,
            "traced": self.traced,
            **{f"method_sets[{key!r}]": names for key, names in self.method_sets.items()},
        }
        for field, names in named.items():
            for name in names:
                _checks.one_of(f"each name of {field}", name, self.methods)
        _checks.positive_int("default_seeds", self.default_seeds)


def quick_note(args: argparse.Namespace) -> str:
    """``" QUICK smoke configuration."`` under ``--quick``, else ``""`` (for headers)."""
    return " QUICK smoke configuration." if args.quick else ""


class Difference(NamedTuple):
    """``mean(a) − mean(b)`` over seeds and its Welch 95% half-width.

    See :func:`jaxcl.metrics.difference_ci95`: the difference is significant at 5% when
    ``|mean| > half``; with fewer than two finite seeds on a side ``half`` is NaN and
    nothing is significant.
    """

    mean: float
    half: float

    @property
    def significant(self) -> bool:
        return bool(math.isfinite(self.half) and abs(self.mean) > self.half)

    @property
    def verdict(self) -> str:
        """``"higher"`` or ``"lower"`` when significant, else ``"n.s."``."""
        if not self.significant:
            return "n.s."
        return "higher" if self.mean > 0 else "lower"

    def points(self, digits: int = 1) -> str:
        """``"+1.2 ± 0.3"``: the difference of two fractions in percentage points, to
        ``digits`` decimals."""
        return f"{100 * self.mean:+.{digits}f} ± {100 * self.half:.{digits}f}"


def difference(rows: Rows, a: str, b: str, metric: str) -> Difference | None:
    """Row ``a`` minus row ``b`` on ``metric`` (non-finite seeds left out), Welch 95%.

    Returns None when either row is missing (a ``--methods`` subset).
    """
    by_method = {row["method"]: row for row in rows}
    if a not in by_method or b not in by_method:
        return None
    values = [report.per_seed(by_method[m])[metric] for m in (a, b)]
    return Difference(*metrics.difference_ci95(*values))


def seed_means(rows: Rows, metric: str) -> dict[str, float]:
    """``{method: mean of its finite seeds' metric}`` of the rows that have ``metric`` (NaN
    when no seed is finite), e.g. to rank rows by their mean.

    >>> seed_means([{"method": "a", "metrics": {"acc": {"per_seed": [0.5, None, 0.7]}}}], "acc")
    {'a': 0.6}
    """
    return {
        row["method"]: float(metrics.nanmean(report.per_seed(row)[metric]))
        for row in rows
        if metric in row["metrics"]
    }


def differences(
    rows: Rows, pairs: Mapping[str, tuple[str, str]], metrics: Sequence[str]
) -> dict[str, dict[str, Difference]]:
    """``{label: {metric: row a − row b}}`` (:func:`difference`) for each labelled pair
    ``(a, b)`` of ``pairs`` whose two rows exist, in the order of ``pairs``.

    A pair with a missing row (a ``--methods`` subset) is left out.
    """
    out = {}
    for label, (a, b) in pairs.items():
        diffs = {metric: difference(rows, a, b, metric) for metric in metrics}
        if all(diff is not None for diff in diffs.values()):
            out[label] = diffs
    return out


def difference_table(
    diffs: Mapping[str, Mapping[str, Difference]], *, title: str, label: str = "pair"
) -> str:
    """:func:`differences` as a markdown table after a line ``title``: a row per pair
    (its label in the column ``label``), a column ``Δ <metric>`` per metric, each cell the
    difference in points with its Welch 95% half-width (``+1.2 ± 0.3``); ``""`` for none.

    >>> print(difference_table({"b − a": {"acc": Difference(0.012, 0.003)}}, title="Gains"))
    <BLANKLINE>
    Gains:
    <BLANKLINE>
    | pair | Δ acc |
    |---|---|
    | b − a | +1.2 ± 0.3 |
    <BLANKLINE>
    """
    if not diffs:
        return ""
    metrics_ = list(next(iter(diffs.values())))
    text = f"\n{title}:\n\n| {label} | " + " | ".join(f"Δ {m}" for m in metrics_) + " |\n"
    text += "|---" * (len(metrics_) + 1) + "|\n"
    for name, row in diffs.items():
        text += f"| {name} | " + " | ".join(row[m].points() for m in metrics_) + " |\n"
    return text


def comparisons(rows: Rows, pairs: Iterable[tuple[str, str]], metric: str, *, title: str) -> str:
    """The verdict on ``a − b`` for each pair whose rows exist, as a titled list.

    Each line reads ``"- a − b: +1.2 ± 0.3 points (higher)"`` (``higher``/``lower`` when
    the Welch 95% interval excludes 0, else ``n.s.``). Returns ``""`` when no pair has
    both rows, so a ``--methods`` subset writes no empty section.
    """
    lines = []
    for a, b in pairs:
        diff = difference(rows, a, b, metric)
        if diff is not None:
            lines.append(f"- {a} − {b}: {diff.points()} points ({diff.verdict})\n")
    return f"\n{title}:\n\n" + "".join(lines) if lines else ""


def checklist(claims: Mapping[str, bool]) -> str:
    """A ``"- claim: yes"`` (or ``NO``) line per claim after a blank line; ``""`` for none."""
    lines = "".join(f"- {claim}: {'yes' if ok else 'NO'}\n" for claim, ok in claims.items())
    return "\n" + lines if lines else ""


def seed_timing(
    run: engine.Run, seeds: int, curves: Callable[[engine.Results], np.ndarray]
) -> dict[str, float]:
    """Wall time of seeds ``0..seeds−1`` in one vmapped program vs one seed at a time.

    Each way is compiled first (one program per seed count) and timed apart from its run
    (``vmapped_compile_s``, ``vmapped_run_s``, ``seed_by_seed_compile_s``,
    ``seed_by_seed_run_s``, in seconds to 0.01); ``speedup`` is the ratio of the run times
    and ``max_abs_curve_difference`` the largest difference between the two ways'
    per-seed ``curves(results)`` (``[S, ...]``; 0 when vmapping changes nothing).
    """
    seconds, measured = {}, {}
    for mode, groups in [("vmapped", [list(range(seeds))]), ("seed_by_seed", None)]:
        groups = groups or [[s] for s in range(seeds)]
        start = time.perf_counter()
        state, _ = run.init(engine.seed_keys(groups[0]))
        run.compiled_chunk(state)
        seconds[f"{mode}_compile_s"] = time.perf_counter() - start
        start = time.perf_counter()
        measured[mode] = np.concatenate([curves(run(engine.seed_keys(g))) for g in groups])
        seconds[f"{mode}_run_s"] = time.perf_counter() - start
    timing = {key: round(value, 2) for key, value in seconds.items()}
    timing["speedup"] = round(seconds["seed_by_seed_run_s"] / seconds["vmapped_run_s"], 2)
    difference = np.abs(measured["vmapped"] - measured["seed_by_seed"]).max()
    timing["max_abs_curve_difference"] = float(difference)
    return timing


def seed_timing_extras(
    timed: Callable[[Args], tuple[Any, engine.Run]],
    *,
    curves: Callable[[engine.Results], np.ndarray],
    describe: str,
) -> Extras:
    """An :class:`Experiment`'s ``extras`` for a ``--timing`` flag: :func:`seed_timing`.

    Under ``args.timing`` (the experiment's ``flags`` add ``--timing``), ``timed(args)``
    gives a configuration (a dataclass or a mapping) and its compiled run, whose seeds
    ``0..--seeds−1`` are timed in one vmapped program against one at a time, comparing
    ``curves(results)``; results.json's ``"timing"`` is ``{"config": ..., "seeds": S,
    **seed_timing(...)}``. Without ``--timing`` the measurement of the previous
    results.json (same run configuration) is kept, or ``"timing"`` is null. The text is
    one sentence on it, ``"Wall time of <description> and <S> seeds: ..."``, the
    description being ``describe.format(**config)`` of the saved configuration's fields
    (e.g. ``"{stream}/{optimizer}@{learning_rate:g} with {num_tasks} tasks"`` gives
    ``"permuted/sgd@0.01 with 100 tasks"``).
    """

    def extras(previous: Mapping[str, Any], args: Args) -> tuple[dict[str, Any], str]:
        t = previous.get("timing")
        if args.timing:
            config, run = timed(args)
            t = {"config": config_record(config), "seeds": args.seeds}
            t.update(seed_timing(run, args.seeds, curves))
        if t is None:
            return {"timing": None}, ""
        about = describe.format(**t["config"])
        return {"timing": t}, (
            f"\nWall time of {about} and {t['seeds']} seeds: one vmapped program "
            f"{t['vmapped_run_s']} s (+ {t['vmapped_compile_s']} s compile) vs seed "
            f"by seed {t['seed_by_seed_run_s']} s (+ {t['seed_by_seed_compile_s']} s "
            f"compile): {t['speedup']}× faster; largest per-seed curve difference "
            f"{t['max_abs_curve_difference']:.2g}.\n"
        )

    return extras
