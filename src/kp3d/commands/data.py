"""``kp3d data info PATH``: what a dataset folder is recognised as, its counts and its problems.

Exit status: 0 when nothing is wrong, 1 when problems were found (they are listed, each naming
its file and line), 2 when the path does not exist or is no known format.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

MAX_LISTED = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser(
        "info",
        help="recognise a dataset, count it, and list its problems",
        description="Recognise a dataset, count it, and list its problems.",
    )
    p.add_argument("path", type=Path, help="dataset folder or file")
    p.add_argument(
        "--format",
        default=None,
        help="read as this format instead of detecting it (see kp3d.data.adapters)",
    )
    p.add_argument("--split", default=None, help="the split to count as samples")
    p.add_argument(
        "--check",
        choices=("decode", "header", "none"),
        default="decode",
        help="image check: decode every image (finds truncated files), read headers "
        "only, or none (default: %(default)s)",
    )
    p.add_argument(
        "--option",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a format option, e.g. -o variant=aligned -o crop=bbox (repeatable)",
    )
    p.add_argument(
        "--all", action="store_true", help=f"list every problem (default: first {MAX_LISTED})"
    )


def _options(pairs: list[str]) -> dict[str, Any]:
    from kp3d.errors import ConfigError

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option {pair!r}: expected KEY=VALUE")
        if key in ("split", "format", "check"):
            raise ConfigError(f"--option {key}=...: use --{key} instead")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from kp3d.data.adapters import info

    result = info(
        args.path, format=args.format, split=args.split, check=args.check, **_options(args.option)
    )

    console = Console()
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("path", escape(str(result.path)))
    table.add_row("format", result.format)
    table.add_row("samples", f"{result.samples}" + (f" (split {args.split})" if args.split else ""))
    table.add_row("images", str(result.images))
    table.add_row("labelled", str(result.labelled))
    if result.keypoints is not None:
        names = f" ({', '.join(result.keypoint_names)})" if result.keypoint_names else ""
        table.add_row("keypoints", f"{result.keypoints}{names}")
    if result.splits:
        table.add_row("splits", ", ".join(f"{k}: {v}" for k, v in result.splits.items()))
    for note in result.notes:
        table.add_row("note", escape(note))
    n_bad = len(result.problems)
    table.add_row("problems", f"[red]{n_bad}[/red]" if n_bad else "[green]none[/green]")
    if result.unreadable:
        table.add_row(
            "", f"{result.unreadable} unreadable images (skipped when the dataset is opened)"
        )
    console.print(table)
    shown = result.problems if args.all else result.problems[:MAX_LISTED]
    for p in shown:
        console.print(f"  [red]-[/red] {escape(p)}", highlight=False, soft_wrap=True)
    if len(shown) < n_bad:
        console.print(f"  ... and {n_bad - len(shown)} more (--all lists them)")
    return 1 if n_bad else 0
