"""``kp3d train``: train a method on a dataset into a run folder.

Every setting has exactly one definition: the method's config dataclass and
:class:`kp3d.engine.TrainConfig`. Their fields become flags here, with their docstrings as help,
so ``kp3d train --method NAME --help`` lists that method's settings with the method's own
defaults. Values are layered, later winning::

    class defaults < the method's registry overrides/train_defaults < --config FILE < flags

A config file is JSON or TOML with optional ``method``, ``data`` (a path, or a table with
``path``, ``size``, ``format``), a ``model`` table (method settings) and a ``train`` table
(TrainConfig settings); a run's own ``config.json`` is a valid config file::

    method = "autolink3d"
    data = "data/creature-train"
    [model]
    image_size = 64
    [train]
    minutes = 10

``--resume`` continues the run in ``--out`` from its last checkpoint; ``--method`` and
``--data`` then default to the run's own, and only budget-like settings may change.

Methods with an ``n_categories`` setting (``lifter``) get it from the data when it is not set
(the dataset's ``num_categories``, e.g. 1 + the largest label of a ``.npz`` file's ``category``);
a value below the data's number of categories is an error (:func:`fill_categories`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kp3d.config import (
    add_config_arguments,
    config_from_dict,
    field_defaults,
    flag_name,
    load_config_file,
    merge_values,
    values_from_args,
)
from kp3d.engine.config import TrainConfig
from kp3d.errors import ConfigError

KEYPOINT_FIELDS = ("k", "n_keypoints", "num_keypoints")
"""Method config fields that ``--k`` sets (the first one the method has)."""
SIZE_FIELDS = ("image_size", "size")
"""Method config fields that ``--size`` sets (the first one the method has)."""
NO_3D = {"autolink3d": "autolink"}
"""``--no-3d``: the registry entry that is the method with its 3D part switched off."""
FILE_KEYS = ("method", "data", "model", "train")
"""Top-level keys of a config file (besides the run metadata of a ``config.json``)."""
_RUN_METADATA_KEYS = ("format", "format_version", "provenance")

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
    _install_method_hook(parser)


def _method_from_argv(argv: list[str]) -> str | None:
    """The method the command line asks for: --method, else the --config file's, else (with
    --resume) the run's. Problems here are reported properly later, by :func:`run`."""

    def value(flag: str) -> str | None:
        for i, a in enumerate(argv):
            if a == flag and i + 1 < len(argv):
                return argv[i + 1]
            if a.startswith(flag + "="):
                return a.split("=", 1)[1]
        return None

    name = value("--method")
    if name is None and (config := value("--config")):
        try:
            name = load_config_file(config).get("method")
        except ConfigError:
            name = None
    if name is None and "--resume" in argv and (out := value("--out")):
        try:
            name = load_config_file(Path(out) / "config.json").get("method")
        except ConfigError:
            name = None
    if name is not None and "--no-3d" in argv:
        name = NO_3D.get(name, name)
    return name if isinstance(name, str) else None


def _install_method_hook(parser: argparse.ArgumentParser) -> None:
    """Add the method's and the training settings as flags once the method is known.

    argparse needs every flag before it parses, but which flags exist depends on ``--method``.
    The sub-parser's ``parse_known_args`` (what the top-level parser calls with this command's
    arguments) is wrapped to look the method up first.
    """
    original = parser.parse_known_args

    def parse_known_args(args: Any = None, namespace: Any = None) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if getattr(parser, "_kp3d_settings_added", False):  # a parser used twice (tests)
            return original(argv, namespace)
        name = _method_from_argv(argv)
        spec = None
        if name is not None:
            from kp3d.methods import REGISTRY, get_method

            if name not in REGISTRY:
                parser.error(f"unknown method {name!r}; valid methods: {', '.join(REGISTRY)}")
            try:
                spec = get_method(name)
            except ImportError as e:
                parser.error(f"method {name!r} cannot be loaded: {e}")
        add_settings_arguments(parser, spec, name)
        parser._kp3d_settings_added = True  # type: ignore[attr-defined]
        parser.set_defaults(_argv=argv)  # --devices relaunches the command as typed
        return original(argv, namespace)

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def _method_flag_prefix(spec: Any) -> dict[str, str]:
    """Per method field, its flag prefix: none, or ``model.`` where the plain flag is taken."""
    taken = _COMMAND_FLAGS | {flag_name(f) for f in field_defaults(TrainConfig)}
    return {f: ("model." if flag_name(f) in taken else "") for f in field_defaults(spec.config_cls)}


def add_settings_arguments(parser: argparse.ArgumentParser, spec: Any, name: str | None) -> None:
    """The method's settings (when known) and the TrainConfig settings as flag groups."""
    if spec is not None:
        defaults = {**field_defaults(spec.config_cls), **spec.overrides}
        for flag, names in (("--k", KEYPOINT_FIELDS), ("--size", SIZE_FIELDS)):
            field = _first_field(spec, names)
            action = parser._option_string_actions[flag]
            if field is not None and action.help and "(default" not in action.help:
                action.help += f" (default: {defaults[field]})"
        group = parser.add_argument_group(f"{name} settings", spec.description)
        shortcuts = {_first_field(spec, KEYPOINT_FIELDS), _first_field(spec, SIZE_FIELDS)} - {None}
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


def _first_field(spec: Any, names: tuple[str, ...]) -> str | None:
    fields = field_defaults(spec.config_cls)
    return next((n for n in names if n in fields), None)


# --------------------------------------------------------------------------------------------
# Resolution


def _file_settings(path: Path) -> dict[str, Any]:
    """A config file's settings, with its keys checked."""
    doc = load_config_file(path)
    unknown = [k for k in doc if k not in FILE_KEYS and k not in _RUN_METADATA_KEYS]
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"valid keys: {', '.join(FILE_KEYS)}"
        )
    for table in ("model", "train"):
        if table in doc and not isinstance(doc[table], Mapping):
            raise ConfigError(f"{path}: {table!r} must be a table of settings, got {doc[table]!r}")
    data = doc.get("data")
    if data is not None and not isinstance(data, (str, Mapping)):
        raise ConfigError(f"{path}: 'data' must be a path or a table with 'path', got {data!r}")
    return doc


def _data_location(data: Any) -> tuple[str | None, int | None, str | None]:
    """(path, size, format) from a config file's ``data`` entry."""
    if isinstance(data, str):
        return data, None, None
    if isinstance(data, Mapping):
        return data.get("path"), data.get("size"), data.get("format")
    return None, None, None


def resolve_request(args: argparse.Namespace) -> dict[str, Any]:
    """Everything ``run`` needs, checked before any data is opened: method, data location,
    and the user's method and training values (file < flags)."""
    from kp3d.engine.run import method_spec, resolve_method_config, resolve_train_config

    doc = _file_settings(args.config) if args.config else {}
    source = str(args.config) if args.config else "command line"
    stored: dict[str, Any] = {}
    if args.resume and (args.out / "config.json").is_file():
        from kp3d.engine.run import read_run_config

        stored = read_run_config(args.out)

    method = args.method or doc.get("method") or stored.get("method")
    if not method:
        raise ConfigError("no method: pass --method NAME (or set method in the --config file)")
    if args.no_3d:
        if method not in NO_3D:
            raise ConfigError(
                f"--no-3d: method {method!r} has no 2D-only variant "
                f"(it applies to {', '.join(NO_3D)})"
            )
        method = NO_3D[method]
    spec = method_spec(method)

    file_model, file_train = dict(doc.get("model", {})), dict(doc.get("train", {}))
    # Check the file on its own first, so its errors name it.
    if file_model:
        config_from_dict(spec.config_cls, {**spec.overrides, **file_model}, source=source)
    if file_train:
        config_from_dict(TrainConfig, {**spec.train_defaults, **file_train}, source=source)

    cli_model = values_from_args(
        args, spec.config_cls, dest_prefix=_METHOD_DEST
    ) | values_from_args(args, spec.config_cls, prefix="model.", dest_prefix=_METHOD_DEST)
    cli_train = values_from_args(args, TrainConfig, dest_prefix=_TRAIN_DEST)
    if args.k is not None and args.k < 2:
        raise ConfigError(f"--k: at least 2 keypoints are needed, got {args.k}")
    if args.size is not None and args.size < 1:
        raise ConfigError(f"--size: must be a positive number of pixels, got {args.size}")
    if args.k is not None:
        field = _first_field(spec, KEYPOINT_FIELDS)
        if field is None:
            raise ConfigError(f"--k: method {method!r} has no keypoint-count setting")
        cli_model[field] = args.k
    data_path, data_size, data_format = _data_location(doc.get("data"))
    size = args.size if args.size is not None else data_size
    size_field = _first_field(spec, SIZE_FIELDS)
    if args.size is not None and size_field is not None:
        cli_model[size_field] = args.size

    model_values = merge_values(file_model, cli_model)
    train_values = merge_values(file_train, cli_train)
    if "minutes" in train_values and "steps" not in train_values:
        train_values["steps"] = None  # a time budget alone means: no step limit
    if not stored:
        mcfg = resolve_method_config(spec, model_values, source="command line")
        device = resolve_train_config(spec, train_values, source="command line").device
        if size is None and size_field is not None:
            size = getattr(mcfg, size_field)
    else:
        # Type and value checks now; what may change on resume is checked by the engine.
        config_from_dict(
            spec.config_cls, {**stored["model"], **model_values}, source="command line"
        )
        config_from_dict(TrainConfig, {**stored["train"], **train_values}, source="command line")
        stored_data = stored.get("data") or {}
        data_path = data_path or stored_data.get("path")
        size = size if size is not None else stored_data.get("size")
        data_format = data_format or stored_data.get("format")
        device = train_values.get("device", stored["train"].get("device", "auto"))

    data = args.data or data_path
    if data is None:
        raise ConfigError("no data: pass --data DIR (or set data in the --config file)")
    if spec.data == "keypoints":
        size = None
    return {
        "method": method,
        "spec": spec,
        "data": Path(data),
        "size": size,
        "format": args.format or data_format,
        "device": device,
        "model": model_values,
        "train": train_values,
        "stored_model": dict(stored.get("model", {})),
    }


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


def open_training_data(request: Mapping[str, Any], *, split: str | None, strict: bool) -> Any:
    """Open the dataset of a resolved request."""
    from kp3d.data.adapters import open_dataset

    options: dict[str, Any] = {}
    if request["size"] is not None:
        options["size"] = request["size"]
    if split is not None:
        options["split"] = split
    if strict:
        options["strict"] = True
    path = request["data"]
    if request["spec"].data == "keypoints":
        from kp3d.engine.discovered import discovered_keypoints, is_run_folder

        if is_run_folder(path):
            # A run of an image method: lift the keypoints it discovered on its own data.
            path = discovered_keypoints(path)
    return open_dataset(path, format=request["format"], **options)


CATEGORY_FIELD = "n_categories"
"""Method config field for the number of categories, filled from the data by :func:`run`."""


def data_num_categories(dataset: Any) -> int | None:
    """Number of categories of a dataset: its ``num_categories``, else 1 + the largest
    ``category`` label of its samples (keypoint datasets are cheap to scan); None when the
    samples carry no category labels."""
    n = getattr(dataset, "num_categories", None)
    if n is not None:
        return int(n)
    largest = None
    for i in range(len(dataset)):
        category = dataset[i].category
        if category is None:
            return None
        largest = max(int(category), -1 if largest is None else largest)
    return None if largest is None else largest + 1


def fill_categories(request: Mapping[str, Any], dataset: Any) -> dict[str, Any]:
    """The user's method values with ``n_categories`` taken from the data where unset.

    Applies to methods with an ``n_categories`` setting (``lifter``) training on keypoint data.
    A value the user set (flag or config file), or a resumed run's stored value, is kept, but
    must cover the data's categories.

    Raises:
        ConfigError: an explicit ``n_categories`` smaller than the data's number of categories.
    """
    values = dict(request["model"])
    spec = request["spec"]
    if spec.data != "keypoints" or CATEGORY_FIELD not in field_defaults(spec.config_cls):
        return values
    n_data = data_num_categories(dataset)
    if n_data is None:
        return values
    stored = request.get("stored_model") or {}
    given = values.get(CATEGORY_FIELD, stored.get(CATEGORY_FIELD))
    if given is None:
        given = spec.overrides.get(CATEGORY_FIELD)
    if given is None:
        values[CATEGORY_FIELD] = n_data
    elif int(given) < n_data:
        raise ConfigError(
            f"{CATEGORY_FIELD} = {given}, but the data {request['data']} has {n_data} categories "
            f"(labels 0..{n_data - 1}); set {CATEGORY_FIELD} to at least {n_data} or leave it "
            "unset to take it from the data"
        )
    return values


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
    from kp3d.engine import distributed, train
    from kp3d.engine.monitor import CONSOLE

    setup_logging()
    if args.devices < 1:
        raise ConfigError(f"--devices must be >= 1, got {args.devices}")
    if args.devices > 1:
        from kp3d.methods import REGISTRY

        resolve_request(args)  # settings errors once, here, rather than from every process
        argv = _without_devices(args._argv)
        return distributed.launch_local(args.devices, _launched, argv, dict(REGISTRY))
    ctx = distributed.context_from_env()
    if not ctx.is_main:
        logging.getLogger("kp3d").setLevel(logging.ERROR)
    request = resolve_request(args)
    device = distributed.device_for(request["device"], ctx)
    created = distributed.init(ctx, device)
    try:
        dataset = distributed.main_first(
            ctx, lambda: open_training_data(request, split=args.split, strict=args.strict)
        )
        result = train(
            request["method"],
            dataset,
            args.out,
            method_config=fill_categories(request, dataset),
            train_config=request["train"],
            resume=args.resume,
            data_info={
                "path": str(request["data"].resolve()),
                "size": request["size"],
                "format": request["format"],
            },
        )
    finally:
        distributed.shutdown(created)
    if not ctx.is_main:
        return 0
    loss = f", final loss {result.final_loss:.4g}" if result.final_loss is not None else ""
    skipped = f", {result.skipped_steps} non-finite steps skipped" if result.skipped_steps else ""
    devices = f" on {ctx.world_size} processes" if ctx.enabled else ""
    CONSOLE.print(
        f"trained {request['method']} for {result.steps} steps{devices} in "
        f"{result.elapsed_s / 60:.1f} min ({result.images_per_s:.0f} images/s{loss}{skipped})\n"
        f"run folder: {args.out}\nnext: kp3d evaluate --run {args.out} --data DIR   |   "
        f"kp3d report --run {args.out} --out report.html",
        highlight=False,
    )
    return 0
