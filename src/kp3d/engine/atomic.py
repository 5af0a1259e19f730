"""Atomic file output: a kill at any moment leaves either the old file or the new one, whole.

Every writer goes to a temporary file in the *same* folder (so the final rename never crosses a
file system), flushes and ``fsync``\\ s it, then ``os.replace``\\ s it over the target, which POSIX
and Windows both perform atomically. The folder is ``fsync``\\ ed afterwards where the platform
allows it, so the rename itself survives a power cut. A temporary file orphaned by a kill is
named ``.tmp-<stem>-<random><suffix>`` (the suffix kept, so writers that pick a format from
the name still work) and is ignored until removed by :func:`remove_stale_temporaries`. Final
files get the usual ``0o666 & ~umask`` permissions, not ``tempfile``'s private ``0o600``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"


def _current_umask() -> int:
    # os.umask can only be read by setting it; done once, at import, before any thread writes.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _fsync_dir(folder: Path) -> None:
    # Directories cannot be opened for fsync on Windows; there the rename is still atomic.
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on a clean exit it atomically becomes ``path``.

    For writers that insist on a file name (``safetensors.torch.save_model``, ``PIL``, ``numpy``).
    The writer must close the file before the block ends. On an exception the temporary file is
    removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f"{TMP_PREFIX}{path.stem}-", suffix=path.suffix, dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON (UTF-8, trailing newline) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def atomic_save(path: str | Path, obj: Any, save: Callable[[Any, Path], Any] | None = None) -> None:
    """Save ``obj`` to ``path`` atomically with ``save(obj, tmp_path)`` (default ``torch.save``)."""
    if save is None:
        import torch

        save = torch.save
    with atomic_path(path) as tmp:
        save(obj, tmp)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on a clean exit it is renamed to ``path``.

    Groups files that must appear together (a checkpoint's weights and optimizer state). ``path``
    must not exist yet: renaming over a non-empty folder is not atomic anywhere. Every file in
    the folder is ``fsync``\\ ed before the rename.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path}: already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{path.name}-", dir=path.parent))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb+") as fh:
                    os.fsync(fh.fileno())
        _fsync_dir(tmp)
        os.chmod(tmp, 0o777 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(path.parent)


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete temporaries left in ``folder`` by killed writers; returns how many were removed.

    Only call it when no other process writes into ``folder``.
    """
    n = 0
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    for p in folder.glob(f"{TMP_PREFIX}*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        n += 1
    return n
