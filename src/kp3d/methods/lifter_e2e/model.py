"""The end-to-end multi-category model of Can, Liniger, Paudel & Van Gool, "End-to-End Learning
of Multi-category 3D Pose and Shape Estimation" (arXiv:2112.10196): an image branch that
detects every category's keypoints, their visibility and the category, and the lifter of
``lifter`` on top, trained together from labelled 2D keypoints only (never 3D).

Image branch (:class:`~kp3d.nn.keypoint_transformer.KeypointTransformer`): DETR style, one
query per keypoint of every category (``K = sum_z k_z``) and a context query; each keypoint
query gives a location and a visibility logit, the context query the category logits and a
context vector ``rho``. Detection losses (:mod:`kp3d.losses.detection`), all restricted to the
sample's category subset ``zeta_z`` (learned from the data as in ``lifter``: the keypoints seen
visible per category)::

    L_det = w_l L_l + w_k L_k + w_b L_b

Lifting half (:class:`~kp3d.nn.lifting.LiftingEnsemble` with ``lifter``'s network: non-negative
coefficients, a context input): it takes the detector's keypoints in pixels (with their
gradient: end to end), the predicted visibility ``sigmoid(l) > 1/2`` inside ``zeta_z`` of the
sample's category (a hard mask, as the lifter's normalisation needs one; no gradient; in
training, samples with fewer than :data:`MIN_DETECTED` detected keypoints take their labelled
visibility) and
``rho``; its losses are ``lifter``'s, reprojection onto the labelled keypoints (or onto the
detector's own: ``reprojection_target``) and, from
``cycle_start``, the cycle (:func:`~kp3d.nn.lifting.cycle_losses`). Schedule in
:class:`~kp3d.methods.lifter_e2e.config.LifterE2EConfig`.

Prediction: the category is the arg-max of its logits and ``zeta_z`` is that category's subset,
so the other categories' keypoints are invisible (``vis`` 0) for the lifter and in the output.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kp3d.data.schema import Sample
from kp3d.errors import DataError
from kp3d.geometry.keypoints import visibility_weights
from kp3d.losses.detection import category_loss, location_loss, match_queries, visibility_loss
from kp3d.methods.base import (
    Diagnosis,
    LossOutput,
    MethodModel,
    ParamGroup,
    default_param_groups,
)
from kp3d.methods.lifter_e2e.config import LifterE2EConfig
from kp3d.methods.prediction import Prediction
from kp3d.metrics.flatness import flatness_check
from kp3d.nn.keypoint_transformer import Detection, KeypointTransformer
from kp3d.nn.lifting import (
    LiftingEnsemble,
    LiftingNet,
    LiftingOutput,
    cycle_losses,
    freeze_batchnorm,
)

MIN_DETECTED = 3
"""Training samples with fewer keypoints detected visible are lifted with their labelled
visibility instead (see :meth:`LifterE2E.losses`)."""


class LifterE2E(LiftingEnsemble, MethodModel):
    """Keypoint transformer + multi-category lifter, trained end to end (module doc)."""

    config: LifterE2EConfig
    diagnose_samples = 256

    def __init__(self, config: LifterE2EConfig) -> None:
        def member() -> LiftingNet:
            return LiftingNet(config.n_keypoints, coefficients="relu", **config.network_options())

        super().__init__(config, member, name="lifter-e2e")
        self._last_step: int | None = None
        """The step :meth:`on_step` last saw (None: no training in this process)."""
        self.detector = KeypointTransformer(
            config.n_keypoints,
            self.n_categories,
            context_dim=config.context_dim,
            d_model=config.d_model,
            n_heads=config.n_heads,
            n_layers=config.decoder_layers,
            ffn=config.ffn,
            tap=config.backbone_tap,
            pretrained=config.pretrained,
            location=config.location_head,
        )

    def param_groups(self) -> list[ParamGroup]:
        """The backbone at ``backbone_lr_scale`` times the run's rate, the rest at the rate."""
        backbone = self.detector.backbone
        return default_param_groups(
            backbone, name="backbone", lr_scale=self.config.backbone_lr_scale
        ) + default_param_groups(self, exclude=list(backbone.parameters()))

    def on_step(self, step: int) -> None:
        """From ``cycle_start`` on, the lifter's BatchNorm layers run on their running statistics
        (the cycle's synthetic views must not shift them; the backbone's never move)."""
        cfg = self.config
        self._last_step = step
        if cfg.cycle_start is not None and step >= cfg.cycle_start:
            freeze_batchnorm(self)

    def loss_weights(self) -> dict[str, float]:
        cfg, E = self.config, len(self.members)
        return {
            **super().loss_weights(),
            "camera": E * cfg.camera_weight,
            "shape": E * cfg.shape_weight,
            "location": cfg.location_weight,
            "visibility": cfg.visibility_weight,
            "category": cfg.category_weight,
        }

    @staticmethod
    def _pixels(image: Tensor) -> Tensor:
        """(2,) the image's ``(W, H)``: unit coordinates times this are pixels."""
        h, w = image.shape[-2:]
        return torch.tensor([w, h], dtype=image.dtype, device=image.device)

    def detection_losses(
        self, det: Detection, kp2d: Tensor, vis: Tensor, category: Tensor
    ) -> dict[str, Tensor]:
        """``location`` (L_l), ``visibility`` (L_k), ``category`` (L_b) of ``det`` against the
        labelled keypoints ``kp2d`` (B, K, 2) in unit coordinates, ``vis`` (B, K) bool and the
        categories (B,); every keypoint term over each sample's category subset only."""
        cfg = self.config
        subset = self.support[category]
        assignment = match_queries(
            det.location,
            det.logit,
            kp2d,
            vis,
            subset,
            kind=cfg.matching,
            location_weight=cfg.location_weight,
            visibility_weight=cfg.visibility_weight,
        )
        return {
            "location": location_loss(det.location, kp2d, assignment),
            "visibility": visibility_loss(det.logit, assignment, subset),
            "category": category_loss(det.category_logits, category),
        }

    def lifting_losses(
        self,
        kp2d: Tensor,
        vis: Tensor,
        category: Tensor,
        context: Tensor,
        step: int,
        *,
        target: Tensor | None = None,
        target_vis: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """``lifter``'s losses for keypoints (B, K, 2), visibility (B, K), categories (B,) and
        the context (B, C): :meth:`~kp3d.nn.lifting.LiftingEnsemble.member_losses` (reprojected
        onto ``target`` with ``target_vis`` where given) and, from ``cycle_start`` on, the
        cycle's (means over the members)."""
        cfg = self.config
        losses, batch = self.member_losses(
            kp2d, vis, category, context, target=target, target_vis=target_vis
        )
        if cfg.cycle_start is not None and step >= cfg.cycle_start:
            ctx, E = batch.context, len(self.members)
            cycles = [
                cycle_losses(
                    net,
                    LiftingOutput(*(t[e] for t in batch.out)),
                    self.support[batch.category[e]],
                    None if ctx is None else ctx[e],
                    delta=cfg.huber_delta,
                )
                for e, net in enumerate(self.members)
            ]
            losses["camera"] = torch.stack([c.camera for c in cycles]).sum() / E
            losses["shape"] = torch.stack([c.shape for c in cycles]).sum() / E
        return losses

    def losses(self, batch: Sample, step: int) -> LossOutput:
        """Detection losses; after ``detector_steps`` also the lifting losses on the detector's
        outputs.

        Raises:
            DataError: a batch without images or labelled 2D keypoints.
        """
        if batch.image is None or batch.kp2d is None:
            raise DataError(
                "lifter-e2e trains on images with labelled 2D keypoints (image and kp2d)"
            )
        image = batch.image
        det = self.detector(image)
        pixels = self._pixels(image)
        vis = visibility_weights(batch.kp2d, batch.vis) > 0
        category = self.categories(batch.category, image.shape[0], image.device)
        self.update_support(vis.to(image.dtype), category)
        losses = self.detection_losses(det, batch.kp2d / pixels, vis, category)
        logs = {
            "category_accuracy": (det.category_logits.argmax(-1) == category).float().mean(),
        }
        if step >= self.config.detector_steps:
            own = self.support[category]
            vis_hat = (det.logit.detach() > 0) & own
            # A sample with (almost) nothing detected has no 2D shape to normalise, and the
            # gradient of its zero RMS radius is NaN: it is lifted with its labelled visibility.
            few = vis_hat.sum(-1) < MIN_DETECTED
            vis_hat = torch.where(few[:, None], vis & own, vis_hat)
            labelled = self.config.reprojection_target == "labelled"
            losses.update(
                self.lifting_losses(
                    det.location * pixels,
                    vis_hat,
                    category,
                    det.context,
                    step,
                    target=batch.kp2d if labelled else None,
                    target_vis=vis & own if labelled else None,
                )
            )
        return LossOutput(losses, logs)

    @torch.no_grad()
    def predict(self, batch: Sample) -> Prediction:
        """``kp2d`` (pixels), ``vis`` (visibility probability, 0 outside the predicted category's
        keypoints), ``kp3d`` and ``kp3d_image`` (x, y the detected keypoints in pixels, z the
        lifted depth in pixel units), ``R``; ``extras``: ``category`` (B,), ``category_probs``
        (B, Z), ``context`` (B, C) and the lifter's ``alpha``, ``shape``, ``scale``,
        ``centre``."""
        if batch.image is None:
            raise DataError("lifter-e2e predicts from images")
        image = batch.image
        det = self.detector(image)
        category = det.category_logits.argmax(-1)
        subset = self.support[category]
        prob = det.logit.sigmoid() * subset
        kp2d = det.location * self._pixels(image)
        pred = self.ensemble_predictions(kp2d, prob > 0.5, det.context)
        kp3d = pred.pop("kp3d")
        return Prediction(
            kp2d=kp2d,
            vis=prob,
            kp3d=kp3d,
            kp3d_image=kp3d.clone(),
            R=pred.pop("R"),
            extras={
                **pred,
                "category": category,
                "category_probs": det.category_logits.softmax(-1),
                "context": det.context,
            },
            image_size=(int(image.shape[-2]), int(image.shape[-1])),
        )

    @torch.no_grad()
    def diagnose(self, batch: Sample) -> Diagnosis:
        """Whether the lifted keypoints of ``batch`` (training images) are near flat
        (:func:`~kp3d.metrics.flatness.flatness_check` over the detected visible keypoints;
        skipped while the lifter has not trained, before ``detector_steps``, as in a
        detector-only run), the training images' category accuracy, and
        :meth:`~kp3d.nn.lifting.LiftingEnsemble.ensemble_summary`."""
        pred = self.predict(batch)
        assert pred.kp3d is not None and pred.vis is not None
        values: dict[str, float | bool | None] = {}
        warnings: list[str] = []
        last = self._last_step
        if last is None or last >= self.config.detector_steps:
            values, warnings = flatness_check(pred.kp3d, pred.vis > 0.5, method=self.name)
        if batch.category is not None:
            hit = pred.extras["category"] == batch.category.to(pred.extras["category"])
            values["category_accuracy"] = float(hit.float().mean())
        return Diagnosis({**values, **self.ensemble_summary()}, warnings)


def build(config: LifterE2EConfig) -> LifterE2E:
    return LifterE2E(config)
