"""A DETR-style keypoint detector for several categories (Can et al.'s image branch).

A convolutional backbone (EfficientNet-Lite0's first blocks, ImageNet weights, fine-tuned: the
paper uses a ResNet-50) gives a feature map; a 1x1 convolution maps it to ``d_model`` channels
and a fixed sine encoding of each cell's position is added (DETR). A transformer decoder
(:class:`torch.nn.TransformerDecoder`) attends from ``K + 1`` learned queries to these cells:
one query per keypoint of every category (``K = sum_z k_z``) and one context query. Shared heads
map each keypoint query to a 2D location in unit image coordinates ``u / W, v / H`` and a
visibility logit; the context query gives the category logits and the context vector ``rho``
that the lifter takes besides the keypoints.

Two location heads (:data:`LocationHead`): ``regression``, DETR's, an MLP and a sigmoid on the
query's output; or ``heatmap``, the query's own attention map over the feature cells: the
soft-argmax of ``softmax_n(q_k . m_n / sqrt(d))`` over the cell centres (``q_k`` the decoded
query, ``m_n`` the memory, each through a linear map) plus an offset of at most half a cell from
an MLP on ``q_k``. The heatmap ties a keypoint to the image's cells, as heatmap detectors do,
instead of asking an MLP to compute its coordinates from the query's features.

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

LocationHead = Literal["regression", "heatmap"]
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
    """EfficientNet-Lite0's stem and blocks ``0 .. tap`` (the rest of the classifier dropped):
    RGB (B, 3, H, W) in [0, 1] -> the features of block ``tap``."""

    def __init__(self, tap: int, *, pretrained: bool = True) -> None:
        super().__init__()
        net = load_efficientnet_lite0(taps=(tap,)) if pretrained else EfficientNetLite0((tap,))
        self.tap = tap
        self.stem, self.bn0 = net._conv_stem, net._bn0
        self.blocks = nn.ModuleList(list(net._blocks)[: tap + 1])
        self.channels = _out_channels(self.blocks)

    def forward(self, image: Tensor) -> Tensor:
        h = F.relu6(self.bn0(self.stem(EfficientNetLite0.normalise(image))))
        return tapped_outputs(h, self.blocks, (self.tap,))[0]

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
            40 channels; 10 = 1/16, 112 channels).
        pretrained: start from ImageNet weights.
        location: the location head, ``regression`` or ``heatmap`` (module doc).
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
        location: LocationHead = "heatmap",
    ) -> None:
        super().__init__()
        if location not in get_args(LocationHead):
            raise ValueError(f"location must be one of {get_args(LocationHead)}, got {location!r}")
        self.n_keypoints = n_keypoints
        self.location = location
        self.backbone = Backbone(tap, pretrained=pretrained)
        self.project = nn.Conv2d(self.backbone.channels, d_model, 1)
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
        if location == "heatmap":
            nn.init.zeros_(self.location_head[-1].weight)
            nn.init.zeros_(self.location_head[-1].bias)
            self.heat_query = nn.Linear(d_model, d_model)
            self.heat_key = nn.Linear(d_model, d_model)
        self.visibility_head = nn.Linear(d_model, 1)
        self.category_head = nn.Linear(d_model, n_categories)
        self.context_head = nn.Linear(d_model, context_dim) if context_dim else None
        self.context_dim = context_dim

    def memory(self, image: Tensor) -> Tensor:
        """(B, h, w, d_model) the decoder's memory: projected features plus positions."""
        f = self.project(self.backbone(image))
        h, w = f.shape[-2:]
        pos = sine_position_encoding(h, w, f.shape[1], device=f.device).to(f.dtype)
        return (f.flatten(2).transpose(1, 2) + pos).unflatten(1, (h, w))

    def locate(self, kp: Tensor, memory: Tensor) -> Tensor:
        """(B, K, 2) unit locations from the decoded keypoint queries ``kp`` (B, K, d_model) and
        the memory (B, h, w, d_model), by the location head (module doc)."""
        if self.location == "regression":
            return self.location_head(kp).sigmoid()
        h, w, d = memory.shape[1:]
        keys = self.heat_key(memory.flatten(1, 2))
        logits = self.heat_query(kp) @ keys.transpose(1, 2) / math.sqrt(d)
        centre = soft_argmax(logits.unflatten(-1, (h, w))).kp
        half_cell = centre.new_tensor((1 / w, 1 / h))  # in normalised coordinates
        xy = centre + self.location_head(kp).tanh() * half_cell
        return (xy + 1) / 2  # normalised to unit coordinates (kp3d.geometry's conventions)

    def decode(self, memory: Tensor, queries: Tensor) -> Detection:
        """The heads on the decoder's outputs for ``queries`` (K + 1, d_model): the first K are
        keypoint queries, the last the context query; ``memory`` (B, h, w, d_model)."""
        out = self.decoder(queries.expand(memory.shape[0], -1, -1), memory.flatten(1, 2))
        kp, ctx = out[:, :-1], out[:, -1]
        context = (
            self.context_head(ctx) if self.context_head is not None else ctx.new_zeros(len(ctx), 0)
        )
        return Detection(
            location=self.locate(kp, memory),
            logit=self.visibility_head(kp)[..., 0],
            category_logits=self.category_head(ctx),
            context=context,
        )

    def forward(self, image: Tensor) -> Detection:
        """RGB (B, 3, H, W) in [0, 1] -> :class:`Detection`."""
        return self.decode(self.memory(image), self.queries)


__all__ = [
    "Backbone",
    "Detection",
    "KeypointTransformer",
    "LocationHead",
    "sine_position_encoding",
]
