"""Training under torch.distributed (gloo, CPU): ranks stay identical, two processes behave like
one with the global batch, and a two-process run resumes exactly.

Most ranks are forked from this process with the launcher's environment set by hand (fast: no
fresh interpreters); one test goes through the real launcher (``kp3d train --devices 2``, the
elastic agent that ``torchrun`` runs), which spawns interpreters (slow)."""

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from dummy_method import TinyImages
from safetensors.torch import load_file, save_file

from kp3d.cli import main
from kp3d.engine import train
from kp3d.engine.distributed import DistContext, context_from_env, sync_batchnorm

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="forked gloo ranks")

EXACT = {"schedule": "constant", "warmup_steps": 0, "ckpt_every": 3, "batch_size": 3}
"""A constant schedule, so that a 4-step run resumed to 7 steps is the 7-step run."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(
    rank: int, world: int, port: int, method: str, out: str, kwargs: dict[str, Any], size: int
) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    result = train(method, TinyImages(n=10, size=size), out, **kwargs)
    # Parameters only: DDP hands rank 0's buffers (BatchNorm statistics) to the others at the
    # start of each step, so after the last step each rank still holds its own.
    params = {k: v.detach().contiguous() for k, v in result.model.named_parameters()}
    save_file(params, str(Path(out) / f"rank-{rank}.safetensors"))


def _two_ranks(
    out: Path, method: str = "dummy", *, size: int = 8, **kwargs: Any
) -> list[dict[str, torch.Tensor]]:
    """Train ``method`` with 2 forked gloo ranks; the parameters each rank ends with."""
    args = (2, _free_port(), method, str(out), kwargs, size)
    mp.start_processes(_rank, args=args, nprocs=2, start_method="fork")
    return [load_file(out / f"rank-{r}.safetensors") for r in (0, 1)]


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_no_launcher_means_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = context_from_env()
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.enabled) == (0, 1, True, False)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    ctx = context_from_env()
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.is_main) == (2, 4, 0, False)


def test_sync_batchnorm_on_cuda_and_a_warning_on_cpu(caplog: pytest.LogCaptureFixture) -> None:
    def net() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))

    single, two, two_r1 = DistContext(), DistContext(0, 2), DistContext(1, 2)
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    model = net()
    assert sync_batchnorm(model, single, cuda) is model
    # Converting only swaps modules (no CUDA needed); the checkpoint keys stay the same.
    synced = sync_batchnorm(net(), two, cuda)
    assert isinstance(synced[1], torch.nn.SyncBatchNorm)
    assert synced.state_dict().keys() == model.state_dict().keys()
    with caplog.at_level("WARNING", logger="kp3d.engine"):
        assert sync_batchnorm(model, two, cpu) is model
        assert isinstance(model[1], torch.nn.BatchNorm2d)
        sync_batchnorm(net(), two_r1, cpu)  # only rank 0 speaks
        frozen = net().requires_grad_(False)
        sync_batchnorm(frozen, two, cpu)  # fixed statistics: nothing to warn about
    assert len(caplog.records) == 1 and "--norm group" in caplog.records[0].getMessage()


def test_two_ranks_match_one_process_with_the_global_batch(tmp_path: Path, dummy: str) -> None:
    # No randomness inside the step and no BatchNorm (per-process statistics on CPU).
    model = {"noise": 0.0, "dropout": 0.0, "batchnorm": False}
    ranks = _two_ranks(
        tmp_path / "ddp", method_config=model, train_config={"steps": 6, "batch_size": 3}
    )
    assert _equal(ranks[0], ranks[1])
    single = train(
        dummy,
        TinyImages(n=10),
        tmp_path / "one",
        method_config=model,
        train_config={"steps": 6, "batch_size": 6},
    )
    for key, value in single.model.named_parameters():
        torch.testing.assert_close(ranks[0][key], value, rtol=1e-4, atol=1e-5, msg=key)
    # Only rank 0 wrote, and its files describe a 2-process run.
    assert (tmp_path / "ddp" / "model.safetensors").is_file()
    doc = json.loads((tmp_path / "ddp" / "config.json").read_text())
    assert doc["provenance"]["world_size"] == 2


def test_two_lifter_ranks_match_one_lifter(tmp_path: Path, dummy: str) -> None:
    # A real method on the tiny set's keypoints; LayerNorm, because BatchNorm statistics are
    # per process on CPU, and fewer steps than its cycle_start, so no randomness in the step.
    model = {"norm": "layer", "width": 32, "n_layers": 1}
    settings = {"steps": 5, "warmup_steps": 0}
    ranks = _two_ranks(
        tmp_path / "ddp", "lifter", method_config=model, train_config={**settings, "batch_size": 4}
    )
    assert _equal(ranks[0], ranks[1])
    single = train(
        "lifter",
        TinyImages(n=10),
        tmp_path / "one",
        method_config=model,
        train_config={**settings, "batch_size": 8},
    )
    for key, value in single.model.named_parameters():
        torch.testing.assert_close(ranks[0][key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_two_autolink3d_ranks_match_one_autolink3d(tmp_path: Path) -> None:
    # The flagship under DDP. GroupNorm, because BatchNorm statistics are per process on CPU
    # (no CPU SyncBatchNorm); mask_ratio 0 keeps every cell whatever the per-rank random stream
    # draws, and w_canonical 0 skips the random rotations: the step has no randomness left.
    # float32 (bf16 off), so both runs compute the same sums, up to the order of the additions.
    model = {
        "k": 4, "image_size": 32, "heatmap_size": 8, "mask_grid": 8, "width": 0.125,
        "n_basis": 2, "perceptual": "none", "w_pixel": 1.0, "mask_ratio": 0.0,
        "w_canonical": 0.0, "norm": "group",
    }  # fmt: skip
    settings = {"steps": 3, "warmup_steps": 0, "bf16": False}
    ranks = _two_ranks(
        tmp_path / "ddp", "autolink3d", size=32, method_config=model,
        train_config={**settings, "batch_size": 2},
    )  # fmt: skip
    assert _equal(ranks[0], ranks[1])
    single = train(
        "autolink3d",
        TinyImages(n=10, size=32),
        tmp_path / "one",
        method_config=model,
        train_config={**settings, "batch_size": 4},
    )
    from kp3d.config import config_from_dict
    from kp3d.engine.run import seed_everything
    from kp3d.methods import get_method

    spec = get_method("autolink3d")
    seed_everything(0)  # as the engine does before building: the weights every rank starts from
    start = spec.build(config_from_dict(spec.config_cls, model, source="test"))
    moved = [k for k, v in start.named_parameters() if not torch.equal(v, ranks[0][k])]
    assert moved, "the two-rank run did not train"
    # Not the heatmap head's bias: a constant added to a heatmap's logits leaves its softmax
    # unchanged, so its gradient is 0 up to rounding, which Adam scales to lr-sized steps.
    for key, value in single.model.named_parameters():
        if key != "detector.head.bias":
            torch.testing.assert_close(ranks[0][key], value, rtol=1e-4, atol=1e-5, msg=key)


def test_two_rank_resume_equals_the_uninterrupted_two_rank_run(tmp_path: Path, dummy: str) -> None:
    # With dropout and noise: every rank's own random streams must be restored.
    whole = _two_ranks(tmp_path / "whole", train_config={**EXACT, "steps": 7})
    _two_ranks(tmp_path / "part", train_config={**EXACT, "steps": 4})
    resumed = _two_ranks(tmp_path / "part", train_config={**EXACT, "steps": 7}, resume=True)
    assert _equal(whole[0], whole[1]) and _equal(resumed[0], resumed[1])
    assert _equal(resumed[0], whole[0])
    saved = [load_file(d / "model.safetensors") for d in (tmp_path / "whole", tmp_path / "part")]
    assert _equal(*saved)  # buffers included


@pytest.mark.slow
def test_devices_flag_launches_ranks_with_torchrun_machinery(
    tmp_path: Path, dummy: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Real data on disk: the spawned ranks open it themselves (rank 0 first).
    data = tmp_path / "creature"
    assert main(["synth", "creature", "--n", "12", "--size", "32", "--out", str(data)]) == 0
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = tmp_path / "run"
    argv = [
        "train",
        "--method",
        dummy,
        "--size",
        "32",
        "--k",
        "16",
        "--data",
        str(data),
        "--out",
        str(run),
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--devices",
        "2",
    ]
    assert main(argv) == 0
    result = json.loads((run / "result.json").read_text())
    assert result["steps"] == 3 and result["world_size"] == 2
    assert json.loads((run / "config.json").read_text())["data"]["path"] == str(data.resolve())
