"""``kp3d train``: train a method on a dataset into a run folder.

Every setting has exactly one definition: the method's config dataclass and
:class:`kp3d.engine.TrainConfig`. Their fields become flags here, with their docstrings as help,
so ``kp3d train --method NAME --help`` lists that method's settings with the method's own
defaults. Which flags exist depends on the method, so the command line is read twice: a small
pre-parser finds the method (``--method``, else the ``--config`` file's, else the resumed run's),
then the full parser for that method parses everything.

This module only parses: the flags, the config file and a resumed run's stored config are
resolved into one :class:`~kp3d.engine.request.TrainRequest` by
:func:`kp3d.engine.request.resolve_request` (layering and file format described there), and
the engine trains it. Settings read from the data (the number of keypoints, ``n_categories`` of
the ``lifter``) come from the method's ``configure`` hook.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from kp3d.config import add_config_arguments, field_defaults, flag_name, values_from_args
from kp3d.data.inputs import SIZE_FIELDS
from kp3d.engine.config import TrainConfig
from kp3d.engine.request import KEYPOINT_FIELDS, Flags, TrainRequest, first_field, requested_method

_METHOD_DEST = "model:"
_TRAIN_DEST = "train:"
_COMMAND_FLAGS = frozenset(
    {
        "--method",
        "--data",
        "--out",
        "--k",
        "--size",
        "--config",
        "--resume",
        "--no-3d",
        "--format",
        "--split",
        "--strict",
        "--devices",
        "--help",
        "-h",
    }
)


# --------------------------------------------------------------------------------------------
# Arguments


def _pre_parser() -> argparse.ArgumentParser:
    """The flags that decide which method's settings the full parser has."""
    pre = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    pre.add_argument("--method")
    pre.add_argument("--config", type=Path)
    pre.add_argument("--resume", action="store_true")
    pre.add_argument("--out", type=Path)
    pre.add_argument("--no-3d", action="store_true")
    return pre


def method_from_argv(argv: list[str]) -> str | None:
    """The method the command line asks for (see :func:`kp3d.engine.request.requested_method`);
    None when it names none or cannot be read yet (the full parse reports the problem)."""
    try:
        known, _ = _pre_parser().parse_known_args(argv)
    except (argparse.ArgumentError, SystemExit):
        return None
    return requested_method(
        method=known.method,
        config=known.config,
        resume=known.resume,
        out=known.out,
        no_3d=known.no_3d,
    )


def add_arguments(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> None:
    """The command's flags, and (``argv`` naming a method) that method's settings."""
    from kp3d.methods import REGISTRY

    parser.description = (
        "Train a method on a dataset into a run folder. Add --method NAME to --help to see that "
        "method's settings."
    )
    parser.add_argument(
        "--method",
        metavar="NAME",
        help=f"method to train: {', '.join(REGISTRY)} (default: the --config file's, "
        "or the resumed run's)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        metavar="DIR",
        help="dataset: any supported format, e.g. a `kp3d synth` set or a folder of "
        "images (labels are never used for training)",
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="RUN", help="run folder to write"
    )
    parser.add_argument(
        "--k",
        type=int,
        metavar="K",
        help=f"number of keypoints (the method's {'/'.join(KEYPOINT_FIELDS)} setting)",
    )
    parser.add_argument(
        "--size",
        type=int,
        metavar="PX",
        help="image side length: the dataset is "
        "resized to it and the method's image size set to it",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="JSON or TOML settings (method, data, [model], [train]); flags win",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint (starts it if new)",
    )
    parser.add_argument(
        "--no-3d",
        action="store_true",
        help="switch the 3D part off: autolink3d becomes the 2D AutoLink baseline",
    )
    parser.add_argument("--format", metavar="NAME", help="dataset format (default: detected)")
    parser.add_argument("--split", metavar="NAME", help="dataset split, where the format has them")
    parser.add_argument(
        "--devices",
        type=int,
        default=1,
        metavar="N",
        help="train with N local processes (one per GPU, or CPU processes) under DDP, like "
        "`torchrun --standalone --nproc-per-node N -m kp3d train ...`; --batch-size is per "
        "process (default: %(default)s)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="unreadable images are errors instead of logged skips"
    )
    argv = list(argv or [])
    name = method_from_argv(argv)
    spec = None
    if name is not None:
        from kp3d.methods import get_method

        if name not in REGISTRY:
            parser.error(f"unknown method {name!r}; valid methods: {', '.join(REGISTRY)}")
        try:
            spec = get_method(name)
        except ImportError as e:
            parser.error(f"method {name!r} cannot be loaded: {e}")
    add_settings_arguments(parser, spec, name)
    parser.set_defaults(_argv=argv)  # --devices relaunches the command as typed


def _method_flag_prefix(spec: Any) -> dict[str, str]:
    """Per method field, its flag prefix: none, or ``model.`` where the plain flag is taken."""
    taken = _COMMAND_FLAGS | {flag_name(f) for f in field_defaults(TrainConfig)}
    return {f: ("model." if flag_name(f) in taken else "") for f in field_defaults(spec.config_cls)}


def add_settings_arguments(parser: argparse.ArgumentParser, spec: Any, name: str | None) -> None:
    """The method's settings (when known) and the TrainConfig settings as flag groups."""
    if spec is not None:
        defaults = {**field_defaults(spec.config_cls), **spec.overrides}
        for flag, names in (("--k", KEYPOINT_FIELDS), ("--size", SIZE_FIELDS)):
            field = first_field(spec, names)
            action = parser._option_string_actions[flag]
            if field is not None and action.help and "(default" not in action.help:
                action.help += f" (default: {defaults[field]})"
        group = parser.add_argument_group(f"{name} settings", spec.description)
        shortcuts = {first_field(spec, KEYPOINT_FIELDS), first_field(spec, SIZE_FIELDS)} - {None}
        prefixes = _method_flag_prefix(spec)
        for prefix in sorted(set(prefixes.values())):
            fields = {f for f, p in prefixes.items() if p != prefix} | shortcuts
            add_config_arguments(
                group,
                spec.config_cls,
                prefix=prefix,
                dest_prefix=_METHOD_DEST,
                defaults=defaults,
                skip=frozenset(fields),
            )
    group = parser.add_argument_group(
        "training settings" + (f" (defaults for {name})" if spec is not None else "")
    )
    train_defaults = {**field_defaults(TrainConfig), **(spec.train_defaults if spec else {})}
    add_config_arguments(group, TrainConfig, dest_prefix=_TRAIN_DEST, defaults=train_defaults)


# --------------------------------------------------------------------------------------------
# Resolution


def flags_from_args(args: argparse.Namespace) -> Flags:
    """The parsed command line as :class:`~kp3d.engine.request.Flags`."""
    from kp3d.methods import REGISTRY, get_method

    # The method whose settings the parser has (the request resolves and checks it again).
    name = requested_method(
        method=args.method,
        config=args.config,
        resume=args.resume,
        out=args.out,
        no_3d=args.no_3d,
    )
    model: dict[str, Any] = {}
    if name is not None and name in REGISTRY:
        cls = get_method(name).config_cls
        model = values_from_args(args, cls, dest_prefix=_METHOD_DEST) | values_from_args(
            args, cls, prefix="model.", dest_prefix=_METHOD_DEST
        )
    return Flags(
        out=args.out,
        method=args.method,
        config=args.config,
        resume=args.resume,
        no_3d=args.no_3d,
        data=args.data,
        format=args.format,
        split=args.split,
        size=args.size,
        k=args.k,
        strict=args.strict,
        devices=args.devices,
        model=model,
        train=values_from_args(args, TrainConfig, dest_prefix=_TRAIN_DEST),
    )


def resolve_request(args: argparse.Namespace) -> TrainRequest:
    """The parsed command line resolved into one request (:mod:`kp3d.engine.request`)."""
    from kp3d.engine.request import resolve_request as resolve

    return resolve(flags_from_args(args))


# --------------------------------------------------------------------------------------------
# Running


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes to whatever ``sys.stderr`` is at the time of the message."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup_logging() -> None:
    """Show kp3d's INFO messages on stderr (through the progress bars' console in a terminal)."""
    logger = logging.getLogger("kp3d")
    if logger.handlers:
        return
    from kp3d.engine.monitor import CONSOLE

    handler: logging.Handler
    if CONSOLE.is_terminal:
        from rich.logging import RichHandler

        handler = RichHandler(console=CONSOLE, show_path=False, show_level=False)
    else:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", datefmt="%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def _launched(argv: list[str], registry: dict[str, str]) -> int:
    """One process of ``kp3d train --devices N`` (spawned: the registry is handed over)."""
    from kp3d.cli import main
    from kp3d.methods import REGISTRY

    REGISTRY.update(registry)
    return main(["train", *argv])


def _without_devices(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--devices":
            skip = True
        elif not a.startswith("--devices="):
            out.append(a)
    return out


def run(args: argparse.Namespace) -> int:
    from kp3d.engine import distributed
    from kp3d.engine.loop import TrainingInterrupted
    from kp3d.engine.monitor import CONSOLE
    from kp3d.engine.request import run_request
    from kp3d.errors import ConfigError

    setup_logging()
    if args.devices < 1:
        raise ConfigError(f"--devices must be >= 1, got {args.devices}")
    request = resolve_request(args)  # settings errors once, before any process is started
    if args.devices > 1:
        from kp3d.methods import REGISTRY

        argv = _without_devices(args._argv)
        return distributed.launch_local(args.devices, _launched, argv, dict(REGISTRY))
    ctx = distributed.context_from_env()
    if not ctx.is_main:
        logging.getLogger("kp3d").setLevel(logging.ERROR)
    try:
        result = run_request(request)
    except TrainingInterrupted as e:
        if ctx.is_main:
            CONSOLE.print(
                f"stopped by {e.signal_name} after step {e.step}; the checkpoint is saved. "
                f"Continue with:\n  kp3d train --out {args.out} --resume",
                highlight=False,
            )
        raise
    if not ctx.is_main:
        return 0
    loss = f", final loss {result.final_loss:.4g}" if result.final_loss is not None else ""
    skipped = f", {result.skipped_steps} non-finite steps skipped" if result.skipped_steps else ""
    devices = f" on {ctx.world_size} processes" if ctx.enabled else ""
    CONSOLE.print(
        f"trained {request.method} for {result.steps} steps{devices} in "
        f"{result.elapsed_s / 60:.1f} min ({result.images_per_s:.0f} images/s{loss}{skipped})\n"
        f"run folder: {args.out}\nnext: {_next_steps(request, result.data_fields, args.out)}",
        highlight=False,
    )
    return 0


def _next_steps(request: Any, data_fields: tuple[str, ...], out: Path) -> str:
    """What to run next: ``evaluate`` where the training data has the ground truth of one of
    the method's protocols (labels), else ``infer`` on new data; always ``report``."""
    from kp3d.evaluation import PROTOCOLS

    labelled = any(
        set(PROTOCOLS[p].ground_truth) <= set(data_fields) for p in request.spec.protocols
    )
    first = (
        f"kp3d evaluate --run {out} --data LABELLED_TEST_SET"
        if labelled
        else f"kp3d infer --run {out} --input NEW_DATA --out predictions.npz"
        + (" --overlay overlays/" if "image" in data_fields else "")
    )
    return f"{first}   |   kp3d report --run {out} --out report.html"
