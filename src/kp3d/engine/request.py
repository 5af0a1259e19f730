"""One training request, resolved once: :class:`TrainRequest` and :func:`resolve_request`.

A request is what the user asked for, from three sources, later winning::

    class defaults < the method's registry overrides/train_defaults < --config FILE < flags

or, for ``--resume`` of a run folder that holds a run::

    the run's stored config < --config FILE < flags

The result is checked (types, values, unknown keys) before any data is opened or anything is
written. Settings read from the data (the number of keypoints or categories) are filled later,
by the method's :attr:`~kp3d.methods.MethodSpec.configure` hook once the data is open
(:func:`run_request`, through :func:`kp3d.engine.train`).

A config file is JSON or TOML with optional ``method``, ``data`` (a path, or a table with
``path``, ``size``, ``format``), a ``model`` table (method settings) and a ``train`` table
(:class:`~kp3d.engine.TrainConfig` settings); a run's own ``config.json`` is a valid config file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kp3d.config import config_from_dict, field_defaults, load_config_file, merge_values
from kp3d.data.inputs import SIZE_FIELDS
from kp3d.engine.config import TrainConfig, budget_values
from kp3d.engine.run import (
    CONFIG_FILE,
    RUN_FORMAT,
    method_spec,
    migrate_run_config,
    read_run_config,
    resolve_method_config,
    resolve_train_config,
)
from kp3d.errors import ConfigError, UserError
from kp3d.methods import MethodSpec

KEYPOINT_FIELDS = ("k", "n_keypoints", "num_keypoints")
"""Method config fields that ``--k`` sets (the first one the method has)."""
FILE_KEYS = ("method", "data", "model", "train")
"""Top-level keys of a config file (besides the run metadata of a ``config.json``)."""
_RUN_METADATA_KEYS = ("format", "format_version", "provenance")


@dataclass(frozen=True)
class Flags:
    """What the command line gave (None / empty: not given)."""

    out: Path
    method: str | None = None
    config: Path | None = None
    resume: bool = False
    no_3d: bool = False
    data: Path | None = None
    format: str | None = None
    split: str | None = None
    size: int | None = None
    k: int | None = None
    strict: bool = False
    devices: int = 1
    model: Mapping[str, Any] = field(default_factory=dict)
    """Method settings by field name."""
    train: Mapping[str, Any] = field(default_factory=dict)
    """TrainConfig settings by field name."""


@dataclass(frozen=True)
class DataLocation:
    """Where the training data is and how to open it (:meth:`kp3d.data.inputs.Inputs.open`)."""

    path: Path
    format: str | None = None
    split: str | None = None
    size: int | None = None
    """Image side length the images are resized to (None: their own size)."""
    strict: bool = False

    def info(self) -> dict[str, Any]:
        """What ``config.json`` records about the data."""
        return {"path": str(self.path.resolve()), "size": self.size, "format": self.format}


@dataclass(frozen=True)
class TrainRequest:
    """A resolved, checked training request.

    Attributes:
        method: the registry name (after ``--no-3d``).
        spec: its registry entry.
        method_config: the method's config (settings read from the data still unset; see
            :attr:`~kp3d.methods.MethodSpec.configure`).
        train_config: the training config.
        data: the training data.
        out: the run folder.
        resume: continue the run in ``out``.
        devices: local processes to train with.
        stored: the run's stored ``config.json`` when resuming an existing run, else None.
    """

    method: str
    spec: MethodSpec
    method_config: Any
    train_config: TrainConfig
    data: DataLocation
    out: Path
    resume: bool = False
    devices: int = 1
    stored: Mapping[str, Any] | None = None


# --------------------------------------------------------------------------------------------
# Resolution


def file_settings(path: Path) -> dict[str, Any]:
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
    if doc.get("format") == RUN_FORMAT:  # a run's config.json, maybe of an older format
        doc = migrate_run_config(doc, path)
    return doc


def _data_entry(data: Any) -> tuple[str | None, int | None, str | None]:
    """(path, size, format) from a config file's ``data`` entry."""
    if isinstance(data, str):
        return data, None, None
    if isinstance(data, Mapping):
        return data.get("path"), data.get("size"), data.get("format")
    return None, None, None


def _stored_run(out: Path, resume: bool) -> dict[str, Any] | None:
    return read_run_config(out) if resume and (out / CONFIG_FILE).is_file() else None


def requested_method(
    *, method: str | None, config: Path | None, resume: bool, out: Path | None, no_3d: bool
) -> str | None:
    """The method a command line asks for, to build its parser before anything is checked:
    ``method``, else the config file's, else (resuming) the run's, with ``no_3d`` its 2D-only
    entry. Unreadable files give None here; :func:`resolve_request` reports them."""
    name = method
    try:
        if name is None and config is not None:
            name = load_config_file(config).get("method")
        if name is None and resume and out is not None and (out / CONFIG_FILE).is_file():
            name = load_config_file(out / CONFIG_FILE).get("method")
    except UserError:
        return None
    if not isinstance(name, str):
        return None
    if no_3d:
        try:
            return _without_3d(name)
        except (ConfigError, ValueError):
            return name
    return name


def _without_3d(method: str) -> str:
    """``--no-3d``: the registry entry that is ``method`` with its 3D part off (its spec's
    ``without_3d``)."""
    from kp3d.methods import REGISTRY

    variant = method_spec(method).without_3d
    if variant is None:
        having = [n for n in REGISTRY if _has_2d_variant(n)]
        raise ConfigError(
            f"--no-3d: method {method!r} has no 2D-only variant (it applies to {', '.join(having)})"
        )
    return variant


def _has_2d_variant(name: str) -> bool:
    try:
        return method_spec(name).without_3d is not None
    except (ConfigError, ValueError, ImportError):
        return False


def first_field(spec: MethodSpec, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` that the method's config has."""
    fields = field_defaults(spec.config_cls)
    return next((n for n in names if n in fields), None)


def resolve_request(flags: Flags) -> TrainRequest:
    """The one resolution of a training request (see the module doc); nothing is opened or
    written.

    Raises:
        ConfigError / UserError: no method or no data, unknown keys, impossible values; the
            message names the file or flag.
    """
    doc = file_settings(flags.config) if flags.config else {}
    source = str(flags.config) if flags.config else "command line"
    stored = _stored_run(flags.out, flags.resume)

    method = flags.method or doc.get("method") or (stored or {}).get("method")
    if not method:
        raise ConfigError("no method: pass --method NAME (or set method in the --config file)")
    if flags.no_3d:
        method = _without_3d(method)
    spec = method_spec(method)

    file_model, file_train = dict(doc.get("model", {})), dict(doc.get("train", {}))
    # Check the file on its own first, so its errors name it.
    if file_model:
        config_from_dict(spec.config_cls, {**spec.overrides, **file_model}, source=source)
    if file_train:
        config_from_dict(TrainConfig, {**spec.train_defaults, **file_train}, source=source)

    cli_model, cli_train = dict(flags.model), dict(flags.train)
    if flags.k is not None and flags.k < 2:
        raise ConfigError(f"--k: at least 2 keypoints are needed, got {flags.k}")
    if flags.size is not None and flags.size < 1:
        raise ConfigError(f"--size: must be a positive number of pixels, got {flags.size}")
    if flags.k is not None:
        k_field = first_field(spec, KEYPOINT_FIELDS)
        if k_field is None:
            raise ConfigError(f"--k: method {method!r} has no keypoint-count setting")
        cli_model[k_field] = flags.k
    data_path, data_size, data_format = _data_entry(doc.get("data"))
    size = flags.size if flags.size is not None else data_size
    size_field = first_field(spec, SIZE_FIELDS)
    if flags.size is not None and size_field is not None:
        cli_model[size_field] = flags.size

    model_values = merge_values(file_model, cli_model)
    train_values = budget_values(merge_values(file_train, cli_train))
    if stored is None:
        mcfg = resolve_method_config(spec, model_values, source="command line")
        tcfg = resolve_train_config(spec, train_values, source="command line")
        if size is None:
            size = spec.inputs.image_size(mcfg)
    else:
        # What may change on resume is checked by the engine, against the stored run.
        mcfg = config_from_dict(
            spec.config_cls, {**stored["model"], **model_values}, source="command line"
        )
        tcfg = config_from_dict(
            TrainConfig, {**stored["train"], **train_values}, source="command line"
        )
        stored_data = stored.get("data") or {}
        data_path = data_path or stored_data.get("path")
        size = size if size is not None else stored_data.get("size")
        data_format = data_format or stored_data.get("format")

    data = flags.data or data_path
    if data is None:
        raise ConfigError("no data: pass --data DIR (or set data in the --config file)")
    return TrainRequest(
        method=method,
        spec=spec,
        method_config=mcfg,
        train_config=tcfg,
        data=DataLocation(
            Path(data),
            format=flags.format or data_format,
            split=flags.split,
            size=size,
            strict=flags.strict,
        ),
        out=flags.out,
        resume=flags.resume,
        devices=flags.devices,
        stored=stored,
    )


# --------------------------------------------------------------------------------------------
# Running


def open_training_data(request: TrainRequest) -> Any:
    """The request's dataset, opened as the method reads it (:attr:`MethodSpec.inputs`)."""
    d = request.data
    return request.spec.inputs.open_training(
        d.path, format=d.format, split=d.split, size=d.size, strict=d.strict
    )


def run_request(request: TrainRequest, *, progress_bar: bool | None = None) -> Any:
    """Train ``request`` in this process (one rank of a multi-process run under a launcher's
    environment): open the data (rank 0 first), then :func:`kp3d.engine.train`.

    Returns:
        The :class:`~kp3d.engine.TrainResult`.
    """
    from kp3d.engine import distributed
    from kp3d.engine.loop import train

    ctx = distributed.context_from_env()
    device = distributed.device_for(request.train_config.device, ctx)
    created = distributed.init(ctx, device)
    try:
        dataset = distributed.main_first(ctx, lambda: open_training_data(request))
        return train(
            request.method,
            dataset,
            request.out,
            method_config=request.method_config,
            train_config=request.train_config,
            resume=request.resume,
            data_info=request.data.info(),
            progress_bar=progress_bar,
        )
    finally:
        distributed.shutdown(created)


__all__ = [
    "KEYPOINT_FIELDS",
    "DataLocation",
    "Flags",
    "TrainRequest",
    "open_training_data",
    "requested_method",
    "resolve_request",
    "run_request",
]
