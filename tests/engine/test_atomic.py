import os
import stat
from pathlib import Path

import pytest
import torch
from PIL import Image

from kp3d.engine.atomic import (
    atomic_dir,
    atomic_path,
    atomic_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    remove_stale_temporaries,
)


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_writes_replace_whole_files_and_leave_no_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    atomic_write_json(tmp_path / "b.json", {"x": [1, "\u00e9"]})
    assert (tmp_path / "b.json").read_text(
        encoding="utf-8"
    ) == '{\n  "x": [\n    1,\n    "\u00e9"\n  ]\n}\n'
    assert _listing(tmp_path) == ["b.json", "sub"] and _listing(target.parent) == ["a.txt"]


def test_permissions_follow_the_umask_not_mkstemp(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a.txt", "x")
    mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_a_failing_writer_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half of the new con")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert _listing(tmp_path) == ["a.bin"]


def test_atomic_path_keeps_the_suffix_for_format_sniffing_writers(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "im.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        Image.new("RGB", (3, 2)).save(tmp)
    assert Image.open(tmp_path / "im.png").size == (3, 2)


def test_atomic_save_uses_torch_save_by_default(tmp_path: Path) -> None:
    atomic_save(tmp_path / "t.pt", {"a": torch.arange(3)})
    assert torch.equal(torch.load(tmp_path / "t.pt", weights_only=True)["a"], torch.arange(3))


def test_atomic_dir_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    with atomic_dir(tmp_path / "ckpt") as tmp:
        (tmp / "a").write_text("1")
        (tmp / "b").write_text("2")
        assert not (tmp_path / "ckpt").exists()
    assert _listing(tmp_path / "ckpt") == ["a", "b"]
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "other") as tmp:
        (tmp / "a").write_text("1")
        raise RuntimeError("killed")
    assert _listing(tmp_path) == ["ckpt"]
    with pytest.raises(FileExistsError), atomic_dir(tmp_path / "ckpt"):
        pass


def test_remove_stale_temporaries(tmp_path: Path) -> None:
    (tmp_path / ".tmp-a-123.bin").write_text("x")
    (tmp_path / ".tmp-ckpt-456").mkdir()
    (tmp_path / "keep.bin").write_text("x")
    assert remove_stale_temporaries(tmp_path) == 2
    assert _listing(tmp_path) == ["keep.bin"]
    assert remove_stale_temporaries(tmp_path / "missing") == 0
