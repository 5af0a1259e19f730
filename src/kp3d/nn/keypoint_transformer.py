"""A DETR-style keypoint detector for several categories (Can et al.'s image branch).

A convolutional backbone (EfficientNet-Lite0's first blocks, ImageNet weights, fine-tuned: the
paper uses a ResNet-50) gives a feature map; a 1x1 convolution maps it to ``d_model`` channels
and a fixed sine encoding of each cell's position is added (DETR). A transformer decoder
(:class:`torch.nn.TransformerDecoder`) attends from ``K + 1`` learned queries to these cells:
one query per keypoint of every category (``K = sum_z k_z``) and one context query. Shared heads
map each keypoint query to a 2D location in unit image coordinates ``u / W, v / H`` and a
visibility logit; the context query gives the category logits and the context vector ``rho``
that the lifter takes besides the keypoints.

Three location heads (:data:`LocationHead`): ``regression``, DETR's, an MLP and a sigmoid on the
query's output; ``heatmap``, the query's own attention map over the feature cells: the
soft-argmax of ``softmax_n(q_k . m_n / sqrt(d))`` over the cell centres (``q_k`` the decoded
query, ``m_n`` the memory, each through a linear map) plus an offset of at most half a cell from
an MLP on ``q_k``; or ``refined``, the heatmap's location moved by a second soft-argmax on a
finer map (1/4 resolution: the backbone's block 2 plus the projected features upsampled, as a
feature pyramid's top-down path), over a window of 5 x 5 fine cells centred on it, the same
query's attention (through its own linear map) over the window's bilinear samples. The heatmaps
tie a keypoint to the image's cells, as heatmap detectors do, instead of asking an MLP to
compute its coordinates from the query's features; the window gives the 8 x 8 cells of a 64 px
image the precision of the 16 x 16 ones without their global search (a soft-argmax over all of
block 2's 16 x 16 cells learned more slowly: docs/results.md).

The decoder sees the queries only through their embeddings and the heads are shared, so
permuting the keypoint queries permutes the outputs (equivariance); the image features carry
their positions, the queries none.

The backbone's BatchNorm layers keep ImageNet's statistics (eval mode always; their scales and
shifts still train), as DETR freezes them: small batches give poor statistics.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple, get_args

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from kp3d.geometry.heatmaps import soft_argmax
from kp3d.nn.perceptual import EfficientNetLite0, load_efficientnet_lite0, tapped_outputs

LocationHead = Literal["regression", "heatmap", "refined"]
"""How a keypoint query gives its location (module doc)."""


class Detection(NamedTuple):
    """What :class:`KeypointTransformer` predicts for a batch."""

    location: Tensor
    """(B, K, 2) keypoint locations in unit image coordinates ``(u / W, v / H)``."""
    logit: Tensor
    """(B, K) visibility logits."""
    category_logits: Tensor
    """(B, Z) category logits."""
    context: Tensor
    """(B, C) the context vector ``rho``."""


class Features(NamedTuple):
    """What the decoder and the location heads read of an image."""

    memory: Tensor
    """(B, h, w, d_model) projected backbone features plus the sine positions."""
    fine: Tensor | None
    """(B, d_model, H / 4, W / 4) the ``refined`` head's fine map (block 2 plus the upsampled
    projected features); None for the other heads."""


FINE_TAP = 2
"""The backbone block the ``refined`` head reads: 24 channels at 1/4 resolution."""
REFINE_RADIUS = 2
"""The ``refined`` head's window: ``2 r + 1`` fine cells a side."""


def sine_position_encoding(height: int, width: int, dim: int, *, device=None) -> Tensor:
    """(height * width, dim) fixed encoding of cell centres (DETR): for the unit coordinates
    ``x = (j + 0.5) / width`` and ``y``, ``sin`` and ``cos`` of ``2 pi f x`` and ``2 pi f y``
    for ``dim / 4`` frequencies ``f = 1, 2, 4, ...``; ``dim`` a multiple of 4."""
    if dim % 4:
        raise ValueError(f"sine_position_encoding: dim must be a multiple of 4, got {dim}")
    y = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    x = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    freq = 2 * math.pi * 2.0 ** torch.arange(dim // 4, device=device, dtype=torch.float32)
    parts = [f(c.flatten()[:, None] * freq) for c in (xx, yy) for f in (torch.sin, torch.cos)]
    return torch.cat(parts, dim=-1)


class Backbone(nn.Module):
    """EfficientNet-Lite0's stem and blocks ``0 .. max(taps)`` (the rest of the classifier
    dropped): RGB (B, 3, H, W) in [0, 1] -> the features of the blocks ``taps`` (sorted)."""

    def __init__(self, taps: tuple[int, ...], *, pretrained: bool = True) -> None:
        super().__init__()
        net = load_efficientnet_lite0(taps=taps) if pretrained else EfficientNetLite0(taps)
        self.taps = taps
        self.stem, self.bn0 = net._conv_stem, net._bn0
        self.blocks = nn.ModuleList(list(net._blocks)[: taps[-1] + 1])
        self.channels = [_out_channels(self.blocks[: t + 1]) for t in taps]

    def forward(self, image: Tensor) -> list[Tensor]:
        h = F.relu6(self.bn0(self.stem(EfficientNetLite0.normalise(image))))
        return tapped_outputs(h, self.blocks, self.taps)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


def _out_channels(blocks: nn.ModuleList) -> int:
    convs = [m for m in blocks[-1].modules() if isinstance(m, nn.Conv2d)]
    return int(convs[-1].out_channels)


class KeypointTransformer(nn.Module):
    """Backbone, transformer decoder with ``n_keypoints + 1`` queries, and heads (module doc).

    Args:
        n_keypoints: K, every category's keypoints together.
        n_categories: Z.
        context_dim: length C of the context vector.
        d_model, n_heads, n_layers, ffn: the decoder's width, attention heads, layers and
            feed-forward width.
        tap: the backbone block whose features the decoder reads (0..15; 4 = 1/8 resolution,
            40 channels; 10 = 1/16, 112 channels); above :data:`FINE_TAP` for ``refined``.
        pretrained: start from ImageNet weights.
        location: the location head, ``regression``, ``heatmap`` or ``refined`` (module doc).

    Raises:
        ValueError: an unknown ``location``, or ``refined`` with ``tap <= FINE_TAP``.
    """

    def __init__(
        self,
        n_keypoints: int,
        n_categories: int,
        *,
        context_dim: int,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        ffn: int = 128,
        tap: int = 4,
        pretrained: bool = True,
        location: LocationHead = "refined",
    ) -> None:
        super().__init__()
        if location not in get_args(LocationHead):
            raise ValueError(f"location must be one of {get_args(LocationHead)}, got {location!r}")
        self.n_keypoints = n_keypoints
        self.location = location
        refined = location == "refined"
        if refined and tap <= FINE_TAP:
            raise ValueError(
                f"the refined location head reads block {FINE_TAP}: tap must be > {FINE_TAP}, "
                f"got {tap}"
            )
        self.backbone = Backbone((FINE_TAP, tap) if refined else (tap,), pretrained=pretrained)
        self.project = nn.Conv2d(self.backbone.channels[-1], d_model, 1)
        self.queries = nn.Parameter(torch.randn(n_keypoints + 1, d_model) * d_model**-0.5)
        layer = nn.TransformerDecoderLayer(
            d_model, n_heads, ffn, dropout=0.0, batch_first=True, norm_first=True
        )
        self.decoder = nn.TransformerDecoder(layer, n_layers, norm=nn.LayerNorm(d_model))
        # regression: the location itself (before the sigmoid); heatmap: the offset from the
        # soft-argmax in half cells (before the tanh), starting at zero.
        self.location_head = nn.Sequential(
            nn.Linear(d_model, d_model), nn.ReLU(), nn.Linear(d_model, 2)
        )
        if location != "regression":
            nn.init.zeros_(self.location_head[-1].weight)
            nn.init.zeros_(self.location_head[-1].bias)
            self.heat_query = nn.Linear(d_model, d_model)
            self.heat_key = nn.Linear(d_model, d_model)
        if refined:
            self.fine_project = nn.Conv2d(self.backbone.channels[0], d_model, 1)
            self.refine_query = nn.Linear(d_model, d_model)
        self.visibility_head = nn.Linear(d_model, 1)
        self.category_head = nn.Linear(d_model, n_categories)
        self.context_head = nn.Linear(d_model, context_dim) if context_dim else None
        self.context_dim = context_dim

    def features(self, image: Tensor) -> Features:
        """What the decoder and the location head read of ``image`` (B, 3, H, W): the memory,
        projected features plus positions, and for the ``refined`` head the fine map."""
        taps = self.backbone(image)
        f = self.project(taps[-1])
        h, w = f.shape[-2:]
        pos = sine_position_encoding(h, w, f.shape[1], device=f.device).to(f.dtype)
        memory = (f.flatten(2).transpose(1, 2) + pos).unflatten(1, (h, w))
        if self.location != "refined":
            return Features(memory, None)
        # The fine map: block 2's own features plus the coarse ones upsampled (a feature
        # pyramid's top-down path), so that it carries what the keypoint queries attend to.
        fine = self.fine_project(taps[0])
        fine = fine + F.interpolate(f, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        return Features(memory, fine)

    def locate(self, kp: Tensor, features: Features) -> Tensor:
        """(B, K, 2) unit locations from the decoded keypoint queries ``kp`` (B, K, d_model) and
        the image's :class:`Features`, by the location head (module doc)."""
        if self.location == "regression":
            return self.location_head(kp).sigmoid()
        memory = features.memory
        h, w, d = memory.shape[1:]
        keys = self.heat_key(memory.flatten(1, 2))
        logits = self.heat_query(kp) @ keys.transpose(1, 2) / math.sqrt(d)
        centre = soft_argmax(logits.unflatten(-1, (h, w))).kp
        half_cell = centre.new_tensor((1 / w, 1 / h))  # in normalised coordinates
        xy = centre + self.location_head(kp).tanh() * half_cell
        if features.fine is not None:
            xy = xy + self.refinement(kp, features.fine, xy)
        return (xy + 1) / 2  # normalised to unit coordinates (kp3d.geometry's conventions)

    def refinement(self, kp: Tensor, fine: Tensor, xy: Tensor) -> Tensor:
        """(B, K, 2) the ``refined`` head's correction of the locations ``xy`` (B, K, 2,
        normalised): the soft-argmax of the query's attention over the fine map ``fine``
        (B, d, h, w) sampled on a window of ``(2 r + 1)^2`` fine cells centred on ``xy``, as an
        offset from the centre; ``r`` = :data:`REFINE_RADIUS`."""
        d, h, w = fine.shape[1:]
        r = REFINE_RADIUS
        steps = torch.arange(-r, r + 1, dtype=xy.dtype, device=xy.device)
        dy, dx = torch.meshgrid(steps * (2 / h), steps * (2 / w), indexing="ij")
        offsets = torch.stack((dx.flatten(), dy.flatten()), dim=-1)  # (S, 2), S = (2r+1)^2
        B, K = xy.shape[:2]
        # Sampling is linear: sample each query's score map (one channel) rather than the d
        # channels of the features, the same scores from d times fewer samples (the scores
        # over the whole map cost less than the d-channel samples did, as measured).
        scores = torch.einsum("bkd,bdhw->bkhw", self.refine_query(kp), fine) / math.sqrt(d)
        grid = (xy[:, :, None] + offsets).reshape(B * K, 1, -1, 2)  # (B K, 1, S, 2)
        logits = F.grid_sample(
            scores.reshape(B * K, 1, h, w), grid, align_corners=False, padding_mode="border"
        )
        return logits.view(B, K, -1).softmax(-1) @ offsets

    def decode(self, features: Features, queries: Tensor) -> Detection:
        """The heads on the decoder's outputs for ``queries`` (K + 1, d_model): the first K are
        keypoint queries, the last the context query."""
        memory = features.memory
        out = self.decoder(queries.expand(memory.shape[0], -1, -1), memory.flatten(1, 2))
        kp, ctx = out[:, :-1], out[:, -1]
        context = (
            self.context_head(ctx) if self.context_head is not None else ctx.new_zeros(len(ctx), 0)
        )
        return Detection(
            location=self.locate(kp, features),
            logit=self.visibility_head(kp)[..., 0],
            category_logits=self.category_head(ctx),
            context=context,
        )

    def forward(self, image: Tensor) -> Detection:
        """RGB (B, 3, H, W) in [0, 1] -> :class:`Detection`."""
        return self.decode(self.features(image), self.queries)


__all__ = [
    "FINE_TAP",
    "REFINE_RADIUS",
    "Backbone",
    "Detection",
    "Features",
    "KeypointTransformer",
    "LocationHead",
    "sine_position_encoding",
]
