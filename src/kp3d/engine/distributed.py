"""Multi-process training on PyTorch's own machinery: ``torchrun`` (the elastic launcher) starts
the processes, ``torch.distributed`` connects them, ``DistributedDataParallel`` averages the
gradients.

Who decides what
    The launcher's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` /
    ``MASTER_PORT``) decides rank and world size; without it the run is a single process and
    nothing here does anything. ``kp3d train --devices N`` launches N local processes with the
    same elastic launcher as ``torchrun --standalone --nproc-per-node N``
    (:func:`launch_local`). CPU runs use the ``gloo`` backend, CUDA runs ``nccl`` with one GPU
    per process (``cuda:LOCAL_RANK``).

Why plain DDP and not Lightning Fabric: the engine already owns its loop, checkpoints and
precision; DDP adds exactly the gradient all-reduce, and nothing else needs to change.
"""

from __future__ import annotations

import datetime
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from kp3d.errors import ConfigError, UserError

T = TypeVar("T")

log = logging.getLogger("kp3d.engine")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files, logs and progress bars."""
        return self.rank == 0


def context_from_env() -> DistContext:
    """Rank, world size and local rank from the launcher's environment (single process without)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    return DistContext(
        rank=int(os.environ["RANK"]),
        world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def device_for(kind: str, ctx: DistContext) -> torch.device:
    """The device of this process for ``TrainConfig.device`` (``auto``, ``cpu`` or ``cuda``).

    Raises:
        ConfigError: CUDA requested but missing, or fewer GPUs than local processes.
    """
    if kind == "cuda" or (kind == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("device: 'cuda' requested but no CUDA device is available")
        if ctx.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"device: local rank {ctx.local_rank} needs a GPU but only "
                f"{torch.cuda.device_count()} are visible; start at most that many processes "
                "per node"
            )
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def init(ctx: DistContext, device: torch.device) -> bool:
    """Join the process group (gloo on CPU, nccl on CUDA); True if this call created it."""
    if not ctx.enabled or dist.is_initialized():
        return False
    if device.type == "cuda":
        dist.init_process_group(backend="nccl", device_id=device)
    else:
        dist.init_process_group(backend="gloo", timeout=datetime.timedelta(minutes=30))
    return True


def shutdown(created: bool) -> None:
    """Leave the process group if :func:`init` created it."""
    if created and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def broadcast_object(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_(ctx: DistContext, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (``sum``, ``min`` or ``max``); a no-op for a single process.

    NCCL reduces only CUDA tensors: the tensor travels to this rank's GPU and back.
    """
    if ctx.enabled:
        ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
        if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
            moved = tensor.cuda()
            dist.all_reduce(moved, op=ops[op])
            tensor.copy_(moved.cpu())
        else:
            dist.all_reduce(tensor, op=ops[op])
    return tensor


def main_first(ctx: DistContext, fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0, then on the other ranks (e.g. opening a dataset whose image store
    rank 0 builds and the others reuse).

    A :class:`UserError` on rank 0 is raised on every rank, so that no rank waits forever.
    """
    if not ctx.enabled:
        return fn()
    result, error = None, None
    if ctx.is_main:
        try:
            result = fn()
        except UserError as e:
            error = e
    message = broadcast_object(ctx, None if error is None else str(error))
    if error is not None:
        raise error
    if message is not None:
        raise UserError(message)
    return result if ctx.is_main else fn()  # type: ignore[return-value]


def sync_batchnorm(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """``model`` with its BatchNorm layers synchronised across processes where PyTorch can.

    On CUDA every BatchNorm becomes a :class:`~torch.nn.SyncBatchNorm`, whose statistics cover
    the global batch as in a single process (the state-dict keys stay the same). PyTorch's
    SyncBatchNorm raises for CPU inputs in training (torch 2.13), so CPU processes keep plain
    BatchNorm, each normalising its own slice; rank 0 then logs one warning, if any trainable
    BatchNorm exists (frozen feature networks, e.g. a perceptual loss's, do not count: they
    normalise with fixed statistics). A single process gets ``model`` back unchanged.
    """
    if not ctx.enabled:
        return model
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    trainable = any(
        isinstance(m, nn.modules.batchnorm._BatchNorm)
        and any(p.requires_grad for p in m.parameters(recurse=False))
        for m in model.modules()
    )
    if trainable and ctx.is_main:
        log.warning(
            "BatchNorm statistics are per process on CPU (PyTorch has no CPU SyncBatchNorm), "
            "so %d processes do not match one with the global batch; for that use a "
            "per-sample norm (autolink3d: --norm group; lifter: --norm layer)",
            ctx.world_size,
        )
    return model


def launch_local(n: int, fn: Callable[..., int], *args: Any) -> int:
    """Run ``fn(*args)`` in ``n`` local processes under the elastic launcher (what ``torchrun
    --standalone --nproc-per-node n`` does); returns the largest exit status.

    ``fn`` must be importable by name (the processes are spawned). CPU processes share the
    cores: each gets ``cores / n`` threads unless ``OMP_NUM_THREADS`` says otherwise.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if "WORLD_SIZE" in os.environ:
        raise ConfigError("--devices: already started by a launcher (torchrun); drop --devices")
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=n,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        start_method="spawn",
    )
    try:
        statuses = elastic_launch(config, fn)(*args)
    except ChildFailedError as e:
        raise UserError(f"a training process failed: {e.get_first_failure()[1].message}") from None
    return max((int(s or 0) for s in statuses.values()), default=0)
