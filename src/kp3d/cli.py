"""The ``kp3d`` command line.

Each sub-command lives in its own module under :mod:`kp3d.commands`, which exposes
``add_arguments(parser)`` and ``run(args) -> int``; a command whose flags depend on the command
line (``train``: the method's settings) takes ``add_arguments(parser, argv)``, with the
command's own arguments. Only the module of the command being run is
imported, so ``kp3d --help`` stays fast.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import re
import sys
import typing

from kp3d.errors import UserError

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("kp3d.commands.demo", "make a synthetic set, train, evaluate and write a report"),
    "synth": ("kp3d.commands.synth", "generate a synthetic category with exact 3D ground truth"),
    "train": ("kp3d.commands.train", "train a method on a dataset"),
    "infer": ("kp3d.commands.infer", "run a trained model on new images, keypoints or views"),
    "evaluate": ("kp3d.commands.evaluate", "score a trained model with the literature's protocols"),
    "report": ("kp3d.commands.report", "write a self-contained HTML report of a run"),
    "data": ("kp3d.commands.data", "inspect datasets (`kp3d data info PATH`)"),
    "export": ("kp3d.commands.export", "export a trained run as an ONNX graph"),
}


class _Parser(argparse.ArgumentParser):
    """argparse with a "did you mean" for mistyped flags and commands."""

    def error(self, message: str) -> typing.NoReturn:
        super().error(message + _suggestion(self, message))


def _suggestion(parser: argparse.ArgumentParser, message: str) -> str:
    """``"; did you mean --steps?"`` for the first unknown flag or command in ``message``."""
    if m := re.search(r"unrecognized arguments: (\S+)", message):
        word = m.group(1).split("=", 1)[0]
        known = list(parser._option_string_actions)
    elif m := re.search(r"invalid choice: '([^']+)'", message):
        word = m.group(1)
        known = [c for a in parser._actions if a.choices for c in a.choices]
    else:
        return ""
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _deepest(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost sub-command parser that ``args`` went through (``kp3d data info``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = getattr(args, action.dest, None)
            if chosen in action.choices:
                return _deepest(action.choices[chosen], args)
    return parser


def build_parser(
    command: str | None = None, argv: list[str] | None = None
) -> argparse.ArgumentParser:
    """The argument parser; only ``command``'s own arguments are loaded (all when None).
    ``argv``: the whole command line, for commands whose flags depend on it."""
    from kp3d import __version__

    parser = _Parser(
        prog="kp3d",
        description="Discover 3D keypoints, a skeleton, a canonical shape and poses from images.",
    )
    parser.add_argument("--version", action="version", version=f"kp3d {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if command is None or name == command:
            module = importlib.import_module(module_name)
            if "argv" in inspect.signature(module.add_arguments).parameters:
                rest = list(argv or [])
                rest = rest[rest.index(name) + 1 :] if name in rest else []
                module.add_arguments(p, argv=rest)
            else:
                module.add_arguments(p)
            p.set_defaults(_run=module.run, _parser=p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else "", argv)
    if not argv:
        parser.print_help()
        return 0
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # Reported under the sub-command's own usage (argparse would show the top-level one).
        _deepest(args._parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"kp3d {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kp3d {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
