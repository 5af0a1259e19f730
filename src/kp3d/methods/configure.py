"""Settings read from the training data, for the methods' :attr:`MethodSpec.configure` hooks,
and stored settings of older run formats, for their :attr:`MethodSpec.migrate` hooks.

Each data helper fills a field that the user left unset and checks one the user set against the
data; the user's explicit value (flag, config file, or a resumed run's stored value) always
wins where it fits the data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch.utils.data import Dataset

from kp3d.data.schema import Sample
from kp3d.errors import ConfigError, DataError


def data_num_categories(dataset: Dataset[Sample]) -> int | None:
    """Number of categories of a dataset: its ``num_categories``, else 1 + the largest
    ``category`` label of its samples (keypoint datasets are cheap to scan); None when the
    samples carry no category labels."""
    n = getattr(dataset, "num_categories", None)
    if n is not None:
        return int(n)
    largest = None
    for i in range(len(dataset)):  # type: ignore[arg-type]
        category = dataset[i].category
        if category is None:
            return None
        largest = max(int(category), -1 if largest is None else largest)
    return None if largest is None else largest + 1


def keypoints_from_data(config: Any, dataset: Dataset[Sample], field: str = "n_keypoints") -> Any:
    """``config`` with ``field = 0`` (unset) replaced by the number of keypoints K of the first
    sample's ``kp2d``.

    Raises:
        DataError: the field is unset and the data has no 2D keypoints.
    """
    if getattr(config, field) == 0:
        kp2d = dataset[0].kp2d
        if kp2d is None:
            raise DataError("the data has no 2D keypoints, which this method needs as input")
        config = dataclasses.replace(config, **{field: int(kp2d.shape[-2])})
    return config


def categories_from_data(config: Any, dataset: Dataset[Sample], field: str = "n_categories") -> Any:
    """``config`` with ``field = None`` (unset) replaced by the data's number of categories
    (:func:`data_num_categories`; 1 when the samples carry no labels).

    Raises:
        ConfigError: a set value smaller than the data's number of categories.
    """
    given = getattr(config, field)
    n_data = data_num_categories(dataset)
    if given is None:
        return dataclasses.replace(config, **{field: 1 if n_data is None else n_data})
    if n_data is not None and int(given) < n_data:
        raise ConfigError(
            f"{field} = {given}, but the data has {n_data} categories (labels 0..{n_data - 1}); "
            f"set {field} to at least {n_data} or leave it unset to take it from the data"
        )
    return config


def keypoints_and_categories_from_data(config: Any, dataset: Dataset[Sample]) -> Any:
    """:func:`keypoints_from_data` and :func:`categories_from_data` (the default fields), a
    ``configure`` hook for methods whose networks several categories share."""
    return categories_from_data(keypoints_from_data(config, dataset), dataset)


def drop_inert_keys(
    values: Mapping[str, Any],
    keys: Iterable[str],
    *,
    guard: str,
    active: Callable[[Any], bool],
    error: str,
) -> dict[str, Any]:
    """Stored settings ``values`` without ``keys``: settings that a method lost in a change of
    run format and that had no effect while the setting ``guard`` was off.

    Raises:
        ConfigError: ``guard`` was on (``active(values.get(guard))``): the run's model needs what
            the method lost; ``error``, with ``{value}`` the guard's value, says so.
    """
    value = values.get(guard)
    if active(value):
        raise ConfigError(error.format(value=value))
    dropped = set(keys)
    return {k: v for k, v in values.items() if k not in dropped}


__all__ = [
    "categories_from_data",
    "data_num_categories",
    "drop_inert_keys",
    "keypoints_and_categories_from_data",
    "keypoints_from_data",
]
