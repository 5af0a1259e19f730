"""What a method reads: images, calibrated views, calibrated views for training and images
otherwise (:data:`VIEW_PAIRS`), or keypoints (:attr:`MethodSpec.inputs`).

The engine and the commands open data through the spec's :class:`Inputs` object and never ask
which kind it is: each kind knows how to open a path for training, evaluation and inference
(:meth:`Inputs.inference_source`: what ``kp3d infer`` reads) and which image size the method's
config asks for.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict, Unpack

import torch
from torch import Tensor
from torch.utils.data import Dataset

from kp3d.data.schema import Sample
from kp3d.errors import DataError, UserError

if TYPE_CHECKING:
    from kp3d.data.video import VideoFrame
    from kp3d.methods.prediction import Prediction

SIZE_FIELDS: tuple[str, ...] = ("image_size", "size")
"""Method config fields holding the image side length (the first one a config has)."""


class OpenOptions(TypedDict, total=False):
    """The options of :meth:`Inputs.open` after the path, declared once for the methods that
    pass them on (:meth:`Inputs.open_training`, :meth:`KeypointInputs.open`)."""

    format: str | None
    split: str | None
    size: int | None
    strict: bool


@dataclass(frozen=True)
class Inputs:
    """Images (one view per sample), the base kind.

    Attributes:
        name: ``images``, ``views``, ``view pairs`` or ``keypoints``: for messages only.
        batch_size: default batch of inference and evaluation (keypoint rows are cheap).
    """

    name: str = "images"
    batch_size: int = 64

    def image_size(self, config: Any) -> int | None:
        """The image side length ``config`` asks for (None: the data's own size)."""
        return next((int(getattr(config, f)) for f in SIZE_FIELDS if hasattr(config, f)), None)

    def example(self, config: Any, *, batch: int = 2) -> Sample:
        """A batch of the inputs a model with ``config`` takes (random values), for tracing and
        export: ``image`` (batch, 3, S, S)."""
        size = self.image_size(config)
        if size is None:
            raise ValueError(f"{type(config).__name__} has no image size")
        return Sample(image=torch.rand(batch, 3, size, size))

    def open(
        self,
        path: str | Path,
        *,
        format: str | None = None,
        split: str | None = None,
        size: int | None = None,
        strict: bool = False,
    ) -> Dataset[Sample]:
        """``path`` as a dataset of :class:`Sample` (format detected unless given), images
        resized to ``size``."""
        from kp3d.data.adapters import open_dataset

        options: dict[str, Any] = {}
        if size is not None:
            options["size"] = size
        if split is not None:
            options["split"] = split
        if strict:
            options["strict"] = True
        return open_dataset(path, format=format, **options)

    def samples(self, inputs: Any, *, size: int | None) -> tuple[Sample, Tensor | None]:
        """In-memory inputs of :meth:`kp3d.api.Predictor.predict` as a batch, and each image's
        original ``(W, H)`` (B, 2): images (paths, PIL images, arrays, tensors) resized to
        ``size``."""
        from kp3d.data.images import images_to_batch

        if size is None:
            raise UserError("the run records no image size to resize images to")
        return images_to_batch(inputs, size=size)

    def video_frames(self, path: str | Path, *, size: int | None) -> Iterator[VideoFrame]:
        """The frames of a video file, decoded one at a time and resized to ``size``."""
        from kp3d.data.video import read_frames

        if size is None:
            raise UserError(f"{path}: the run records no image size to read it at")
        return read_frames(path, size=size)

    def open_training(self, path: str | Path, **options: Unpack[OpenOptions]) -> Dataset[Sample]:
        """:meth:`open` for training: a single-view method trains on every view of a multi-view
        set as an image of its own (:class:`FlatViews`)."""
        return FlatViews.of(self.open(path, **options))

    def predict(self, model: Any, batch: Sample) -> Prediction:
        """``model.predict`` on ``batch``; a multi-view batch (B, V, ...) is predicted view by
        view, each field then (B, V, ...), so that a single-view method's predictions of a
        moment's views stay together (multi-view protocols compare them)."""
        if batch.image is None or batch.image.ndim != 5:
            return model.predict(batch)
        b, v = batch.image.shape[:2]

        def flatten(t: Tensor) -> Tensor:
            # Per-view fields (B, V, ...) merge their axes; per-moment ones repeat per view.
            if t.ndim >= 2 and t.shape[:2] == (b, v):
                return t.flatten(0, 1)
            return t.repeat_interleave(v, dim=0)

        flat = batch.replace(**{f: flatten(getattr(batch, f)) for f in batch.present()}, name=None)
        pred = model.predict(flat)

        def unflatten(t: Tensor) -> Tensor:
            return t.unflatten(0, (b, v))

        return pred.replace(
            **{f: unflatten(getattr(pred, f)) for f in pred.present()},
            extras={k: unflatten(t) for k, t in pred.extras.items()},
        )

    def inference_source(self, path: str | Path, *, size: int | None) -> InferenceSource:
        """What ``kp3d infer --input PATH`` reads: a folder of image files (searched
        recursively) or one image file, each resized to ``size``; predictions go back to each
        image's own pixels.

        Raises:
            DataError: no such path, not an image, no image in the folder.
            UserError: a video (frames must be extracted first), or no ``size``.
        """
        from kp3d.data.images import IMAGE_EXTENSIONS, find_images

        if size is None:
            raise UserError(f"{path}: the run records no image size to read it at")
        path = Path(path)
        if not path.exists():
            raise DataError(f"{path}: no such file or folder")
        if path.is_file():
            ext = path.suffix.lower()
            if ext not in IMAGE_EXTENSIONS:
                raise DataError(
                    f"{path}: not an image file ({', '.join(sorted(IMAGE_EXTENSIONS))})"
                )
            return ImageFiles([path], [path.name], size)
        files = find_images(path)
        return ImageFiles(files, [f.relative_to(path).as_posix() for f in files], size)


def _no_video(kind: str, path: str | Path) -> UserError:
    return UserError(f"{path}: a video; this method reads {kind}, not images")


class FlatViews(Dataset[Sample]):
    """The views of a multi-view dataset as single images: item ``i`` is view ``i % V`` of
    moment ``i // V`` (every tensor field indexed on its view axis)."""

    def __init__(self, dataset: Dataset[Sample], views: int) -> None:
        self.dataset, self.views = dataset, views
        self.keypoint_names = getattr(dataset, "keypoint_names", None)

    @classmethod
    def of(cls, dataset: Dataset[Sample]) -> Dataset[Sample]:
        """``dataset`` itself when its samples are single images, else its views."""
        if len(dataset) == 0:  # type: ignore[arg-type]
            return dataset
        first = dataset[0]
        if first.image is None or first.image.ndim != 4:
            return dataset
        return cls(dataset, int(first.image.shape[0]))

    def __len__(self) -> int:
        return len(self.dataset) * self.views  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Sample:
        sample = self.dataset[i // self.views]
        v = i % self.views
        name = f"{sample.name}/view{v}" if isinstance(sample.name, str) else None
        views = {
            f: t[v]
            for f in sample.present()
            if (t := getattr(sample, f)).ndim >= 1 and t.shape[0] == self.views
        }
        return sample.replace(**views, name=name)


class InferenceItem(NamedTuple):
    """One input of ``kp3d infer``: ``sample`` as the model takes it (None when it cannot be
    read, then ``error`` says why) and ``size``, the ``(W, H)`` of its original image, to which
    pixel-frame predictions are rescaled (None: they stay in the frame of the data as read)."""

    index: int
    sample: Sample | None
    size: tuple[int, int] | None
    error: str | None


class InferenceSource:
    """The inputs of one ``kp3d infer`` call, by name (unique, stable across calls)."""

    names: list[str]

    def items(self, indices: Sequence[int]) -> Dataset[InferenceItem]:
        """The inputs ``indices`` (positions in :attr:`names`), in that order."""
        raise NotImplementedError

    def image_file(self, index: int) -> Path | None:
        """The image file input ``index`` was read from (for overlays), if it is one."""
        return None


class ImageFiles(InferenceSource):
    """Image files, each resized to ``size`` x ``size`` for the model."""

    def __init__(self, files: list[Path], names: list[str], size: int) -> None:
        self.files, self.names, self.size = files, names, size

    def items(self, indices: Sequence[int]) -> Dataset[InferenceItem]:
        return _ImageItems(self, list(indices))

    def image_file(self, index: int) -> Path | None:
        return self.files[index]


class _ImageItems(Dataset[InferenceItem]):
    def __init__(self, source: ImageFiles, indices: list[int]) -> None:
        self.source, self.indices = source, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> InferenceItem:
        from kp3d.data.images import load_image

        i = self.indices[j]
        try:
            image, original = load_image(self.source.files[i], size=self.source.size)
        except DataError as e:
            return InferenceItem(i, None, None, str(e))
        return InferenceItem(i, Sample(image=image, name=self.source.names[i]), original, None)


class DatasetSource(InferenceSource):
    """The samples of a dataset (a keypoint file, a multi-view set), named by their index
    (``000000``, ...); their pixel-frame predictions stay in the frame of the data as read."""

    def __init__(self, dataset: Dataset[Sample]) -> None:
        self.dataset = dataset
        self.names = [f"{i:06d}" for i in range(len(dataset))]  # type: ignore[arg-type]

    def items(self, indices: Sequence[int]) -> Dataset[InferenceItem]:
        return _DatasetItems(self.dataset, list(indices))


class _DatasetItems(Dataset[InferenceItem]):
    def __init__(self, dataset: Dataset[Sample], indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> InferenceItem:
        i = self.indices[j]
        return InferenceItem(i, self.dataset[i], None, None)


@dataclass(frozen=True)
class ViewInputs(Inputs):
    """Calibrated views of one moment per sample: a leading view axis V on every field."""

    name: str = "views"

    def example(self, config: Any, *, batch: int = 2) -> Sample:
        raise NotImplementedError("multi-view inputs have no fixed example (the rig decides V)")

    def open_training(self, path: str | Path, **options: Unpack[OpenOptions]) -> Dataset[Sample]:
        return self.open(path, **options)

    def predict(self, model: Any, batch: Sample) -> Prediction:
        return model.predict(batch)

    def video_frames(self, path: str | Path, *, size: int | None) -> Iterator[VideoFrame]:
        raise _no_video("calibrated views", path)

    def samples(self, inputs: Any, *, size: int | None) -> tuple[Sample, Tensor | None]:
        raise UserError("multi-view runs predict on a multi-view set: use kp3d infer --input SET")

    def inference_source(self, path: str | Path, *, size: int | None) -> InferenceSource:
        """A multi-view set (e.g. ``kp3d synth ... --views V``), views resized to ``size``."""
        return DatasetSource(self.open(path, size=size))


@dataclass(frozen=True)
class PairedViewInputs(Inputs):
    """Calibrated views for training, single images otherwise: a method that learns from two or
    more views of one moment (``kp3d synth ... --pairs``, ``--views V``, ``--rig V``, a real
    rig) but predicts from one image. Training samples keep their view axis (V, ...);
    evaluation, inference and reports read images as :class:`Inputs` does (a multi-view set's
    views are predicted one by one, each field then (B, V, ...))."""

    name: str = "view pairs"

    def open_training(self, path: str | Path, **options: Unpack[OpenOptions]) -> Dataset[Sample]:
        """The set as it is, each sample a moment's calibrated views.

        Raises:
            DataError: an empty set, or samples that are not calibrated views (at least two
                views, each with intrinsics and extrinsics).
        """
        dataset = self.open(path, **options)
        if len(dataset) == 0:  # type: ignore[arg-type]
            raise DataError(f"{path}: no samples to train on")
        first = dataset[0]
        if (
            first.image is None
            or first.image.ndim != 4
            or first.image.shape[0] < 2
            or first.intrinsics is None
            or first.extrinsics is None
        ):
            raise DataError(
                f"{path}: this method trains on calibrated views of each moment (intrinsics and "
                "extrinsics); make them with `kp3d synth ... --pairs`, `--views V` or `--rig V`"
            )
        return dataset


@dataclass(frozen=True)
class KeypointInputs(Inputs):
    """2D keypoints per sample (lifting methods). A run folder of an image method stands for the
    keypoints it discovered on its own training data (:mod:`kp3d.engine.discovered`)."""

    name: str = "keypoints"
    batch_size: int = 256

    def image_size(self, config: Any) -> int | None:
        return None

    def example(self, config: Any, *, batch: int = 2) -> Sample:
        """``kp2d`` (batch, K, 2) and ``vis`` for K = the config's ``n_keypoints``."""
        k = int(getattr(config, "n_keypoints", 0))
        if k < 1:
            raise ValueError(f"{type(config).__name__} records no number of keypoints")
        return Sample(kp2d=torch.randn(batch, k, 2), vis=torch.ones(batch, k, dtype=torch.bool))

    def open(self, path: str | Path, **options: Unpack[OpenOptions]) -> Dataset[Sample]:
        from kp3d.engine.discovered import discovered_keypoints, is_run_folder

        if is_run_folder(path):
            path = discovered_keypoints(path)
        return super().open(path, **{**options, "size": None})

    def video_frames(self, path: str | Path, *, size: int | None) -> Iterator[VideoFrame]:
        raise _no_video("keypoints", path)

    def samples(self, inputs: Any, *, size: int | None) -> tuple[Sample, Tensor | None]:
        """Keypoints (N, K, 2) or (K, 2), array or tensor, all visible unless non-finite."""
        kp2d = torch.as_tensor(inputs, dtype=torch.float32)
        if kp2d.ndim == 2:
            kp2d = kp2d[None]
        if kp2d.ndim != 3 or kp2d.shape[-1] != 2:
            raise ValueError(f"keypoints must be (N, K, 2) or (K, 2), got {tuple(kp2d.shape)}")
        vis = kp2d.isfinite().all(-1)
        return Sample(kp2d=kp2d.nan_to_num(), vis=vis), None

    def inference_source(self, path: str | Path, *, size: int | None) -> InferenceSource:
        """A keypoint file (e.g. ``.npz`` with ``kp2d`` (N, K, 2)): new keypoints to lift."""
        return DatasetSource(self.open(path))


IMAGES = Inputs()
VIEWS = ViewInputs()
VIEW_PAIRS = PairedViewInputs()
KEYPOINTS = KeypointInputs()
