"""A cached store of pre-decoded, pre-resized images, so training never decodes a JPEG twice.

One store holds the images of one dataset selection at one size: a ``.npy`` array of shape
(N, size, size, 3) uint8 opened as a read-only memory map, and an index JSON beside it that lists
every source file with its byte size, modification time (ns), crop box, upright original
``(W, H)`` and, for files that could not be decoded, the reason.

Where
    ``cache_dir`` if given, else ``$KP3D_CACHE`` if set, else ``<dataset>/.kp3d-cache/`` when
    the dataset folder is writable, else ``$XDG_CACHE_HOME/kp3d`` (``~/.cache/kp3d``). Files are
    named ``<folder>-<tag>-<size>px-<hash>`` where the hash covers the dataset's absolute path,
    the tag, the size and the background colour, so different selections and sizes coexist.

When it is rebuilt
    Whenever the list of files, any file's size or modification time, a crop box, or the format
    version differs from the index. Unchanged rows are copied from the previous store, so adding
    ten images to a folder of 200 000 decodes ten images. (A file rewritten with identical size
    within the file system's timestamp resolution is not noticed; touch it or pass
    ``rebuild=True``.)

Safety
    The pixel array is written under a temporary name and renamed into place, then the index is
    written the same way and points at the array by its unique name; the previous array is
    removed last. A reader therefore sees either the old or the new store, never a partial one,
    and arrays already mapped by running readers stay valid after a rebuild (POSIX semantics).
    Builders of the same store serialise on a lock file, and a builder that finds the store
    already rebuilt by another one uses it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import re
import secrets
import sys
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from kp3d.data.images import Background, Box, decode_image, progress_bar, to_tensor
from kp3d.errors import DataError

log = logging.getLogger("kp3d.data")

FORMAT_VERSION = 1
"""Bump when decoding changes in a way that invalidates existing stores."""

_PARALLEL_FROM = 2000
_CHUNK = 64


def default_cache_dir(root: str | Path) -> Path:
    """The cache folder for a dataset at ``root`` (see the module doc for the order tried)."""
    env = os.environ.get("KP3D_CACHE")
    if env:
        return Path(env).expanduser()
    root = Path(root)
    root = root if root.is_dir() else root.parent
    local = root / ".kp3d-cache"
    try:
        local.mkdir(exist_ok=True)
        with tempfile.TemporaryFile(dir=local):
            pass
        return local
    except OSError:
        pass
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return base / "kp3d"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("_")[:40] or "images"


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def _decode_chunk(
    jobs: list[tuple[int, str, Box | None]], size: int, background: Background
) -> list[tuple[int, np.ndarray | None, tuple[int, int] | None, str | None]]:
    out: list[tuple[int, np.ndarray | None, tuple[int, int] | None, str | None]] = []
    for i, path, box in jobs:
        try:
            d = decode_image(path, size=size, box=box, background=background)
            out.append((i, d.pixels, d.original, None))
        except DataError as e:
            out.append((i, None, None, str(e)))
    return out


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: builders are not serialised, renames still keep readers safe
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _write_json_atomic(path: Path, obj: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache may be shared
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class ImageStore:
    """N images decoded once to (size, size, 3) uint8, read through a memory map.

    Row ``i`` holds ``paths[i]`` (cropped to ``boxes[i]`` when given) resized to size x size as
    :func:`kp3d.data.images.decode_image` does it. Rows of files that could not be decoded are
    zeros and listed in :attr:`errors`.

    Attributes:
        size: side length of every stored image.
        original: (N, 2) int64 upright source ``(W, H)`` per row (0 for failed rows).
        errors: row -> message (naming the file) for every row that could not be decoded.
        index_path: the index JSON of this store.
    """

    def __init__(self, index_path: Path, meta: dict[str, Any]) -> None:
        self.index_path = index_path
        self.size: int = meta["size"]
        entries = meta["entries"]
        self.files: list[str] = [e[0] for e in entries]
        self.original = np.array([e[4] or (0, 0) for e in entries], dtype=np.int64).reshape(-1, 2)
        self.errors: dict[int, str] = {i: e[5] for i, e in enumerate(entries) if e[5] is not None}
        self._data_path = index_path.parent / meta["data"]
        self._pixels: np.ndarray | None = None

    @classmethod
    def open(
        cls,
        paths: Sequence[str | Path],
        size: int,
        *,
        root: str | Path,
        boxes: Sequence[Box | None] | None = None,
        tag: str = "",
        cache_dir: str | Path | None = None,
        background: Background = "white",
        workers: int | None = None,
        rebuild: bool = False,
    ) -> ImageStore:
        """The store for ``paths`` at ``size``, built or updated first when needed.

        Args:
            paths: the source images, in row order.
            size: side length of the stored images.
            root: the dataset folder (names the store, default cache location, relative paths).
            boxes: optional crop box per image (see :func:`kp3d.data.images.decode_image`).
            tag: distinguishes selections of one dataset (e.g. ``"landmark_csv-training"``).
            cache_dir: where the store lives (default: :func:`default_cache_dir`).
            background: colour under transparency and outside crop boxes.
            workers: decoding processes; ``None`` uses up to 8 when 2000 or more images need
                decoding, ``0`` decodes in this process.
            rebuild: decode everything again even if the store is up to date.

        Raises:
            DataError: ``paths`` is empty; the cache folder cannot be written.
        """
        if len(paths) == 0:
            raise DataError(f"{root}: no images to store")
        if boxes is not None and len(boxes) != len(paths):
            raise ValueError(f"got {len(boxes)} boxes for {len(paths)} images")
        root = Path(os.path.abspath(root))
        folder = Path(cache_dir) if cache_dir is not None else default_cache_dir(root)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"{folder}: cannot create the image cache folder ({e.strerror})") from e
        key = hashlib.sha1(f"{root}|{tag}|{size}|{background}".encode()).hexdigest()[:10]
        stem = f"{_slug(root.name)}-{_slug(tag)}-{size}px-{key}"
        index_path = folder / f"{stem}.json"

        abs_paths = [Path(os.path.abspath(p)) for p in paths]
        wanted = [
            [cls._rel(p, root), *_stat(p), None if b is None else [float(x) for x in b]]
            for p, b in zip(abs_paths, boxes if boxes is not None else [None] * len(paths))
        ]
        header = {
            "version": FORMAT_VERSION,
            "size": size,
            "background": background,
            "root": str(root),
        }

        for _ in range(3):
            meta = None if rebuild else cls._read_valid(index_path, header, wanted)
            if meta is None:
                try:
                    with _lock(folder / f"{stem}.lock"):
                        meta = None if rebuild else cls._read_valid(index_path, header, wanted)
                        if meta is None:
                            meta = cls._build(
                                index_path, header, wanted, abs_paths, workers, reuse=not rebuild
                            )
                except OSError as e:
                    raise DataError(f"{folder}: cannot write the image cache ({e})") from e
            rebuild = False
            store = cls(index_path, meta)
            try:
                _ = store.pixels  # map now, so that a replaced store is noticed here
            except FileNotFoundError:
                continue  # another process replaced the store between our reads; read it again
            return store
        raise DataError(
            f"{index_path}: the image cache keeps changing under us; is another "
            "process rebuilding it in a loop?"
        )

    @staticmethod
    def _rel(path: Path, root: Path) -> str:
        text, prefix = str(path), str(root) + os.sep
        return (text.removeprefix(prefix)).replace(os.sep, "/")

    @staticmethod
    def _read_index(index_path: Path) -> dict[str, Any] | None:
        try:
            with open(index_path) as f:
                meta = json.load(f)
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) and "entries" in meta else None

    @classmethod
    def _read_valid(
        cls, index_path: Path, header: dict[str, Any], wanted: list[list[Any]]
    ) -> dict[str, Any] | None:
        meta = cls._read_index(index_path)
        if meta is None or any(meta.get(k) != v for k, v in header.items()):
            return None
        if [e[:4] for e in meta["entries"]] != wanted:
            return None
        if not (index_path.parent / meta["data"]).is_file():
            return None
        return meta

    @classmethod
    def _build(
        cls,
        index_path: Path,
        header: dict[str, Any],
        wanted: list[list[Any]],
        abs_paths: list[Path],
        workers: int | None,
        *,
        reuse: bool,
    ) -> dict[str, Any]:
        size, background = header["size"], header["background"]
        n = len(wanted)
        old = cls._read_index(index_path)
        reusable = cls._reusable_rows(index_path, header) if reuse else {}

        data_name = f"{index_path.stem}.{secrets.token_hex(4)}.npy"
        data_path = index_path.parent / data_name
        tmp = index_path.parent / f".{data_name}.tmp"
        entries: list[list[Any]] = []
        todo: list[tuple[int, str, Box | None]] = []
        try:
            out = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=np.uint8, shape=(n, size, size, 3)
            )
            for i, w in enumerate(wanted):
                hit = reusable.get((w[0], w[1], w[2], json.dumps(w[3])))
                if hit is not None and w[1] >= 0:
                    pixels, j, e = hit
                    out[i] = pixels[j]
                    entries.append([*w, e[4], e[5]])
                else:
                    entries.append([*w, None, None])
                    todo.append((i, str(abs_paths[i]), None if w[3] is None else tuple(w[3])))
            if todo:
                what = (
                    f"caching {n} images at {size}px"
                    if len(todo) == n
                    else (f"updating the image cache ({len(todo)} of {n})")
                )
                log.info("%s in %s", what, index_path.parent)
                for i, pixels, original, error in cls._decode_all(
                    todo, size, background, workers, what
                ):
                    if pixels is not None:
                        out[i] = pixels
                        entries[i][4] = list(original)
                    else:
                        entries[i][5] = error
            out.flush()
            del out
            os.replace(tmp, data_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        meta = {**header, "data": data_name, "entries": entries}
        try:
            _write_json_atomic(index_path, meta)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(data_path)
            raise
        if old is not None and old.get("data") != data_name:
            # Readers that mapped the old array keep it until they close it (POSIX).
            with contextlib.suppress(OSError):
                os.unlink(index_path.parent / old["data"])
        return meta

    @classmethod
    def _reusable_rows(
        cls, index_path: Path, header: dict[str, Any]
    ) -> dict[tuple[Any, ...], tuple[np.ndarray, int, list[Any]]]:
        """Rows already decoded by this store's previous version or by sibling stores (other
        selections of the same dataset at the same size), keyed by file, stat and box."""
        # Store names start with the dataset folder's name; the header check below (which
        # includes the dataset's absolute path) rejects other datasets of the same name.
        pattern = index_path.name.split("-", 1)[0] + f"-*-{header['size']}px-*.json"
        candidates = [index_path] + sorted(
            p for p in index_path.parent.glob(pattern) if p != index_path
        )
        rows: dict[tuple[Any, ...], tuple[np.ndarray, int, list[Any]]] = {}
        for path in candidates:
            meta = cls._read_index(path)
            if meta is None or any(meta.get(k) != v for k, v in header.items()):
                continue
            try:
                pixels = np.load(path.parent / meta["data"], mmap_mode="r")
            except (OSError, ValueError):
                continue
            if len(pixels) != len(meta["entries"]):
                continue
            for j, e in enumerate(meta["entries"]):
                rows.setdefault((e[0], e[1], e[2], json.dumps(e[3])), (pixels, j, e))
        return rows

    @staticmethod
    def _decode_all(
        todo: list[tuple[int, str, Box | None]],
        size: int,
        background: Background,
        workers: int | None,
        description: str,
    ) -> Iterator[tuple[int, np.ndarray | None, tuple[int, int] | None, str | None]]:
        if workers is None:
            workers = min(os.cpu_count() or 1, 8) if len(todo) >= _PARALLEL_FROM else 0
        chunks = [todo[i : i + _CHUNK] for i in range(0, len(todo), _CHUNK)]
        with progress_bar(len(todo), description) as progress:
            task = progress.add_task(description, total=len(todo))
            if workers <= 1:
                for chunk in chunks:
                    yield from _decode_chunk(chunk, size, background)
                    progress.advance(task, len(chunk))
                return
            # Linux: fork, so that a user's script is not re-imported by the workers (spawn and
            # forkserver need an `if __name__ == "__main__":` guard); the children only run
            # Pillow, never torch, so torch's thread pools in the parent do not matter.
            ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
            with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                for result in pool.map(
                    _decode_chunk, chunks, [size] * len(chunks), [background] * len(chunks)
                ):
                    yield from result
                    progress.advance(task, len(result))

    def __len__(self) -> int:
        return len(self.files)

    @property
    def pixels(self) -> np.ndarray:
        """The (N, size, size, 3) uint8 read-only memory map."""
        if self._pixels is None:
            self._pixels = np.load(self._data_path, mmap_mode="r")
            if self._pixels.shape != (len(self.files), self.size, self.size, 3):
                raise DataError(
                    f"{self._data_path}: image cache has shape {self._pixels.shape}, "
                    f"expected {(len(self.files), self.size, self.size, 3)}; delete it"
                )
        return self._pixels

    def image(self, i: int) -> Tensor:
        """Row ``i`` as a (3, size, size) float32 tensor in [0, 1]."""
        return to_tensor(self.pixels[i])

    def images(self, rows: Sequence[int] | Tensor) -> Tensor:
        """Rows as a (B, 3, size, size) float32 batch in [0, 1] (one gather, no decoding)."""
        idx = np.asarray(rows.cpu() if isinstance(rows, Tensor) else rows, dtype=np.int64)
        batch = torch.from_numpy(np.take(self.pixels, idx, axis=0))
        return batch.permute(0, 3, 1, 2).float().div_(255.0)

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers re-map the file instead of receiving a pickled copy of every image.
        state = self.__dict__.copy()
        state["_pixels"] = None
        return state
