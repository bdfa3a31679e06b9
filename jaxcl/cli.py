"""The command line of every experiment: :func:`run_experiment` and :func:`main`.

:func:`run_experiment` runs a :class:`jaxcl.experiment.Experiment`: it parses the flags,
runs the selected methods (each method's seeds checkpointed and resumable), prints a line
per method, merges the rows with those already in ``--out`` and writes ``results.json``,
``table.md`` and the plots. :func:`main` does the same as a command.

Every experiment accepts ``--seeds N``, ``--out DIR``, ``--quick``, ``--methods
NAME[,NAME...]`` (``--help`` lists the method names), ``--debug`` and, when it reads
datasets, ``--data-dir``. Long runs also take ``--checkpoint-every N`` (tasks between
checkpoints), ``--seed-chunk N`` and ``--no-checkpoint``: re-running the same command with
the same ``--out`` resumes, and methods already finished are not run again (see
:mod:`jaxcl.execution`). A method's checkpoint fingerprint is its whole configuration
(optimizer and model hyperparameters, data sizes) and the library version, so a changed
hyperparameter is refused, never mixed.

Several processes. ``--coordinator HOST:PORT --num-processes N --process-id I`` make the
command one of N processes, usually one per host, each running the same command with its
own id (``--distributed`` takes the three from a cluster environment that JAX detects):
:func:`join_processes` joins them before any JAX computation, the seeds are sharded over
the devices of all of them, each checkpoints its seeds under the shared ``--out``
(:mod:`jaxcl.execution`), and process 0 alone prints and writes ``results.json``,
``table.md`` and the plots. Rerunning every process's command resumes. ``--out`` is not
locked then: the processes share it.

Sweeps. Methods that differ only in the fields an experiment declares ``traced``
(:mod:`jaxcl.experiment`) run as the cells of one compiled grid program (:func:`programs`):
rows ``seed * cells + cell`` checkpointed under ``--out/checkpoints`` (:func:`grid_name`,
one directory per selection of cells), whose fingerprint holds every cell's values;
``--help`` names the traced hyperparameters, and a line per grid says how many programs
it compiled.

Flags of a configuration. A dataclass field made by :func:`flag_field` is also a flag
with the field's default: :func:`add_field_flags` adds those flags to a parser and
:func:`field_flag_values` collects their values back as the dataclass's keyword arguments.

Errors. Every flag is checked while parsing, before any data is loaded or compiled,
``--out`` included (a writable directory, created if needed). :func:`main` runs an
experiment as a command: an error prints one line and exits with status 2 for a command
line that cannot run (:class:`UsageError`) and 1 for a failure while running; ``--debug``
or ``JAXCL_DEBUG=1`` also prints the traceback.

Results of several commands. ``--out`` collects rows: a run of ``--methods a`` into a
directory whose ``results.json`` holds rows ``a`` and ``b`` replaces row ``a``, keeps row
``b``, and rebuilds ``table.md`` and the plots from both (:func:`previous_results`). Rows
are merged only when they come from the same experiment, the same run-level configuration
(``--seeds``, ``--quick``, dataset, ...) and the same library version; otherwise a run
that would keep old rows is refused before it starts (re-run those methods too, use
another ``--out``, or delete the old ``results.json``). When every old row is re-run, the
results are written fresh.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import dataclasses
import hashlib
import json
import math
import os
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

import jaxcl
from jaxcl import _checks, compile_cache, execution, metrics, processes, report
from jaxcl.engine import GridResults, Results, Run
from jaxcl.experiment import Experiment, config_record
from jaxcl.io import json_ready

__all__ = [
    "DEBUG_ENV",
    "ExperimentParser",
    "UsageError",
    "add_field_flags",
    "check_processes",
    "chosen_methods",
    "chunk_size",
    "count_or_all",
    "experiment_args",
    "experiment_parser",
    "experiment_text",
    "field_flag_values",
    "finite_float",
    "flag_field",
    "grid_name",
    "host_port",
    "int_between",
    "join_processes",
    "main",
    "method_names",
    "method_row",
    "multi_process",
    "non_negative_float",
    "non_negative_int",
    "positive_int",
    "previous_results",
    "programs",
    "run_experiment",
    "run_method",
    "selected_methods",
    "structural_config",
    "writable_directory",
]

DEBUG_ENV = "JAXCL_DEBUG"
# The resources a command run by :func:`main` holds until it ends (the lock on --out).
_COMMAND_SCOPE: contextvars.ContextVar[contextlib.ExitStack | None] = contextvars.ContextVar(
    "jaxcl_command_scope", default=None
)


class UsageError(ValueError):
    """A command line that cannot run (a bad flag value, an unusable ``--out``): status 2."""


class ExperimentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that raises :class:`UsageError` and checks ``--out`` once parsed."""

    def error(self, message: str) -> None:
        # argparse says "argument --seeds: must be ..."; the project's form is "--seeds must be".
        match = re.fullmatch(r"argument (\S+): (must .*)", message, flags=re.DOTALL)
        raise UsageError(" ".join(match.groups()) if match else message)

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        check_processes(parsed)
        if getattr(parsed, "out", None) is not None:  # last: every other flag is valid
            parsed.out = writable_directory(parsed.out)
            scope = _COMMAND_SCOPE.get()
            # Run as a command: --out is ours until it exits (shared by a multi-process run).
            if scope is not None and not multi_process(parsed):
                scope.enter_context(execution.lock_directory(parsed.out))
        return parsed


def _int_in(text: str, minimum: int, maximum: float, allowed: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not minimum <= value <= maximum:
        raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """``argparse`` type: an integer >= 1."""
    return _int_in(text, 1, math.inf, "a positive integer")


def non_negative_int(text: str) -> int:
    """``argparse`` type: an integer >= 0."""
    return _int_in(text, 0, math.inf, "an integer >= 0")


def count_or_all(text: str) -> int | None:
    """``argparse`` type of a "first N examples" flag: an integer >= 1, or 0 for all (None)."""
    return _int_in(text, 0, math.inf, "an integer >= 0 (0: all)") or None


def int_between(minimum: int, maximum: int) -> Callable[[str], int]:
    """``argparse`` type: an integer in ``[minimum, maximum]``."""
    return lambda text: _int_in(text, minimum, maximum, f"an integer in [{minimum}, {maximum}]")


def finite_float(text: str) -> float:
    """``argparse`` type: a finite number (no nan, no inf)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """``argparse`` type: a finite number >= 0."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def host_port(text: str) -> str:
    """``argparse`` type: ``HOST:PORT``, a port in [1, 65535] (an IPv6 host in brackets)."""
    host, _, port = text.rpartition(":")
    bare_ipv6 = ":" in host and not (host.startswith("[") and host.endswith("]"))
    if not host or bare_ipv6 or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(
            f"must be HOST:PORT with a port in [1, 65535], got {text!r}"
        )
    return text


def method_names(methods: Sequence[str]) -> Callable[[str], list[str]]:
    """``argparse`` type of ``--methods``: comma-separated names among ``methods``."""

    def parse(text: str) -> list[str]:
        wanted = [m.strip() for m in text.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in methods]
        if unknown or not wanted:
            raise argparse.ArgumentTypeError(
                f"must be comma-separated method names, got {', '.join(unknown) or repr(text)}; "
                f"valid names: {', '.join(methods)}"
            )
        return wanted

    return parse


_FLAG = "jaxcl.cli.flag_field"  # the metadata key of a flag field


def flag_field(
    default: Any,
    parse: Callable[[str], Any] | None = None,
    help: str | None = None,
    *,
    flag: str | None = None,
    choices: Sequence[Any] | None = None,
) -> Any:
    """A field of a configuration dataclass that is also a command-line flag defaulting to
    the field's ``default``: :func:`add_field_flags` adds the flags, :func:`field_flag_values`
    reads their values back, so a field's default, type and help are written once.

    The flag is ``--<field name>`` with dashes for underscores unless ``flag`` spells it;
    ``parse`` is its ``argparse`` type (one of this module's checked types, e.g.
    :func:`positive_int`), ``choices`` its allowed values, ``help`` its ``--help`` text.
    A field whose default is False is a switch (``store_true``).

    >>> @dataclasses.dataclass(frozen=True)
    ... class Config:
    ...     stream: str  # not a flag
    ...     width: int = flag_field(100, positive_int, "units per hidden layer")
    ...     epochs_per_task: int = flag_field(1, positive_int, flag="--epochs")
    ...     head: str = flag_field("pair", choices=("pair", "shared"))
    ...     shuffle: bool = flag_field(False, help="reshuffle every epoch")
    >>> parser = argparse.ArgumentParser()
    >>> add_field_flags(parser, Config)
    >>> args = parser.parse_args(["--epochs", "3", "--shuffle"])
    >>> field_flag_values(args, Config)
    {'width': 100, 'epochs_per_task': 3, 'head': 'pair', 'shuffle': True}
    >>> Config("permuted", **field_flag_values(args, Config))
    Config(stream='permuted', width=100, epochs_per_task=3, head='pair', shuffle=True)
    """
    if default is False and (parse is not None or choices is not None):
        _checks.fail("parse and choices of a switch (default False)", "None", (parse, choices))
    spec = {"parse": parse, "help": help, "flag": flag, "choices": choices}
    return dataclasses.field(default=default, metadata={_FLAG: spec})


def _flag_fields(config_type: type) -> list[dataclasses.Field]:
    """The fields of the dataclass ``config_type`` made by :func:`flag_field`, in order."""
    if not (isinstance(config_type, type) and dataclasses.is_dataclass(config_type)):
        _checks.fail("config_type", "a dataclass", config_type)
    return [field for field in dataclasses.fields(config_type) if _FLAG in field.metadata]


def add_field_flags(parser: argparse.ArgumentParser, config_type: type) -> None:
    """Adds to ``parser`` the flag of each :func:`flag_field` of ``config_type``, in the
    order of the fields; each flag's value is ``args.<field name>``."""
    for field in _flag_fields(config_type):
        spec = field.metadata[_FLAG]
        name = spec["flag"] or "--" + field.name.replace("_", "-")
        if field.default is False:
            parser.add_argument(name, dest=field.name, action="store_true", help=spec["help"])
        else:
            parser.add_argument(
                name,
                dest=field.name,
                type=spec["parse"],
                default=field.default,
                choices=spec["choices"],
                help=spec["help"],
            )


def field_flag_values(args: argparse.Namespace, config_type: type) -> dict[str, Any]:
    """``{field name: value}`` of the flags of ``config_type``'s :func:`flag_field` fields
    (:func:`add_field_flags`), in the order of the fields: keyword arguments of the
    dataclass, e.g. the fields every method of an experiment shares."""
    return {field.name: getattr(args, field.name) for field in _flag_fields(config_type)}


def writable_directory(path: str | os.PathLike) -> Path:
    """``path`` as a directory a file can be created in (made if missing), else UsageError."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out must be a directory, got the file {str(path)!r}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):  # the only reliable test (root, read-only mounts)
            pass
    except OSError as err:
        raise UsageError(
            f"--out must be a writable directory, got {str(path)!r} ({err.strerror})"
        ) from err
    return path


def experiment_parser(
    description: str,
    *,
    methods: Sequence[str],
    default_seeds: int = 5,
    default_out: str = "results",
    resumable: bool = True,
) -> ExperimentParser:
    """A parser with the common flags, every value checked; add experiment flags to it.

    ``resumable=False`` leaves out the checkpoint flags (for runs that take seconds): the
    parsed flags then hold their defaults, no checkpoints.
    """
    parser = ExperimentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--seeds", type=positive_int, default=default_seeds, help="seeds, run vmapped"
    )
    parser.add_argument(
        "--out", default=default_out, help="results directory (rows of other methods are kept)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="seconds-long smoke configuration (used by tests)"
    )
    parser.add_argument(
        "--methods",
        type=method_names(methods),
        default=None,
        help="comma-separated subset of rows to run; valid: " + ", ".join(methods),
    )
    parser.add_argument(
        "--debug", action="store_true", help=f"show tracebacks on errors (also {DEBUG_ENV}=1)"
    )
    parser.add_argument(
        "--no-compile-cache",
        action="store_true",
        help=f"compile afresh: no persistent compilation cache (also {compile_cache.SWITCH_ENV}=0)",
    )
    processes_flags = parser.add_argument_group(
        "several processes (one per host, every one running the same command; README)"
    )
    processes_flags.add_argument(
        "--coordinator",
        type=host_port,
        default=None,
        metavar="HOST:PORT",
        help="address of process 0 and a free port there, the same for every process",
    )
    processes_flags.add_argument(
        "--num-processes",
        type=positive_int,
        default=None,
        metavar="N",
        help="how many processes run",
    )
    processes_flags.add_argument(
        "--process-id",
        type=non_negative_int,
        default=None,
        metavar="I",
        help="this process, 0 .. N-1 (process 0 writes the results)",
    )
    processes_flags.add_argument(
        "--distributed",
        action="store_true",
        help="take the three from the cluster's environment (Slurm, Open MPI, Cloud TPU)",
    )
    if not resumable:
        parser.set_defaults(checkpoint_every=0, seed_chunk=0, no_checkpoint=True)
        return parser
    parser.add_argument(
        "--checkpoint-every",
        type=non_negative_int,
        default=0,
        help="tasks per compiled chunk, checkpointed after each (0: a tenth of the stream)",
    )
    parser.add_argument(
        "--seed-chunk",
        type=non_negative_int,
        default=0,
        help="seeds run at once (0: as many as fit)",
    )
    parser.add_argument(
        "--no-checkpoint", action="store_true", help="do not save checkpoints under --out"
    )
    return parser


def check_processes(args: argparse.Namespace) -> None:
    """Refuses an incomplete or inconsistent ``--coordinator``, ``--num-processes``,
    ``--process-id``, ``--distributed`` (:class:`UsageError`)."""
    flags = {"--coordinator": args.coordinator, "--num-processes": args.num_processes}
    flags["--process-id"] = args.process_id
    given = [flag for flag, value in flags.items() if value is not None]
    if given and args.distributed:
        raise UsageError(
            "--distributed must be given alone (it reads the processes from the cluster's "
            f"environment), got it with {', '.join(given)}"
        )
    if 0 < len(given) < len(flags):
        raise UsageError(
            "--coordinator, --num-processes and --process-id must be given together, got "
            f"only {' and '.join(given)}"
        )
    if given and args.process_id >= args.num_processes:
        raise UsageError(
            f"--process-id must be an integer in [0, {args.num_processes - 1}] (--num-processes "
            f"{args.num_processes}), got {args.process_id}"
        )


def multi_process(args: argparse.Namespace) -> bool:
    """Whether the flags make this process one of several (``--distributed`` may)."""
    return args.distributed or (args.num_processes or 1) > 1


def join_processes(args: argparse.Namespace) -> None:
    """Joins the processes the flags name (``jax.distributed.initialize``); none: nothing.

    Call it before any JAX computation. Afterwards ``jax.devices()`` lists the devices of
    every process, over which :mod:`jaxcl.execution` shards the seeds.
    """
    if args.distributed:
        try:
            jax.distributed.initialize()
        except ValueError as err:  # JAX found no cluster environment to read them from
            raise UsageError(
                "--distributed must run where JAX detects the processes (Slurm, Open MPI, "
                f"Cloud TPU), got {str(err).rstrip('.')!r}; give --coordinator, --num-processes "
                "and --process-id"
            ) from err
    elif args.num_processes is not None:
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)


def chunk_size(args: argparse.Namespace, num_tasks: int) -> int:
    """Tasks per compiled chunk: ``--checkpoint-every``, else about a tenth of the stream."""
    return args.checkpoint_every or max(1, math.ceil(num_tasks / 10))


def run_method(
    run: Run,
    args: argparse.Namespace,
    method: str,
    config: Mapping[str, Any] | Any,
    *,
    seeds: int | None = None,
    final_diagnostics: execution.FinalDiagnostics | None = None,
) -> Results | GridResults:
    """Runs seeds ``0..seeds−1`` (default ``--seeds``) of one method, or of every cell of a
    grid run, checkpointed under ``--out``.

    ``config`` must hold everything that can change the method's results (optimizer and
    model hyperparameters, data sizes): with ``--quick`` and the library version it is the
    checkpoint's fingerprint, so resuming or reading back a finished method after any of
    them changed is refused (:class:`jaxcl.checkpoint.ConfigMismatchError`).

    ``final_diagnostics`` measures the trained learners (see
    :func:`jaxcl.execution.run_seeds`, which also adds a grid's cells to the fingerprint).
    """
    config = config_record(config)
    checkpoint_dir = None if args.no_checkpoint else Path(args.out) / "checkpoints" / method
    return execution.run_seeds(
        run,
        range(args.seeds if seeds is None else seeds),
        checkpoint_dir=checkpoint_dir,
        fingerprint={
            "method": method,
            "quick": args.quick,
            "jaxcl_version": jaxcl.__version__,
            **dict(config),
        },
        seed_chunk_size=args.seed_chunk or None,
        progress=sys.stderr.isatty(),
        final_diagnostics=final_diagnostics,
    )


def selected_methods(args: argparse.Namespace, methods: Sequence[str]) -> list[str]:
    """The methods named by ``--methods`` (all when absent), in the table's order."""
    if args.methods is None:
        return list(methods)
    return [m for m in methods if m in args.methods]


def previous_results(
    args: argparse.Namespace,
    *,
    experiment: str,
    config: Mapping[str, Any],
    methods: Sequence[str],
) -> dict[str, Any]:
    """The ``results.json`` already in ``--out`` whose rows this run keeps (module docstring).

    Call it before loading data; merge its ``"rows"`` with the new rows by
    :func:`jaxcl.report.merge_rows` and pass ``config`` to :func:`jaxcl.report.write_results`.

    Args:
      args: the parsed flags (``--out``).
      experiment: the experiment's name in ``results.json``.
      config: the run-level configuration shared by every row (no timings).
      methods: the methods this run writes rows for.

    Returns:
      The previous payload with only the rows of other methods, or ``{"rows": []}`` when
      there is nothing to keep.

    Raises:
      UsageError: ``--out`` holds another experiment's results, or rows that this run would
        keep but that come from another run-level configuration or library version.
    """
    path = Path(args.out) / "results.json"
    try:
        previous = report.read_results(path)
    except ValueError as err:
        raise UsageError(str(err)) from err
    if previous is None:
        return {"rows": []}
    if previous.get("experiment") != experiment:
        raise UsageError(
            f"--out {str(args.out)!r} holds results of the experiment "
            f"{previous.get('experiment')!r}, not {experiment!r}; use another --out"
        )
    kept = [row for row in previous["rows"] if row["method"] not in methods]
    there = {**previous.get("config", {}), "jaxcl_version": previous.get("jaxcl_version")}
    now = {**json_ready(config), "jaxcl_version": jaxcl.__version__}
    diff = [
        f"{key}: {there.get(key)!r} there, {now.get(key)!r} now"
        for key in sorted(there.keys() | now.keys())
        if there.get(key) != now.get(key)
    ]
    if not diff:
        return {**previous, "rows": kept}
    if not kept:  # every old row is re-run: fresh results, nothing of the old run kept
        return {"rows": []}
    raise UsageError(
        f"--out {str(args.out)!r} holds rows ({', '.join(r['method'] for r in kept)}) of "
        f"another run configuration ({'; '.join(diff)}); re-run those methods too, use "
        f"another --out, or delete {str(path)!r}"
    )


def experiment_args(
    experiment: Experiment, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """The parsed command line of ``experiment``, with its derived values.

    The common flags (:func:`experiment_parser`), ``--data-dir`` when the experiment reads
    datasets, a ``--<set>`` flag per method set and the experiment's own flags.
    """
    parser = experiment_parser(
        experiment.description,
        methods=list(experiment.methods),
        default_seeds=experiment.default_seeds,
        default_out=f"results/{experiment.name}",
        resumable=experiment.checkpoints,
    )
    for name, names in experiment.method_sets.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            action="store_true",
            help=f"run the {len(names)} methods of the {name} set",
        )
    if experiment.data:
        parser.add_argument("--data-dir", default=None, help="tfds data dir (else $TFDS_DATA_DIR)")
    if experiment.flags is not None:
        experiment.flags(parser)
    if experiment.traced:
        fields = sorted({field for names in experiment.traced.values() for field in names})
        parser.epilog = (
            f"Traced hyperparameters ({len(experiment.traced)} methods): {', '.join(fields)}. "
            "Methods that differ only in them run as the cells of one compiled program (seeds "
            "x cells on one vmapped axis, checkpointed like seeds); every other field of a "
            "method's configuration is structural: a program of its own."
        )
    args = parser.parse_args(argv)
    join_processes(args)
    if experiment.derive is not None:
        args = argparse.Namespace(**{**vars(args), **experiment.derive(args)})
    return args


def chosen_methods(experiment: Experiment, args: argparse.Namespace) -> list[str]:
    """The methods this run makes rows for, in the table's order.

    ``--methods``, else the union of the method sets whose flags are given, else
    ``quick_methods`` under ``--quick``, else ``default_methods``, else every method.
    """
    if args.methods is not None:
        return selected_methods(args, list(experiment.methods))
    if any(getattr(args, name) for name in experiment.method_sets):
        wanted = {
            method
            for name, names in experiment.method_sets.items()
            if getattr(args, name)
            for method in names
        }
    elif args.quick and experiment.quick_methods is not None:
        wanted = set(experiment.quick_methods)
    elif experiment.default_methods is not None:
        wanted = set(experiment.default_methods)
    else:
        wanted = set(experiment.methods)
    return [method for method in experiment.methods if method in wanted]


def _each_method(
    experiment: Experiment, name: str, config: Any, args: argparse.Namespace
) -> Results:
    """One method alone: its run built, its seeds run (checkpointed, resumable)."""
    run = experiment.build(config, args)
    final = None
    if experiment.final_diagnostics is not None:
        final = experiment.final_diagnostics(run, config)
    seeds = None if experiment.seeds is None else experiment.seeds(config, args)
    return run_method(run, args, name, config, seeds=seeds, final_diagnostics=final)


def structural_config(config: Any, traced: Sequence[str]) -> dict[str, Any]:
    """``config``'s record without its ``traced`` fields: what compiles a program of its own.

    Raises:
      ValueError: ``config`` is no dataclass or mapping, or lacks a traced field.
    """
    record = config_record(config)
    if record is None or not set(traced) <= set(record):
        allowed = f"a dataclass or mapping with the traced fields {sorted(traced)}"
        raise ValueError(f"a traced method's config must be {allowed}, got {config!r}")
    return {key: value for key, value in record.items() if key not in traced}


def programs(
    experiment: Experiment, configs: Sequence[tuple[str, Any]]
) -> list[list[tuple[str, Any]]]:
    """The chosen methods grouped into compiled programs, in the order of their first method.

    A method without traced fields is a program of its own; traced methods (``experiment
    .traced``) share one when they trace the same fields and agree on every other one.
    """
    groups: dict[Any, list[tuple[str, Any]]] = {}
    for name, config in configs:
        traced = tuple(experiment.traced.get(name, ()))
        key: Any = name
        if traced:
            structural = json_ready(structural_config(config, traced))
            key = (traced, json.dumps(structural, sort_keys=True, default=str))
        groups.setdefault(key, []).append((name, config))
    return list(groups.values())


def grid_name(methods: Sequence[str]) -> str:
    """The checkpoint directory (under ``--out/checkpoints``) of the grid of ``methods``:
    ``grid-<digest of the names>``, so another selection of cells starts afresh."""
    return "grid-" + hashlib.sha256(" ".join(methods).encode()).hexdigest()[:10]


def _grid_program(
    experiment: Experiment, methods: list[tuple[str, Any]], args: argparse.Namespace
) -> GridResults:
    """Methods that differ only in traced fields as the cells of one grid run."""
    names = [name for name, _ in methods]
    run = experiment.build_grid(dict(methods), args)
    if run.grid is None or list(run.grid.names) != names:
        got = None if run.grid is None else list(run.grid.names)
        raise ValueError(f"build_grid's run must have a grid of the cells {names}, got {got}")
    name, config = methods[0]
    traced = experiment.traced[name]
    final = None
    if experiment.final_diagnostics is not None:
        final = experiment.final_diagnostics(run, config)
    seeds = None if experiment.seeds is None else experiment.seeds(config, args)
    seeds = args.seeds if seeds is None else seeds
    fingerprint = {"traced": list(traced), **structural_config(config, traced)}
    results = run_method(
        run, args, grid_name(names), fingerprint, seeds=seeds, final_diagnostics=final
    )
    shown = ", ".join(names[:2]) + (", ..." if len(names) > 2 else "")
    if processes.is_main():
        print(
            f"{len(names)} cells ({shown}; traced: {', '.join(traced)}) x {seeds} seeds: rows "
            f"of {run.num_compiles} compiled program(s)",
            flush=True,
        )
    return results


def _each_program(
    experiment: Experiment, configs: list[tuple[str, Any]], args: argparse.Namespace
) -> Iterator[tuple[str, Results]]:
    """Every program (:func:`programs`): a method alone, or a grid's cells, in order."""
    for methods in programs(experiment, configs):
        name, config = methods[0]
        if name not in experiment.traced:
            yield name, _each_method(experiment, name, config, args)
        else:
            yield from _grid_program(experiment, methods, args).items()


def method_row(
    experiment: Experiment,
    name: str,
    outcome: Any,
    config: Any,
    args: argparse.Namespace,
    seconds: float,
) -> dict[str, Any]:
    """The results.json row of one method (see :mod:`jaxcl.experiment`, Rows)."""
    if isinstance(outcome, Results) and experiment.engine_metrics:
        row = report.result_row(name, outcome)
    else:
        row = {"method": name, "metrics": {}}
        if isinstance(outcome, Results):
            row["diverged_seeds"] = report.diverged_seeds(outcome)
    if (record := config_record(config)) is not None:
        row["config"] = record
    if experiment.diagnostics and isinstance(outcome, Results):
        reported = [n for n in experiment.diagnostics if n in outcome.diagnostics]
        after = {n: np.asarray(outcome.diagnostics[n]) for n in reported}
        row["metrics"].update(metrics.summary_table({n: v[:, -1] for n, v in after.items()}))
        row["diagnostics_after_task"] = {name: v.tolist() for name, v in after.items()}
    if experiment.row_metrics is not None:
        per_seed = experiment.row_metrics(outcome, config, args)
        row["metrics"].update(metrics.summary_table(per_seed))
    if experiment.row_fields is not None:
        row.update(json_ready(experiment.row_fields(outcome, config, args), finite=True))
    row["seconds"] = round(seconds, 2)
    return row


def _row_line(experiment: Experiment, row: Mapping[str, Any], width: int) -> str:
    cells = []
    for metric in experiment.metrics:
        stat = row["metrics"].get(metric)
        if stat is not None:
            cells.append(f"{metric} {report.format_stat(stat, percent=False, digits=4)}")
    return f"{row['method']:>{width}}: {', '.join(cells)} ({row['seconds']:.1f} s)"


def experiment_text(experiment: Experiment, rows: list[dict], args: argparse.Namespace) -> str:
    """``table.md`` but for the extras: the header, the table(s) and the findings."""
    text = experiment.header(rows, args) if experiment.header is not None else ""
    if experiment.table is not None:
        text += experiment.table(rows, args)
    else:
        text += report.markdown_table(rows, metrics=experiment.metrics, paper=experiment.paper)
    if experiment.findings is not None:
        text += experiment.findings(rows, args)
    return text


def run_experiment(experiment: Experiment, argv: Sequence[str] | None = None) -> list[dict]:
    """Runs ``experiment`` with the command line ``argv``; its rows, old ones included.

    Parses the flags (a :class:`UsageError` for a bad one, before any work), refuses an
    ``--out`` whose rows cannot be merged (:func:`previous_results`), runs the chosen
    methods printing a line as each finishes, then writes ``results.json``, ``table.md``
    (header, table, findings, extras' text; also printed) and the plots into ``--out``.
    In a multi-process run only process 0 prints and writes; every process returns the rows.
    """
    args = experiment_args(experiment, argv)
    if not args.no_compile_cache:
        compile_cache.enable()
    methods = chosen_methods(experiment, args)
    run_config = experiment.run_config(args)
    previous = previous_results(
        args, experiment=experiment.name, config=run_config, methods=methods
    )
    configure = experiment.configure or (lambda spec, args: spec)
    configs = [(name, configure(experiment.methods[name], args)) for name in methods]
    if experiment.execute is not None:
        outcomes = experiment.execute(configs, args)
    else:
        outcomes = _each_program(experiment, configs, args)
    config_of = dict(configs)
    width = max(map(len, methods), default=0)
    main_process = processes.is_main()  # the one that prints and writes the results
    rows = []
    start = time.perf_counter()
    for name, outcome in outcomes:
        seconds = time.perf_counter() - start
        rows.append(method_row(experiment, name, outcome, config_of[name], args, seconds))
        if main_process:
            print(_row_line(experiment, rows[-1], width), flush=True)
        start = time.perf_counter()
    rows = report.merge_rows(previous["rows"], rows, order=list(experiment.methods))

    extras, extras_text = {}, ""
    if experiment.extras is not None:
        extras, extras_text = experiment.extras(previous, args)
    if not main_process:
        return rows
    text = experiment_text(experiment, rows, args) + extras_text
    print("\n" + text)

    out = Path(args.out)
    report.write_results(
        out, experiment=experiment.name, config=run_config, rows=rows, extra=extras
    )
    report.write_table(out, text)
    if experiment.curves:
        report.plot_accuracy_curves(
            rows,
            out / "accuracy_after_each_task.png",
            title=f"{experiment.name}: accuracy after each task",
            floor=experiment.forgetting_floor,
        )
    if experiment.plots is not None:
        experiment.plots(rows, args, out)
    return rows


def main(experiment: Experiment, argv: Sequence[str] | None = None) -> None:
    """Runs ``experiment`` (:func:`run_experiment`) as a command.

    A :class:`UsageError` exits with status 2, any other exception with status 1, each
    after one line on stderr; ``--debug`` in ``argv`` or ``JAXCL_DEBUG=1`` also prints the
    traceback. Interruptions (``SystemExit``, ``KeyboardInterrupt``) pass through. The
    command holds a lock on ``--out`` from the moment it is parsed until it exits
    (:func:`jaxcl.execution.lock_directory`): a second command on the same ``--out`` stops
    at once with a line naming the holder's pid.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with contextlib.ExitStack() as scope:
            token = _COMMAND_SCOPE.set(scope)
            try:
                run_experiment(experiment, argv)
            finally:
                _COMMAND_SCOPE.reset(token)
    except Exception as err:
        debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
        if debug:
            traceback.print_exc()
        lines = str(err).strip().splitlines()
        message = lines[0] if lines else ""
        if not isinstance(err, UsageError):
            message = f"{type(err).__name__}: {message}".rstrip(": ")
            if not debug:
                message += f" (--debug or {DEBUG_ENV}=1 shows the traceback)"
        print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
        raise SystemExit(2 if isinstance(err, UsageError) else 1) from None
