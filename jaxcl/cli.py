"""The command-line contract shared by every ``experiments/*.py`` (DESIGN.md).

Each experiment accepts ``--seeds N``, ``--out DIR``, ``--quick`` and
``--methods NAME[,NAME...]``; ``--help`` lists the method names.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def experiment_parser(
    description: str,
    *,
    methods: Sequence[str],
    default_seeds: int = 5,
    default_out: str = "results",
) -> argparse.ArgumentParser:
    """An ``argparse`` parser with the four common flags; add experiment flags to it."""
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
    return parser


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
