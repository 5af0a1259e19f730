"""The training loop shared by every method: :func:`train`."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Self

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import Dataset

from kp3d.config import config_from_dict, config_to_dict
from kp3d.data.schema import TENSOR_FIELDS, Sample, collate
from kp3d.engine import distributed
from kp3d.engine.atomic import atomic_write_json
from kp3d.engine.config import RESUME_MAY_CHANGE, TrainConfig, lr_factor, progress
from kp3d.engine.data import make_loader
from kp3d.engine.distributed import DistContext
from kp3d.engine.monitor import MetricsLog, ProgressDisplay, TensorBoard, read_metrics
from kp3d.engine.run import (
    CONFIG_FILE,
    EVENTS_FILE,
    METRICS_FILE,
    RESULT_FILE,
    RUN_FORMAT_VERSION,
    WEIGHTS_FILE,
    capture_rng,
    checkpoints,
    clean_partial_writes,
    load_checkpoint,
    method_spec,
    read_run_config,
    resolve_method_config,
    resolve_train_config,
    restore_rng,
    save_checkpoint,
    save_weights,
    seed_everything,
    stored_configs,
    write_run_config,
)
from kp3d.errors import ConfigError, DataError, UserError
from kp3d.methods import Diagnosis, MethodModel, MethodSpec, ParamGroup, default_param_groups

log = logging.getLogger("kp3d.engine")


class TrainResult(NamedTuple):
    """What :func:`train` did."""

    run_dir: Path
    model: MethodModel
    """The trained model as saved to ``RUN/model.safetensors`` (the EMA weights when enabled),
    in eval mode."""
    steps: int
    """Steps done in total (skipped ones included), over every session of the run."""
    skipped_steps: int
    """Steps skipped because the loss or the gradient was not finite."""
    rollbacks: int
    """Roll-backs to the last checkpoint after repeated non-finite steps."""
    elapsed_s: float
    """Training time over every session (start-up excluded), on the clock of ``clock``."""
    images_per_s: float
    """Training throughput of this session (samples per second over all devices)."""
    final_loss: float | None
    """Mean loss of the last logging window (None when no step ran in this session)."""
    data_fields: tuple[str, ...] = ()
    """The tensor fields of the training samples (what the data holds, labels included)."""


@dataclass
class _Counters:
    """Training state besides weights and optimizer; saved in every checkpoint."""

    step: int = 0
    samples: int = 0
    """Position in the data stream (samples drawn over all ranks); keeps advancing through
    roll-backs, so a roll-back sees fresh batches."""
    skipped: int = 0
    rollbacks: int = 0
    lr_scale: float = 1.0
    elapsed_s: float = 0.0


class _Stepper(nn.Module):
    """``forward`` = the method's ``training_step``: DDP synchronises gradients only for calls
    that go through ``forward``."""

    def __init__(self, model: MethodModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Sample, step: int) -> Any:
        return self.model.training_step(batch, step)


# --------------------------------------------------------------------------------------------
# Set-up helpers


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware (where autocast to bf16 pays off)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        # torch's own (private) probes where this version has them, else the kernel's flags.
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        if any(getattr(torch.cpu, name, lambda: False)() for name in checks):
            return True
        try:
            with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
                flags = next((line for line in f if line.startswith("flags")), "").split()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


def optimizer_groups(model: MethodModel, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups from the model's :meth:`~kp3d.methods.MethodModel.param_groups`.

    Each group carries its ``lr_scale`` (the loop multiplies the scheduled learning rate by it)
    and the run's ``weight_decay`` where the group takes decay (0 elsewhere).

    Raises:
        ValueError: a trainable parameter in no group or in two (a model's hook is wrong).
    """
    groups = model.param_groups()
    seen: dict[int, str] = {}
    for g in groups:
        for p in g.params:
            if id(p) in seen:
                raise ValueError(f"parameter in groups {seen[id(p)]!r} and {g.name!r}")
            seen[id(p)] = g.name
    left = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in seen]
    if left:
        raise ValueError(f"trainable parameters in no param group: {', '.join(left[:5])}")
    return [
        {
            "params": list(g.params),
            "weight_decay": weight_decay if g.weight_decay else 0.0,
            "lr_scale": g.lr_scale,
            "name": g.name,
        }
        for g in groups
    ]


def regroup_optimizer_state(
    saved: Mapping[str, Any], old_groups: list[ParamGroup], optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """An optimizer state saved with the parameters grouped as ``old_groups``, re-indexed for
    ``optimizer``'s groups (the same parameters, grouped otherwise); the group settings are
    ``optimizer``'s own. Per-parameter state (Adam's moments, step) moves with its parameter.

    Raises:
        ValueError: the saved state does not hold the parameters of ``old_groups``.
    """
    old = [p for g in old_groups for p in g.params]
    sizes = [len(g["params"]) for g in saved["param_groups"]]
    if sum(sizes) != len(old) or sizes != [len(g.params) for g in old_groups]:
        raise ValueError(f"saved optimizer groups of sizes {sizes} do not fit the model")
    current = optimizer.state_dict()
    flat = [p for g in optimizer.param_groups for p in g["params"]]
    new_index = {id(p): i for i, p in enumerate(flat)}
    old_ids = [i for g in saved["param_groups"] for i in g["params"]]
    state = {
        new_index[id(p)]: saved["state"][i]
        for p, i in zip(old, old_ids, strict=True)
        if i in saved["state"]
    }
    return {"state": state, "param_groups": current["param_groups"]}


def _to_device(batch: Sample, device: torch.device, channels_last: bool) -> Sample:
    batch = batch.to(device)
    if channels_last:
        changes = {}
        for f in TENSOR_FIELDS:
            v = getattr(batch, f)
            if v is not None and v.ndim == 4 and v.is_floating_point():
                changes[f] = v.contiguous(memory_format=torch.channels_last)
        batch = batch.replace(**changes)
    return batch


def configure(spec: MethodSpec, config: Any, dataset: Dataset[Sample], where: str) -> Any:
    """``spec.configure(config, dataset)``: the settings read from the data; its errors name
    the data (``where``)."""
    try:
        return spec.configure(config, dataset)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}" if where else str(e)) from None


def diagnose(model: MethodModel, dataset: Dataset[Sample], device: torch.device) -> Diagnosis:
    """``model``'s :meth:`~kp3d.methods.base.MethodModel.diagnose` in eval mode on up to
    ``model.diagnose_samples`` training samples spread evenly over ``dataset`` (the same ones
    every time); logs its warnings. The model's mode is restored."""
    n = len(dataset)  # type: ignore[arg-type]
    want = min(model.diagnose_samples, n)
    if want <= 0:
        return Diagnosis({}, [])
    indices = [i * n // want for i in range(want)]
    getitems = getattr(dataset, "__getitems__", None)
    batch = collate(getitems(indices) if getitems else [dataset[i] for i in indices])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            result = model.diagnose(batch.to(device))
    finally:
        model.train(was_training)
    for warning in result.warnings:
        log.warning("%s", warning)
    return result


def _changes(old: Any, new: Any, allowed: frozenset[str] = frozenset()) -> list[str]:
    a, b = config_to_dict(old), config_to_dict(new)
    return [f"{k} {a[k]!r} -> {b[k]!r}" for k in a if a[k] != b[k] and k not in allowed]


def _resolve(
    spec: MethodSpec,
    method: str,
    run_dir: Path,
    stored: dict[str, Any] | None,
    method_config: Any,
    train_config: TrainConfig | Mapping[str, Any] | None,
    dataset: Dataset[Sample],
    where: str,
) -> tuple[Any, TrainConfig]:
    """Both configs: fresh runs layer the user's values on the defaults, resumed runs on the
    stored configs (and may change only the budget-like fields); then the method's
    :attr:`~kp3d.methods.MethodSpec.configure` reads what it needs from the data. A config
    instance (``spec.config_cls`` / :class:`TrainConfig`) is taken as complete."""
    complete = isinstance(method_config, spec.config_cls)
    if stored is None:
        mcfg = (
            method_config
            if complete
            else resolve_method_config(spec, method_config, source="method config")
        )
        tcfg = resolve_train_config(spec, train_config, source="train config")
        return configure(spec, mcfg, dataset, where), tcfg
    path = run_dir / CONFIG_FILE
    if stored["method"] != method:
        raise UserError(
            f"{path}: this run was trained with method {stored['method']!r}, not {method!r}; "
            f"resume it with --method {stored['method']} or choose another --out"
        )
    _, old_m, old_t = stored_configs(stored, path)
    if complete:
        mcfg = method_config
    else:
        mcfg = config_from_dict(
            spec.config_cls,
            {**config_to_dict(old_m), **(method_config or {})},
            source="method config",
        )
    if isinstance(train_config, TrainConfig):
        tcfg = train_config
    else:
        tcfg = config_from_dict(
            TrainConfig, {**config_to_dict(old_t), **(train_config or {})}, source="train config"
        )
    mcfg = configure(spec, mcfg, dataset, where)
    changed = _changes(old_m, mcfg) + _changes(old_t, tcfg, RESUME_MAY_CHANGE)
    if changed:
        raise UserError(
            f"{path}: cannot resume with different settings ({'; '.join(changed)}); only "
            f"{', '.join(sorted(RESUME_MAY_CHANGE))} may change"
        )
    return mcfg, tcfg


# --------------------------------------------------------------------------------------------
# The loop


class _Window:
    """Sums of the logged values over the steps since the last log line.

    ``steps`` counts the steps, ``ok`` those not skipped (the divisor of the means), ``timed``
    those since ``t0`` in this process (fewer than ``steps`` right after a resume, when the
    window's sums come from the checkpoint).
    """

    def __init__(self) -> None:
        self.reset(time.perf_counter())

    def reset(self, now: float) -> None:
        self.t0, self.steps, self.ok, self.timed = now, 0, 0, 0
        self.sums: dict[str, float] = {}

    def add(self, values: Mapping[str, float] | None) -> None:
        self.steps += 1
        self.timed += 1
        if values is not None:
            self.ok += 1
            for k, v in values.items():
                self.sums[k] = self.sums.get(k, 0.0) + v


def train(
    method: str,
    dataset: Dataset[Sample],
    out_dir: str | Path,
    *,
    method_config: Any = None,
    train_config: TrainConfig | Mapping[str, Any] | None = None,
    resume: bool = False,
    data_info: Mapping[str, Any] | None = None,
    progress_bar: bool | None = None,
) -> TrainResult:
    """Train method ``method`` on ``dataset`` into the run folder ``out_dir``.

    Args:
        method: a name in :data:`kp3d.methods.REGISTRY`.
        dataset: a map-style dataset of :class:`Sample`; it must return the same sample for the
            same index every time (randomness belongs in the method's ``training_step``).
        out_dir: the run folder (layout in :mod:`kp3d.engine`).
        method_config: a complete method config (an instance of the spec's ``config_cls``),
            or the user's method settings by field name, resolved as class defaults < the
            registry entry's overrides < these (on resume: the stored config < these). Settings
            read from the data are then filled by the spec's ``configure``.
        train_config: a complete :class:`TrainConfig`, or the user's values by field name,
            resolved as TrainConfig defaults < the method's ``train_defaults`` < these (on
            resume: the stored config < these).
        resume: continue the run in ``out_dir`` from its last checkpoint (a folder without one
            starts from scratch). With the same seed the result equals an uninterrupted run
            (bitwise on CPU with the same thread count, for step budgets).
        data_info: what to record about the data in ``config.json`` (path, size, format).
        progress_bar: show the rich bar; default: when stderr is a terminal.

    Raises:
        UserError: ``out_dir`` already holds a run and ``resume`` is False; resuming a run of
            another method or with changed settings; damaged checkpoint files; training that
            keeps diverging after ``max_rollbacks`` roll-backs.
        ConfigError: invalid settings (raised before anything is written).
        DataError: an empty dataset.
    """
    run_dir = Path(out_dir)
    spec = method_spec(method)
    ctx = distributed.context_from_env()
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise DataError("the dataset is empty")
    stored = read_run_config(run_dir) if (run_dir / CONFIG_FILE).exists() else None
    if stored is not None and not resume:
        raise UserError(
            f"{run_dir}: already holds a run ({CONFIG_FILE}); pass --resume to continue it, or "
            "choose another --out"
        )
    where = str((data_info or {}).get("path") or "")
    mcfg, tcfg = _resolve(
        spec, method, run_dir, stored, method_config, train_config, dataset, where
    )
    if tcfg.tensorboard:
        TensorBoard.check_available()
    device = distributed.device_for(tcfg.device, ctx)
    created = distributed.init(ctx, device)
    try:
        return _train(
            spec, method, dataset, run_dir, stored, mcfg, tcfg, device, ctx, data_info, progress_bar
        )
    finally:
        distributed.shutdown(created)


def _train(
    spec: MethodSpec,
    method: str,
    dataset: Dataset[Sample],
    run_dir: Path,
    stored: dict[str, Any] | None,
    mcfg: Any,
    tcfg: TrainConfig,
    device: torch.device,
    ctx: DistContext,
    data_info: Mapping[str, Any] | None,
    progress_bar: bool | None,
) -> TrainResult:
    """:func:`train` once the settings are resolved and the process group is joined."""
    use_bf16 = tcfg.bf16 and bf16_native(device)
    if tcfg.bf16 and not use_bf16 and ctx.is_main:
        log.info("bf16: %s has no native bf16 arithmetic; training in float32", device)
    found = checkpoints(run_dir) if stored is not None else []
    distributed.barrier(ctx)  # every rank has read the folder before rank 0 writes to it
    if ctx.is_main:
        _write_config(run_dir, stored, method, mcfg, tcfg, dataset, data_info, ctx)
    distributed.barrier(ctx)
    tb = TensorBoard(run_dir / "tensorboard") if tcfg.tensorboard and ctx.is_main else None

    seed_everything(tcfg.seed)
    model = spec.build(mcfg).to(device)
    model = distributed.sync_batchnorm(model, ctx, device)
    if tcfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    window = _Window()
    s = _Session(run_dir, model, tcfg, device, ctx, window)
    rng_state = s.load(found[-1][1]) if found else None
    if found and ctx.is_main:
        log.info("resuming %s from step %d", run_dir, s.c.step)
    batches = iter(
        make_loader(
            dataset,
            batch_size=tcfg.batch_size,
            seed=tcfg.seed,
            start=s.c.samples,
            workers=tcfg.workers,
            rank=ctx.rank,
            world_size=ctx.world_size,
            pin_memory=device.type == "cuda",
        )
    )
    # Random streams are restored (or captured in the first checkpoint) only now: building the
    # model, optimizer and loader must not shift them between an interrupted and a whole run.
    if rng_state is not None:
        restore_rng(rng_state, device)
    else:
        if ctx.enabled:
            # Initialisation used the common seed; each rank's own randomness must differ.
            seed_everything((tcfg.seed + 7919 * ctx.rank) % 2**32)
        s.checkpoint()

    global_batch = tcfg.batch_size * ctx.world_size
    if ctx.is_main:
        log.info(
            "training %s on %d samples into %s: %s, batch %d x %d device(s), lr %g, %s, bf16 %s, "
            "channels-last %s",
            method,
            len(dataset),
            run_dir,  # type: ignore[arg-type]
            _budget(tcfg),
            tcfg.batch_size,
            ctx.world_size,
            tcfg.lr,
            device,
            "on" if use_bf16 else "off",
            "on" if tcfg.channels_last else "off",
        )
    with contextlib.ExitStack() as files:
        metrics = events = None
        keep = s.c.step if found else None
        if ctx.is_main:
            metrics = files.enter_context(
                contextlib.closing(MetricsLog(run_dir / METRICS_FILE, keep_until_step=keep))
            )
            events = files.enter_context(
                contextlib.closing(MetricsLog(run_dir / EVENTS_FILE, keep_until_step=keep))
            )
        if tb is not None:
            files.enter_context(contextlib.closing(tb))
        display = files.enter_context(
            ProgressDisplay(
                steps=tcfg.steps, minutes=tcfg.minutes, enabled=progress_bar, show=ctx.is_main
            )
        )
        last_loss = _last_loss(run_dir) if found and ctx.is_main else None
        consecutive, session_steps = 0, 0
        logged, lr = s.c.step, tcfg.lr
        clock = time.process_time if tcfg.clock == "cpu" else time.perf_counter
        session_t0, elapsed0 = clock(), s.c.elapsed_s

        def elapsed() -> float:
            return elapsed0 + clock() - session_t0

        stop = files.enter_context(_StopRequest())

        def emit_row() -> dict[str, Any]:
            """The window's log row, written to the logs (rank 0); the window starts afresh."""
            row = _log_row(window, s.c, lr, global_batch, ctx)
            if metrics is not None:
                metrics.write(row)
            if tb is not None:
                tb.write(row)
            window.reset(time.perf_counter())
            return row

        def emit_last_row() -> float | None:
            """The row of the steps since the last logged one, if any: its loss."""
            return emit_row()["loss"] if s.c.step != logged and window.steps else None

        def budget_left() -> tuple[bool, bool]:
            """(budget left, stop requested), the same on every rank (one collective a step):
            rank 0's clock decides the time budget, any rank's signal stops them all."""
            flags = torch.tensor(
                [
                    float(
                        tcfg.minutes is not None and ctx.is_main and elapsed() >= 60 * tcfg.minutes
                    ),
                    float(bool(stop.signal_name)),
                ]
            )
            distributed.all_reduce_(ctx, flags, "max")
            steps_left = tcfg.steps is None or s.c.step < tcfg.steps
            return steps_left and not bool(flags[0]), bool(flags[1])

        while (left := budget_left())[0]:
            if left[1]:
                # Ctrl-C / SIGTERM: keep everything done so far, then stop like an interrupt.
                emit_last_row()
                if s.saved_step != s.c.step:
                    s.checkpoint()
                display.update(
                    s.c.step, s.c.elapsed_s, loss=last_loss, images_per_s=None, force=True
                )
                # Another rank was signalled: the launcher stops every rank with SIGTERM.
                raise TrainingInterrupted(run_dir, s.c.step, stop.signal_name or "SIGTERM")
            batch = _to_device(next(batches), device, tcfg.channels_last)
            s.c.samples += global_batch
            lr = (
                tcfg.lr
                * s.c.lr_scale
                * lr_factor(tcfg, s.c.step, progress(tcfg, s.c.step, elapsed()))
            )
            for group, scale in zip(s.optimizer.param_groups, s.lr_scales, strict=True):
                group["lr"] = lr * scale
            s.model.on_step(s.c.step)
            values = s.step(batch, use_bf16)
            window.add(values)
            if values is not None:
                consecutive = 0
            else:
                s.c.skipped += 1
                consecutive += 1
                if events is not None:
                    log.warning(
                        "step %d: non-finite loss or gradient; step skipped (%d in a row)",
                        s.c.step,
                        consecutive,
                    )
                    events.write(
                        {"step": s.c.step, "event": "nonfinite", "consecutive": consecutive}
                    )
            s.c.step += 1
            session_steps += 1
            s.c.elapsed_s = elapsed()

            if consecutive >= tcfg.max_nonfinite:
                s.rollback(events)
                consecutive = 0
                continue
            ips = None
            if s.c.step % tcfg.log_every == 0:
                logged = s.c.step
                row = emit_row()
                last_loss = row["loss"] if row["loss"] is not None else last_loss
                ips = row["images_per_s"]
            display.update(s.c.step, s.c.elapsed_s, loss=last_loss, images_per_s=ips)
            if s.c.step % tcfg.ckpt_every == 0:
                s.checkpoint()
        # The last step is always logged, also when the run ends between two log_every rows.
        last_loss = emit_last_row() or last_loss
        if s.saved_step != s.c.step:
            s.checkpoint()
        display.update(s.c.step, s.c.elapsed_s, loss=last_loss, images_per_s=None, force=True)

    session_s = time.perf_counter() - session_t0
    images_per_s = session_steps * global_batch / session_s if session_steps else 0.0
    if ctx.is_main:
        # Eval mode needs no other rank (no synchronised statistics), so rank 0 checks alone.
        diagnosis = diagnose(s.inference_module(), dataset, device)  # type: ignore[arg-type]
        atomic_write_json(
            run_dir / RESULT_FILE,
            {
                "finished": True,
                "steps": s.c.step,
                "skipped_steps": s.c.skipped,
                "rollbacks": s.c.rollbacks,
                "elapsed_s": round(s.c.elapsed_s, 3),
                "images_per_s_last_session": round(images_per_s, 2),
                "final_loss": last_loss,
                "world_size": ctx.world_size,
                "diagnostics": diagnosis.values,
                "warnings": diagnosis.warnings,
            },
        )
    distributed.barrier(ctx)
    return TrainResult(
        run_dir=run_dir,
        model=s.inference_module().eval(),
        steps=s.c.step,
        skipped_steps=s.c.skipped,
        rollbacks=s.c.rollbacks,
        elapsed_s=s.c.elapsed_s,
        images_per_s=images_per_s,
        final_loss=last_loss,
        data_fields=dataset[0].present() if len(dataset) else (),  # type: ignore[arg-type]
    )


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by SIGINT (Ctrl-C) or SIGTERM after writing a checkpoint at ``step``."""

    def __init__(self, run_dir: Path, step: int, signal_name: str) -> None:
        super().__init__(f"{signal_name}: checkpoint of step {step} written to {run_dir}")
        self.run_dir, self.step, self.signal_name = run_dir, step, signal_name


class _StopRequest:
    """SIGINT and SIGTERM ask the loop to stop at the next step boundary (a second signal
    interrupts at once). Handlers are only installed from the main thread."""

    def __init__(self) -> None:
        self.signal_name = ""
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal_name = signal.Signals(signum).name
        for sig, old in self._old.items():  # the next signal acts at once
            signal.signal(sig, old)

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _budget(tcfg: TrainConfig) -> str:
    parts = ([f"{tcfg.steps} steps"] if tcfg.steps is not None else []) + (
        [f"{tcfg.minutes:g} min"] if tcfg.minutes is not None else []
    )
    return " or ".join(parts)


def _last_loss(run_dir: Path) -> float | None:
    """The last logged loss of a resumed run (what its summary reports if no step is left)."""
    rows = [r for r in read_metrics(run_dir / METRICS_FILE) if r.get("loss") is not None]
    return rows[-1]["loss"] if rows else None


def _write_config(
    run_dir: Path,
    stored: dict[str, Any] | None,
    method: str,
    mcfg: Any,
    tcfg: TrainConfig,
    dataset: Dataset[Sample],
    data_info: Mapping[str, Any] | None,
    ctx: DistContext,
) -> None:
    """Write ``config.json`` for a new run, or update its budget fields for a resumed one."""
    run_dir.mkdir(parents=True, exist_ok=True)
    clean_partial_writes(run_dir)
    info = {**(data_info or {}), "n_samples": len(dataset)}  # type: ignore[arg-type]
    if stored is None:
        write_run_config(
            run_dir,
            method=method,
            method_config=mcfg,
            train_config=tcfg,
            data=info,
            world_size=ctx.world_size,
        )
        return
    if stored.get("data") and info.get("path") and stored["data"].get("path") != info.get("path"):
        log.warning(
            "resuming %s on %s; it was started on %s", run_dir, info["path"], stored["data"]["path"]
        )
    started = (stored.get("provenance") or {}).get("world_size", 1)
    if started != ctx.world_size:
        log.warning(
            "resuming %s with %d process(es); it started with %d: the global batch changes from "
            "%d to %d (--batch-size is per process)",
            run_dir,
            ctx.world_size,
            started,
            tcfg.batch_size * started,
            tcfg.batch_size * ctx.world_size,
        )
    updated = {
        **stored,
        "format_version": RUN_FORMAT_VERSION,  # checkpoints from now on are of this format
        "model": config_to_dict(mcfg),  # equal to the stored settings, in this format's keys
        "train": config_to_dict(tcfg),
    }
    if updated != stored:
        atomic_write_json(run_dir / CONFIG_FILE, updated)


def _log_row(
    window: _Window, c: _Counters, lr: float, global_batch: int, ctx: DistContext
) -> dict[str, Any]:
    """Window means (over all ranks) as a metrics row."""
    keys = sorted(window.sums)
    if ctx.enabled:
        keys = sorted(set().union(*distributed.gather_objects(ctx, keys)))
        vec = torch.tensor(
            [window.sums.get(k, 0.0) for k in keys] + [float(window.ok)], dtype=torch.float64
        )
        distributed.all_reduce_(ctx, vec, "sum")
        sums, ok = dict(zip(keys, vec[:-1].tolist())), vec[-1].item()
    else:
        sums, ok = window.sums, float(window.ok)
    dt = max(time.perf_counter() - window.t0, 1e-9)
    row: dict[str, Any] = {"step": c.step, "loss": None}
    row.update({k: (sums[k] / ok if ok else None) for k in keys})
    row.update(
        {
            "lr": lr,
            "images_per_s": window.timed * global_batch / dt,
            "elapsed_s": round(c.elapsed_s, 3),
            "skipped": c.skipped,
        }
    )
    return row


class _Session:
    """The model with its optimizer, EMA and counters, and the operations on them."""

    def __init__(
        self,
        run_dir: Path,
        model: MethodModel,
        tcfg: TrainConfig,
        device: torch.device,
        ctx: DistContext,
        window: _Window,
    ) -> None:
        self.run_dir, self.model, self.tcfg, self.device, self.ctx = (
            run_dir,
            model,
            tcfg,
            device,
            ctx,
        )
        self.window = window
        self.params = [p for p in model.parameters() if p.requires_grad]
        # The fused kernel updates every tensor in one pass: 5x faster than the default
        # (foreach) AdamW on the CPU, ~10% of a lifter's step, measured on autolink3d's 109
        # parameter tensors (8.3 -> 1.7 ms).
        groups = optimizer_groups(model, tcfg.weight_decay)
        # The scales live here, not only in the optimizer's groups, which a checkpoint's
        # optimizer state replaces on resume.
        self.lr_scales = [g.pop("lr_scale") for g in groups]
        self.group_names = [g.pop("name") for g in groups]
        self.optimizer = torch.optim.AdamW(
            groups, lr=tcfg.lr, betas=tcfg.betas, fused=device.type in ("cpu", "cuda")
        )
        self.ema = (
            AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tcfg.ema), use_buffers=True)
            if tcfg.ema > 0
            else None
        )
        self.stepper: nn.Module = _Stepper(model)
        if ctx.enabled:
            self.stepper = DistributedDataParallel(
                self.stepper,
                device_ids=[device.index] if device.type == "cuda" else None,
                # Methods may leave parameters out of some steps (a 3D head switched off).
                find_unused_parameters=True,
            )
        self.c = _Counters()
        self.saved_step = -1

    def inference_module(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def step(self, batch: Sample, use_bf16: bool) -> dict[str, float] | None:
        """Forward, backward and update; the logged values, or None when skipped as non-finite.

        Backward runs even for a non-finite loss: under DDP every rank must join the gradient
        all-reduce, and the verdict is shared by all ranks.
        """
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = self.stepper(batch, self.c.step)
        loss = out.loss.float()
        loss.backward()
        max_norm = self.tcfg.grad_clip if self.tcfg.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        bad = (~torch.isfinite(loss) | ~torch.isfinite(grad_norm)).float().reshape(1)
        finite = not bool(distributed.all_reduce_(self.ctx, bad, "max").item())
        if finite:
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        if not finite:
            return None
        values = {"loss": float(loss.detach()), "grad_norm": float(grad_norm)}
        for k, v in out.logs.items():
            values[k] = float(v.detach().float()) if isinstance(v, Tensor) else float(v)
        return values

    def checkpoint(self) -> None:
        """Checkpoint on rank 0 (with every rank's random streams); all ranks wait for it."""
        rng = distributed.gather_objects(self.ctx, capture_rng(self.device))
        if self.ctx.is_main:
            state = {
                "counters": dataclasses.asdict(self.c),
                "optimizer": self.optimizer.state_dict(),
                "param_groups": self.group_names,
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "rng": rng,
                # The open logging window, so that a resumed run logs the same averages.
                "window": {
                    "sums": self.window.sums,
                    "ok": self.window.ok,
                    "steps": self.window.steps,
                },
            }
            save_checkpoint(self.run_dir, self.c.step, self.model, state)
            save_weights(
                self.run_dir / WEIGHTS_FILE, self.inference_module(), {"step": str(self.c.step)}
            )
        self.saved_step = self.c.step
        distributed.barrier(self.ctx)

    def load(self, folder: Path) -> Any:
        """Load a checkpoint; returns this rank's random streams, which the caller restores last
        (None when the checkpoint came from another number of processes: then reseeded)."""
        state = load_checkpoint(folder, self.model, device=self.device)
        try:
            counters = _Counters(**state["counters"])
            optimizer_state = state["optimizer"]
            if "param_groups" not in state:  # run format 1: the engine's two default groups
                optimizer_state = regroup_optimizer_state(
                    optimizer_state, default_param_groups(self.model), self.optimizer
                )
            elif list(state["param_groups"]) != self.group_names:
                raise ValueError(
                    f"optimizer groups {state['param_groups']} where the model has "
                    f"{self.group_names}"
                )
            self.optimizer.load_state_dict(optimizer_state)
            if self.ema is not None:
                if state["ema"] is None:
                    raise KeyError("no EMA weights")
                self.ema.load_state_dict(state["ema"])
            rngs = state["rng"]
            self.window.reset(time.perf_counter())
            self.window.sums = dict(state["window"]["sums"])
            self.window.ok, self.window.steps = state["window"]["ok"], state["window"]["steps"]
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(
                f"{folder}: checkpoint does not match this run's settings ({e})"
            ) from None
        self.c, self.saved_step = counters, counters.step
        if len(rngs) == self.ctx.world_size:
            return rngs[self.ctx.rank]
        if self.ctx.is_main:
            log.warning(
                "resuming with %d processes from a checkpoint of %d: random streams are reseeded, "
                "so the run is not bitwise equal to an uninterrupted one",
                self.ctx.world_size,
                len(rngs),
            )
        seed_everything((self.tcfg.seed + 1_000_003 * counters.step + 7919 * self.ctx.rank) % 2**32)
        return None

    def rollback(self, events: MetricsLog | None) -> None:
        """Back to the last checkpoint with a lower learning rate; the data keep advancing."""
        tcfg, old = self.tcfg, self.c
        found = checkpoints(self.run_dir)
        if old.rollbacks >= tcfg.max_rollbacks or not found:
            raise UserError(
                f"{self.run_dir}: training diverged: {tcfg.max_nonfinite} non-finite steps in a "
                "row "
                f"at step {old.step} after {old.rollbacks} roll-back(s) (learning rate "
                f"x{old.lr_scale:g}); the last good checkpoint is kept; try a lower --lr or "
                "--grad-clip"
            )
        rng = self.load(found[-1][1])
        if rng is not None:
            restore_rng(rng, self.device)
        self.c = dataclasses.replace(
            self.c,
            samples=old.samples,
            skipped=old.skipped,
            rollbacks=old.rollbacks + 1,
            lr_scale=old.lr_scale * tcfg.rollback_lr_factor,
            elapsed_s=old.elapsed_s,
        )
        if self.ctx.is_main:
            log.warning(
                "%d non-finite steps in a row at step %d: rolled back to step %d with the learning "
                "rate x%g (roll-back %d of at most %d)",
                tcfg.max_nonfinite,
                old.step,
                self.c.step,
                self.c.lr_scale,
                self.c.rollbacks,
                tcfg.max_rollbacks,
            )
            if events is not None:
                events.write(
                    {
                        "step": self.c.step,
                        "event": "rollback",
                        "from_step": old.step,
                        "lr_scale": self.c.lr_scale,
                        "rollbacks": self.c.rollbacks,
                    }
                )
