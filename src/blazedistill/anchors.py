"""Anchor centres of MediaPipe's SsdAnchorsCalculator (fixed-size anchors, aspect ratio 1, as BlazeFace uses)."""

from __future__ import annotations

import math

import numpy as np

from blazedistill.specs import AnchorOptions


def anchors_per_cell(options: AnchorOptions, num_layers: int) -> int:
    """Anchors per feature-map cell for `num_layers` consecutive layers sharing one stride."""
    per_layer = 1 + (1 if options.interpolated_scale_aspect_ratio > 0 else 0)
    return per_layer * num_layers


def generate_anchors(options: AnchorOptions) -> np.ndarray:
    """(A, 2) float32 anchor centres (x, y) in [0, 1]: per stride group, row-major cells, then a cell's anchors.

    Consecutive layers with the same stride share one feature map (MediaPipe merges them).
    """
    if not options.fixed_anchor_size:
        raise NotImplementedError("only fixed_anchor_size=True (every anchor 1 x 1) is supported")
    centres = []
    layer = 0
    strides = options.strides
    while layer < len(strides):
        stride = strides[layer]
        group = 1
        while layer + group < len(strides) and strides[layer + group] == stride:
            group += 1
        rows = cols = math.ceil(options.input_size / stride)
        ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        cell = np.stack([(xs + options.anchor_offset) / cols, (ys + options.anchor_offset) / rows], axis=-1)
        per_cell = anchors_per_cell(options, group)
        centres.append(np.repeat(cell.reshape(-1, 2), per_cell, axis=0))
        layer += group
    return np.concatenate(centres).astype(np.float32)
