"""The shared SSD head that turns a backbone's feature maps into the BlazeFace output contract.

Adding a backbone takes one function. A backbone is any ``nn.Module`` whose ``forward`` maps
(N, 3, S, S) to a list with one feature map per anchor level of the spec, finest first (for the
front/short_range/back layouts: the 16×16 map, then the 8×8 map; for full_range: one 48×48 map).
Channel counts are read from a dry run, so nothing else needs declaring::

    @register_student("my_net")
    def my_net(spec: ModelSpec, width: int = 32) -> nn.Module:
        return SSDStudent(MyBackbone(spec, width), spec)

``anchor_levels(spec)`` tells the backbone which grids (and strides) it must produce.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from blazedistill.specs import ModelSpec

#: values per anchor in the regressor output: x, y, w, h and 6 keypoints (x, y)
NUM_COORDS = 16


@dataclass(frozen=True)
class AnchorLevel:
    """One feature map of an SSD layout: its stride, its grid side and the anchors in each cell."""

    stride: int
    grid: int
    anchors_per_cell: int

    @property
    def num_anchors(self) -> int:
        return self.grid * self.grid * self.anchors_per_cell


def anchor_levels(spec: ModelSpec) -> list[AnchorLevel]:
    """The feature maps of a spec's anchor layout, finest first (MediaPipe SsdAnchorsCalculator rules).

    Consecutive anchor layers with the same stride share one feature map; every layer adds one anchor
    per cell (aspect ratio 1) plus one when ``interpolated_scale_aspect_ratio`` is positive.
    """
    opts = spec.anchors
    per_layer = 1 + int(opts.interpolated_scale_aspect_ratio > 0)
    levels: list[AnchorLevel] = []
    for stride in opts.strides:
        if levels and levels[-1].stride == stride:
            last = levels[-1]
            levels[-1] = AnchorLevel(stride, last.grid, last.anchors_per_cell + per_layer)
        else:
            levels.append(AnchorLevel(stride, math.ceil(opts.input_size / stride), per_layer))
    total = sum(level.num_anchors for level in levels)
    if total != spec.num_anchors:
        raise ValueError(f"spec {spec.name!r}: anchor options give {total} anchors, spec says {spec.num_anchors}")
    return levels


class SSDHead(nn.Module):
    """1×1 conv classifier and regressor per level; outputs NHWC-ordered rows, levels concatenated."""

    def __init__(self, in_channels: Sequence[int], levels: Sequence[AnchorLevel]) -> None:
        super().__init__()
        if len(in_channels) != len(levels):
            raise ValueError(f"{len(in_channels)} feature maps for {len(levels)} anchor levels")
        self.classifiers = nn.ModuleList(
            nn.Conv2d(c, level.anchors_per_cell, 1) for c, level in zip(in_channels, levels, strict=True)
        )
        self.regressors = nn.ModuleList(
            nn.Conv2d(c, level.anchors_per_cell * NUM_COORDS, 1) for c, level in zip(in_channels, levels, strict=True)
        )

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        regs, scores = [], []
        for feature, regressor, classifier in zip(features, self.regressors, self.classifiers, strict=True):
            n = feature.shape[0]
            regs.append(regressor(feature).permute(0, 2, 3, 1).reshape(n, -1, NUM_COORDS))
            scores.append(classifier(feature).permute(0, 2, 3, 1).reshape(n, -1, 1))
        return torch.cat(regs, dim=1), torch.cat(scores, dim=1)


class SSDStudent(nn.Module):
    """A backbone plus the shared SSD head: a BlazeFace-contract model for ``spec``.

    ``forward`` takes (N, 3, S, S) in [-1, 1] and returns (regressors (N, A, 16), classificators
    (N, A, 1)) in MediaPipe's anchor order. The backbone's feature maps are checked against the
    spec's anchor levels at construction (one dry run in eval mode, so BN statistics are untouched).
    """

    def __init__(self, backbone: nn.Module, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        levels = anchor_levels(spec)
        self.head = SSDHead(_feature_channels(backbone, spec, levels), levels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.backbone(x))


def _feature_channels(backbone: nn.Module, spec: ModelSpec, levels: Sequence[AnchorLevel]) -> list[int]:
    """Channel counts of the backbone's feature maps; ValueError when they do not fit the levels."""
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        features = backbone(torch.zeros(1, 3, spec.input_size, spec.input_size))
    backbone.train(was_training)
    name = type(backbone).__name__
    if not isinstance(features, (list, tuple)) or len(features) != len(levels):
        raise ValueError(f"backbone {name} must return a list of {len(levels)} feature maps for spec {spec.name!r}")
    for feature, level in zip(features, levels, strict=True):
        if feature.dim() != 4 or tuple(feature.shape[2:]) != (level.grid, level.grid):
            raise ValueError(
                f"backbone {name}: feature map of shape {tuple(feature.shape)} where spec {spec.name!r} needs "
                f"{level.grid}x{level.grid} (stride {level.stride})"
            )
    return [feature.shape[1] for feature in features]
