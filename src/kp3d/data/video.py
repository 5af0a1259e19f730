"""Video in and out with PyAV (FFmpeg's libraries, shipped inside the ``av`` wheel).

Frames are decoded one at a time (a long video is never held in memory) and resized like
still images (:mod:`kp3d.data.images`: the whole frame to ``size x size``, bilinear, so a
source point ``(u, v)`` lands at ``(u size / W, v size / H)``). Needs the ``video`` extra
(``pip install 'kp3d[video]'``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
from PIL import Image
from torch import Tensor

from kp3d.data.images import to_tensor
from kp3d.errors import DataError, UserError

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise UserError("video needs the av package: pip install 'kp3d[video]'") from None
    return av


@dataclass(frozen=True)
class VideoInfo:
    """A video stream's ``fps``, frame size ``(W, H)`` and frame count (0 when unknown)."""

    fps: float
    size: tuple[int, int]
    frames: int


@dataclass(frozen=True)
class VideoFrame:
    """One decoded frame: its index, time (seconds), the frame as uint8 (H, W, 3) and resized
    to the model's input as a (3, size, size) float tensor in [0, 1]."""

    index: int
    time_s: float
    pixels: np.ndarray
    image: Tensor


def is_video(path: str | Path) -> bool:
    """Whether ``path`` has a video file extension."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def probe(path: str | Path) -> VideoInfo:
    """The first video stream's properties.

    Raises:
        DataError: not a readable video (the message names the file).
    """
    av = _av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path}: no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0.0)
            return VideoInfo(
                fps,
                (stream.codec_context.width, stream.codec_context.height),
                int(stream.frames or 0),
            )
    except av.error.FFmpegError as e:
        raise DataError(f"{path}: not a readable video ({e})") from e


def read_frames(path: str | Path, *, size: int) -> Iterator[VideoFrame]:
    """Decode ``path``'s first video stream frame by frame, each resized to ``size``.

    Raises:
        DataError: not a readable video, or a frame that cannot be decoded (naming the file and
            the frame).
    """
    av = _av()
    index = -1
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(container.decode(stream)):
                rgb = frame.to_ndarray(format="rgb24")
                small = np.asarray(
                    Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR)
                )
                t = float(frame.time) if frame.time is not None else float("nan")
                yield VideoFrame(index, t, rgb, to_tensor(small))
    except av.error.FFmpegError as e:
        where = f"frame {index + 1}" if index >= 0 else "opening it"
        raise DataError(f"{path}: video decoding failed at {where} ({e})") from e


class VideoWriter:
    """Writes uint8 (H, W, 3) frames to a video file (H.264 where FFmpeg has it, else MPEG-4),
    atomically: the file appears complete at ``close`` or not at all."""

    def __init__(self, path: str | Path, *, fps: float, size: tuple[int, int]) -> None:
        from kp3d.engine.atomic import atomic_path

        av = _av()
        self.path = Path(path)
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        w, h = size
        # yuv420p needs even sides; the frame is padded by one pixel where needed.
        self._size = (w + w % 2, h + h % 2)
        self._container = av.open(str(tmp), mode="w", format=_container_format(self.path))
        rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
        self._stream = self._container.add_stream(codec, rate=rate)
        self._stream.width, self._stream.height = self._size
        self._stream.pix_fmt = "yuv420p"
        self._av = av

    def write(self, pixels: np.ndarray) -> None:
        """Append one uint8 (H, W, 3) frame of the size given at construction."""
        w, h = self._size
        if pixels.shape[0] != h or pixels.shape[1] != w:
            padded = np.zeros((h, w, 3), np.uint8)
            padded[: pixels.shape[0], : pixels.shape[1]] = pixels[:h, :w]
            pixels = padded
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self, error: BaseException | None = None) -> None:
        """Flush and move the file into place (or discard it after ``error``)."""
        try:
            if error is None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
        finally:
            self._container.close()
            if error is None:
                self._atomic.__exit__(None, None, None)
            else:
                self._atomic.__exit__(type(error), error, error.__traceback__)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(error)


def _container_format(path: Path) -> str | None:
    # An atomic temporary file has another extension; name the container from the target.
    return {".mkv": "matroska", ".m4v": "mp4", ".mpg": "mpeg", ".mpeg": "mpeg"}.get(
        path.suffix.lower(), path.suffix.lower().lstrip(".") or None
    )
