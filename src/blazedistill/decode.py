"""Raw BlazeFace outputs -> boxes, keypoints and scores (MediaPipe TensorsToDetectionsCalculator settings)."""

from __future__ import annotations

import torch

NUM_KEYPOINTS = 6
SCORE_CLIP = 100.0


def decode_boxes(raw: torch.Tensor, anchors: torch.Tensor, scale: float) -> torch.Tensor:
    """(N, A, 16) raw regressors -> (N, A, 16): xmin, ymin, xmax, ymax, then 6 keypoints (x, y).

    Raw order is x_center, y_center, w, h, keypoints, in input pixels relative to the anchor centre;
    results are normalised to the model input (x = r0 / scale + anchor_x, w = r2 / scale, no exp).
    `anchors` is (A, 2) centres.
    """
    if raw.shape[-1] != 4 + 2 * NUM_KEYPOINTS:
        raise ValueError(f"expected raw regressors (N, A, 16), got {tuple(raw.shape)}")
    points = raw.reshape(*raw.shape[:-1], -1, 2) / scale  # (N, A, 8, 2): centre, size, 6 keypoints
    centre = points[..., 0, :] + anchors
    half = points[..., 1, :] / 2
    keypoints = points[..., 2:, :] + anchors[:, None, :]
    return torch.cat([centre - half, centre + half, keypoints.flatten(-2)], dim=-1)


def decode_scores(logits: torch.Tensor) -> torch.Tensor:
    """(N, A, 1) or (N, A) raw classifier logits -> (N, A) scores sigmoid(clip(logit, -100, 100))."""
    if logits.dim() == 3:
        logits = logits.squeeze(-1)
    return torch.sigmoid(logits.clamp(-SCORE_CLIP, SCORE_CLIP))


def valid_detections(decoded: torch.Tensor, scores: torch.Tensor, min_score: float) -> torch.Tensor:
    """(N, A) mask: score >= min_score, all coordinates finite, non-negative box width and height."""
    width = decoded[..., 2] - decoded[..., 0]
    height = decoded[..., 3] - decoded[..., 1]
    finite = torch.isfinite(decoded).all(dim=-1)
    return (scores >= min_score) & finite & (width >= 0) & (height >= 0)
