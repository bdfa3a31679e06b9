"""The command-line contract shared by every ``experiments/*.py`` (DESIGN.md).

Each experiment accepts ``--seeds N``, ``--out DIR``, ``--quick`` and
``--methods NAME[,NAME...]``; ``--help`` lists the method names. Long runs also take
``--checkpoint-every N`` (tasks between checkpoints), ``--seed-chunk N`` and
``--no-checkpoint``: re-running the same command with the same ``--out`` resumes, and
methods already finished are not run again (see :mod:`jaxcl.execution`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxcl import execution
from jaxcl.engine import Results, Run


def experiment_parser(
    description: str,
    *,
    methods: Sequence[str],
    default_seeds: int = 5,
    default_out: str = "results",
    resumable: bool = True,
) -> argparse.ArgumentParser:
    """An ``argparse`` parser with the common flags; add experiment flags to it.

    ``resumable=False`` leaves out the checkpoint flags (for runs that take seconds).
    """
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=default_seeds, help="seeds, run vmapped")
    parser.add_argument("--out", default=default_out, help="results directory")
    parser.add_argument(
        "--quick", action="store_true", help="seconds-long smoke configuration (used by tests)"
    )
    parser.add_argument(
        "--methods",
        default=None,
        help="comma-separated subset of rows to run; valid: " + ", ".join(methods),
    )
    if not resumable:
        return parser
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        help="tasks per compiled chunk, checkpointed after each (0: a tenth of the stream)",
    )
    parser.add_argument(
        "--seed-chunk", type=int, default=0, help="seeds run at once (0: as many as fit)"
    )
    parser.add_argument(
        "--no-checkpoint", action="store_true", help="do not save checkpoints under --out"
    )
    return parser


def chunk_size(args: argparse.Namespace, num_tasks: int) -> int:
    """Tasks per compiled chunk: ``--checkpoint-every``, else about a tenth of the stream."""
    if args.checkpoint_every < 0:
        raise ValueError(f"--checkpoint-every must be >= 0, got {args.checkpoint_every}")
    return args.checkpoint_every or max(1, math.ceil(num_tasks / 10))


def run_method(
    run: Run,
    args: argparse.Namespace,
    method: str,
    config: Mapping[str, Any] | Any,
    *,
    final_diagnostics: execution.FinalDiagnostics | None = None,
) -> Results:
    """Runs seeds ``0..--seeds−1`` of one method, checkpointed under ``--out``.

    ``final_diagnostics`` measures the trained learners (see
    :func:`jaxcl.execution.run_seeds`).
    """
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    checkpoint_dir = None if args.no_checkpoint else Path(args.out) / "checkpoints" / method
    return execution.run_seeds(
        run,
        range(args.seeds),
        checkpoint_dir=checkpoint_dir,
        fingerprint={"method": method, "quick": args.quick, **dict(config)},
        seed_chunk_size=args.seed_chunk or None,
        progress=sys.stderr.isatty(),
        final_diagnostics=final_diagnostics,
    )


def selected_methods(args: argparse.Namespace, methods: Sequence[str]) -> list[str]:
    """The methods named by ``--methods`` (all when absent), in the table's order."""
    if args.seeds < 1:
        raise ValueError(f"--seeds must be a positive integer, got {args.seeds}")
    if args.methods is None:
        return list(methods)
    wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in methods]
    if unknown or not wanted:
        raise ValueError(
            f"--methods got unknown name(s) {unknown or args.methods!r}; "
            f"valid names: {', '.join(methods)}"
        )
    return [m for m in methods if m in wanted]
