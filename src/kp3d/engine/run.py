"""The run folder: its config, checkpoints and weights, and :func:`load_run` for everyone after
training (infer, evaluate, report). The layout is described in :mod:`kp3d.engine`."""

from __future__ import annotations

import datetime
import json
import platform
import random
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import nn

import kp3d
from kp3d.config import config_from_dict, config_to_dict
from kp3d.engine.atomic import atomic_dir, atomic_path, atomic_write_json, remove_stale_temporaries
from kp3d.engine.config import TrainConfig, budget_values
from kp3d.errors import ConfigError, UserError
from kp3d.methods import MethodModel, MethodSpec, get_method

RUN_FORMAT = "kp3d-run"
RUN_FORMAT_VERSION = 2
"""Version of the run folder layout; bumped when an older kp3d could not read a new folder.

1 -> 2: learning-rate multipliers moved from parametrisations to optimizer groups (autolink3d's
``edge_logits``, stored divided by ``skeleton_lr_scale``, became ``skeleton_logits``; the
methods convert format-1 weights when they load them, see their ``_load_from_state_dict``), and
checkpoints record the optimizer's group layout (format-1 optimizer states are regrouped on
resume, :func:`kp3d.engine.loop.regroup_optimizer_state`). Format-1 folders load and resume."""

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"
EVENTS_FILE = "events.jsonl"
RESULT_FILE = "result.json"
CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "state.pt"
_CKPT_RE = re.compile(r"^step-(\d+)$")


# --------------------------------------------------------------------------------------------
# Configs


def method_spec(name: str) -> MethodSpec:
    """The registered method ``name``; an unknown name is a :class:`ConfigError` listing them."""
    try:
        return get_method(name)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def resolve_method_config(
    spec: MethodSpec, values: Mapping[str, Any] | None, *, source: str
) -> Any:
    """The method's config: class defaults < the registry entry's overrides < ``values``."""
    return config_from_dict(spec.config_cls, {**spec.overrides, **(values or {})}, source=source)


def resolve_train_config(
    spec: MethodSpec, values: Mapping[str, Any] | TrainConfig | None, *, source: str
) -> TrainConfig:
    """The training config: TrainConfig defaults < the method's ``train_defaults`` < ``values``;
    ``minutes`` without ``steps`` in ``values`` means no step limit (:func:`budget_values`), as
    on the command line.

    A :class:`TrainConfig` instance is taken as complete and returned unchanged.
    """
    if isinstance(values, TrainConfig):
        return values
    given = budget_values(values or {})
    return config_from_dict(TrainConfig, {**spec.train_defaults, **given}, source=source)


def git_revision() -> str | None:
    """The git commit of the kp3d sources (``-dirty`` with local changes), if in a checkout."""
    src = Path(kp3d.__file__).resolve().parent

    def git(*args: str) -> str:
        run = subprocess.run(
            ["git", *args], cwd=src, capture_output=True, text=True, timeout=5, check=True
        )
        return run.stdout.strip()

    try:
        rev = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}-dirty" if dirty else rev or None


def provenance(world_size: int = 1) -> dict[str, Any]:
    """What produced a run: versions, git revision, host and time."""
    return {
        "kp3d_version": kp3d.__version__,
        "git_revision": git_revision(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "world_size": world_size,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def write_run_config(
    run_dir: Path,
    *,
    method: str,
    method_config: Any,
    train_config: TrainConfig,
    data: Mapping[str, Any] | None,
    world_size: int = 1,
) -> dict[str, Any]:
    """Write ``RUN/config.json`` (atomically) and return what was written."""
    doc = {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "method": method,
        "model": config_to_dict(method_config),
        "train": config_to_dict(train_config),
        "data": dict(data) if data is not None else None,
        "provenance": provenance(world_size),
    }
    atomic_write_json(run_dir / CONFIG_FILE, doc)
    return doc


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """``RUN/config.json``, checked to be a kp3d run of a layout this version reads.

    Raises:
        UserError: no such file, not JSON, not a kp3d run, or written by a newer layout.
    """
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{path}: no such file; {run_dir} is not a kp3d run folder")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable run config ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != RUN_FORMAT:
        raise UserError(f'{path}: not a kp3d run config (no "format": "{RUN_FORMAT}")')
    version = doc.get("format_version")
    written_by = (doc.get("provenance") or {}).get("kp3d_version", "unknown")
    if not isinstance(version, int) or version > RUN_FORMAT_VERSION:
        raise UserError(
            f"{path}: run format version {version!r} (written by kp3d {written_by}); this kp3d "
            f"{kp3d.__version__} reads versions up to {RUN_FORMAT_VERSION}; upgrade kp3d"
        )
    for key in ("method", "model", "train"):
        if key not in doc:
            raise UserError(f"{path}: missing key {key!r}")
    return migrate_run_config(doc, path)


def migrate_run_config(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    """A run config of this or an older run format with its method settings in this version's
    keys (the method's :attr:`~kp3d.methods.MethodSpec.migrate`, also applied to the current
    format: options can be removed without a new format); ``format_version`` stays the stored
    one (a resumed run updates it). Unknown methods are left to the caller to report.

    Raises:
        ConfigError: settings the method cannot carry over; the message names the file and
            the format version.
    """
    version = doc.get("format_version")
    if not isinstance(version, int) or version > RUN_FORMAT_VERSION:
        return doc
    try:
        spec = get_method(doc.get("method", ""))
    except ValueError:
        return doc
    try:
        model = spec.migrate(dict(doc.get("model") or {}), version)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return {**doc, "model": model}


def stored_configs(doc: Mapping[str, Any], path: Path) -> tuple[MethodSpec, Any, TrainConfig]:
    """The method spec and both configs of a stored run config, checked against this version."""
    written_by = (doc.get("provenance") or {}).get("kp3d_version", "unknown")
    try:
        spec = method_spec(doc["method"])
        method_config = config_from_dict(spec.config_cls, doc["model"], source=str(path))
        train_config = config_from_dict(TrainConfig, doc["train"], source=str(path))
    except ConfigError as e:
        raise ConfigError(
            f"{e} (the run was written by kp3d {written_by}; this is kp3d {kp3d.__version__})"
        ) from None
    return spec, method_config, train_config


# --------------------------------------------------------------------------------------------
# Weights and checkpoints


def save_weights(path: Path, module: nn.Module, metadata: Mapping[str, str] | None = None) -> None:
    """``module``'s state dict as safetensors, atomically (shared and channels-last tensors
    are handled)."""
    with atomic_path(path) as tmp:
        safetensors.torch.save_model(module, str(tmp), metadata=dict(metadata or {}))


def load_weights(path: Path, module: nn.Module) -> None:
    """Load safetensors weights into ``module`` strictly.

    Raises:
        UserError: missing, truncated or corrupt file, or weights of another architecture; the
            message names the file.
    """
    if not path.is_file():
        raise UserError(f"{path}: no such weights file")
    try:
        missing, unexpected = safetensors.torch.load_model(module, str(path), strict=False)
    except SafetensorError as e:
        raise UserError(f"{path}: truncated or corrupt weights file ({e})") from None
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise UserError(f"{path}: the weights do not fit the configured model ({first})") from None
    if missing or unexpected:
        detail = []
        # safetensors documents lists but returns sets (0.8): sort for a stable message
        for word, keys in (("missing", sorted(missing)), ("unexpected", sorted(unexpected))):
            if keys:
                detail.append(f"{word} {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}")
        raise UserError(
            f"{path}: the weights do not fit the configured model ({'; '.join(detail)})"
        )


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as ``(step, folder)``, oldest first."""
    folder = run_dir / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _CKPT_RE.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def save_checkpoint(
    run_dir: Path, step: int, model: nn.Module, state: Mapping[str, Any], *, keep: int = 1
) -> Path:
    """Write checkpoint ``step`` (weights + training state) as one atomic folder.

    The folder appears complete or not at all, so a kill at any moment leaves the previous
    checkpoint usable; older checkpoints beyond the newest ``keep`` are then deleted.
    """
    folder = run_dir / CHECKPOINTS_DIR
    final = folder / f"step-{step:08d}"
    if final.exists():  # written before a roll-back or a kill; replaced by this one
        shutil.rmtree(final)
    with atomic_dir(final) as tmp:
        safetensors.torch.save_model(model, str(tmp / WEIGHTS_FILE), metadata={"step": str(step)})
        torch.save(dict(state), tmp / STATE_FILE)
    for _, old in checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(folder: Path, model: nn.Module, *, device: torch.device) -> dict[str, Any]:
    """Load a checkpoint's weights into ``model`` and return its training state.

    Raises:
        UserError: a missing, truncated or mismatched file; the message names it.
    """
    load_weights(folder / WEIGHTS_FILE, model)
    path = folder / STATE_FILE
    if not path.is_file():
        raise UserError(f"{path}: no such file (incomplete checkpoint)")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 (a damaged zip/pickle raises many different types)
        raise UserError(
            f"{path}: truncated or corrupt training state ({type(e).__name__}: {e})"
        ) from None


def clean_partial_writes(run_dir: Path) -> None:
    """Remove temporaries of writes interrupted by a kill (only the writer may call this)."""
    remove_stale_temporaries(run_dir)
    remove_stale_temporaries(run_dir / CHECKPOINTS_DIR)


# --------------------------------------------------------------------------------------------
# Random streams


def capture_rng(device: torch.device) -> dict[str, Any]:
    """Every global random stream: torch (CPU and, on CUDA, the device's), numpy, python."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        # As plain tensors and numbers: checkpoints are read with torch.load(weights_only=True).
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: Mapping[str, Any], device: torch.device) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"].cpu())
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].cpu().numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), numpy and python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


# --------------------------------------------------------------------------------------------
# Loading a trained run


class LoadedRun(NamedTuple):
    """A trained run, ready for inference."""

    spec: MethodSpec
    method_name: str
    method_config: Any
    train_config: TrainConfig
    model: MethodModel
    """In eval mode, on the requested device, with the run's saved weights (EMA when enabled)."""
    run_dir: Path
    config: dict[str, Any]
    """The whole ``config.json`` (with ``data`` and ``provenance``)."""


def load_run(run_dir: str | Path, *, device: str | torch.device = "cpu") -> LoadedRun:
    """Load ``RUN/config.json`` and ``RUN/model.safetensors`` into the method's model.

    Raises:
        UserError / ConfigError: not a run folder, a config from an incompatible version or an
            unknown method, missing/truncated/mismatched weights; messages name the file.
    """
    run_dir = Path(run_dir)
    doc = read_run_config(run_dir)
    spec, method_config, train_config = stored_configs(doc, run_dir / CONFIG_FILE)
    model = spec.build(method_config)
    weights = run_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise UserError(f"{weights}: no such file; has {run_dir} written its first checkpoint yet?")
    load_weights(weights, model)
    model.to(device).eval()
    return LoadedRun(spec, doc["method"], method_config, train_config, model, run_dir, doc)


__all__ = [
    "CHECKPOINTS_DIR",
    "CONFIG_FILE",
    "EVENTS_FILE",
    "METRICS_FILE",
    "RESULT_FILE",
    "WEIGHTS_FILE",
    "LoadedRun",
    "capture_rng",
    "checkpoints",
    "load_checkpoint",
    "load_run",
    "migrate_run_config",
    "read_run_config",
    "restore_rng",
    "save_checkpoint",
    "seed_everything",
    "write_run_config",
]
