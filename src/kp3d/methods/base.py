"""The method contract: what every method provides. Methods never import each other; the engine
and the commands only see this module, and never ask what kind of method they hold.

A method is one folder ``kp3d/methods/<name>/`` with a frozen config dataclass, a
:class:`MethodModel` and a :class:`MethodSpec` registered in :data:`kp3d.methods.REGISTRY`.

The model's hooks, called by the engine (:mod:`kp3d.engine.loop`):

- :meth:`MethodModel.losses`: *unweighted* named losses of one batch (as nerfstudio's
  ``get_loss_dict``); :meth:`MethodModel.loss_weights` gives their weights from the config, and
  :meth:`MethodModel.training_step` sums them;
- :meth:`MethodModel.param_groups`: parameters with per-group learning-rate scales (as nanoGPT's
  ``configure_optimizers``), instead of multipliers hidden in parameterisations;
- :meth:`MethodModel.on_step`: schedule changes at a step (freezing statistics, warm-ups);
- :meth:`MethodModel.predict`: a typed :class:`~kp3d.methods.prediction.Prediction`;
- :meth:`MethodModel.artifacts`: what the method learned besides per-sample outputs (skeleton,
  canonical shape, basis, meshes), iterated by ``report``, ``infer`` and ``evaluate``;
- :meth:`MethodModel.diagnose`: a check of the trained model on training data, once at the end
  of training (a lifter collapsed to flat shapes), whose warnings the engine logs and whose
  numbers it stores in ``RUN/result.json``.

The spec's hooks: ``inputs`` (how the method's data is opened, :mod:`kp3d.data.inputs`),
``configure`` (settings read from the data) and ``protocols`` (the evaluation protocols of
:mod:`kp3d.evaluation` that apply).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from kp3d.data.schema import Sample
from kp3d.methods.prediction import Prediction

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from kp3d.data.inputs import Inputs


class StepOutput(NamedTuple):
    """Result of one training step: the scalar loss to minimise and named scalars to log."""

    loss: Tensor
    logs: dict[str, Tensor]


class LossOutput(NamedTuple):
    """Unweighted named scalar losses of one batch, and further named scalars to log."""

    losses: dict[str, Tensor]
    logs: dict[str, Tensor]


class Diagnosis(NamedTuple):
    """What :meth:`MethodModel.diagnose` found."""

    values: dict[str, Any]
    """Named numbers (JSON values: floats, bools, None, lists of them), stored in
    ``RUN/result.json``."""
    warnings: list[str]
    """One-line warnings for the user (empty when all is well)."""


@dataclass(frozen=True)
class ParamGroup:
    """Parameters that share an optimizer setting.

    Attributes:
        name: for messages and logs.
        params: the parameters.
        lr_scale: multiplies the run's learning rate (and its schedule).
        weight_decay: whether the run's weight decay applies (matrices and kernels usually;
            biases and normalisation scales not).
    """

    name: str
    params: tuple[nn.Parameter, ...]
    lr_scale: float = 1.0
    weight_decay: bool = True


def default_param_groups(
    module: nn.Module, *, name: str = "", lr_scale: float = 1.0, exclude: Iterable[Tensor] = ()
) -> list[ParamGroup]:
    """``module``'s trainable parameters split into decayed (ndim >= 2) and not decayed groups.

    Decay applies only to matrices and kernels: pulling biases and normalisation scales towards
    0 is not a prior anyone wants. Parameters in ``exclude`` are left out (they belong to
    another group).
    """
    skip = {id(p) for p in exclude}
    params = [p for p in module.parameters() if p.requires_grad and id(p) not in skip]
    decay = tuple(p for p in params if p.ndim >= 2)
    no_decay = tuple(p for p in params if p.ndim < 2)
    prefix = f"{name}." if name else ""
    groups = [
        ParamGroup(prefix + "decay", decay, lr_scale, True),
        ParamGroup(prefix + "no_decay", no_decay, lr_scale, False),
    ]
    return [g for g in groups if g.params]


class MethodModel(nn.Module):
    """Base class of every method's model (see the module doc for the hooks).

    Subclasses implement :meth:`losses` (or override :meth:`training_step`) and
    :meth:`predict`; both take a batch :class:`Sample` (see :mod:`kp3d.data.schema`).
    """

    diagnose_samples: ClassVar[int] = 0
    """How many training samples (at most) :meth:`diagnose` is given at the end of training;
    0 = it is not called."""

    def losses(self, batch: Sample, step: int) -> LossOutput:
        """Unweighted named losses of ``batch`` at training step ``step``."""
        raise NotImplementedError

    def loss_weights(self) -> Mapping[str, float]:
        """Weight of each named loss of :meth:`losses`, from the config (missing = 1)."""
        return {}

    def training_step(self, batch: Sample, step: int) -> StepOutput:
        """The weighted sum of :meth:`losses`; every loss and log is logged."""
        out = self.losses(batch, step)
        weights = self.loss_weights()
        # Summed in the order of losses() onto a float32 zero (the total is float32 under
        # autocast, and a model without losses gives a zero loss).
        loss = torch.zeros((), device=_device_of(out.losses, self))
        for k, v in out.losses.items():
            loss = loss + weights.get(k, 1.0) * v
        logs = {k: v.detach() for k, v in out.losses.items()} | out.logs
        return StepOutput(loss, logs)

    def param_groups(self) -> list[ParamGroup]:
        """Optimizer groups; by default every parameter at the run's learning rate."""
        return default_param_groups(self)

    def on_step(self, step: int) -> None:
        """Called by the engine before training step ``step`` (also after a resume)."""

    @torch.no_grad()
    def predict(self, batch: Sample) -> Prediction:
        """Per-sample outputs, batch first, in pixels of the batch's images."""
        raise NotImplementedError

    def artifacts(self) -> dict[str, Tensor]:
        """What the method learned besides per-sample outputs, by name: ``skeleton`` (K, K)
        symmetric non-negative edge weights, ``canonical_shape`` (K, 3), ``shape_basis``
        (n, K, 3), ... Empty for methods that learn none."""
        return {}

    @torch.no_grad()
    def diagnose(self, batch: Sample) -> Diagnosis:
        """A check of the trained model (in eval mode) on ``batch``, training data, called once
        by the engine at the end of training when :attr:`diagnose_samples` > 0 (``batch`` holds
        that many samples or the whole training set, spread over it): numbers worth keeping with the run and warnings
        about a failed result (e.g. a lifter collapsed to flat shapes). Nothing by default."""
        return Diagnosis({}, [])


def _device_of(losses: Mapping[str, Tensor], module: nn.Module) -> torch.device:
    for v in losses.values():
        return v.device
    return next((p.device for p in module.parameters()), torch.device("cpu"))


def _no_configuration(config: Any, dataset: Dataset[Sample]) -> Any:
    return config


def _no_migration(values: dict[str, Any], version: int) -> dict[str, Any]:
    return values


@dataclass(frozen=True)
class MethodSpec:
    """A registry entry.

    Attributes:
        config_cls: frozen dataclass holding every default of the method.
        build: makes the model from a config.
        inputs: how the method's data is opened for training, evaluation and inference
            (:mod:`kp3d.data.inputs`: images, views or keypoints).
        description: one line for ``kp3d train --help``.
        protocols: names of the evaluation protocols (:data:`kp3d.evaluation.PROTOCOLS`) that
            apply to the method's predictions, tried in order on a test set.
        configure: ``(config, training dataset) -> config``: settings read from the data
            (number of keypoints, categories); the user's explicit values are already in
            ``config`` and must be respected or refused with a ConfigError.
        migrate: ``(stored settings, run format version) -> settings``: the method settings a
            run folder of this or an older run format (:data:`kp3d.engine.run.RUN_FORMAT_VERSION`)
            stored, in this version's keys (options renamed or removed since); a ConfigError
            where they cannot be.
        overrides: config values this entry fixes (e.g. ``autolink`` = ``autolink3d`` with the
            3D head off).
        train_defaults: this method's defaults for :class:`kp3d.engine.TrainConfig` fields
            (e.g. a lifter's learning rate); the user's values still win.
        without_3d: the registry name of this method with its 3D part off (``kp3d train
            --no-3d``), if it has one.
    """

    config_cls: type
    build: Callable[[Any], MethodModel]
    inputs: Inputs
    description: str
    protocols: tuple[str, ...] = ()
    configure: Callable[[Any, Dataset[Sample]], Any] = _no_configuration
    migrate: Callable[[dict[str, Any], int], dict[str, Any]] = _no_migration
    overrides: dict[str, Any] = field(default_factory=dict)
    train_defaults: dict[str, Any] = field(default_factory=dict)
    without_3d: str | None = None
