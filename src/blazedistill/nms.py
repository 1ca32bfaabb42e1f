"""MediaPipe WEIGHTED non-maximum suppression, in the style of torchvision.ops (pure tensor functions).

Sort by score; the top detection's cluster is every remaining detection whose IoU with it exceeds the
threshold, plus the top itself (always, so zero-area or NaN boxes cannot stall the loop). The output is
the score-weighted mean of the cluster's rows (box and keypoints) with the TOP detection's score; the
cluster is removed and the process repeats.
"""

from __future__ import annotations

import numpy as np
import torch


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) xmin, ymin, xmax, ymax -> (...,) area."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """(M, 4) x (K, 4) -> (M, K) intersection over union; 0 where boxes do not overlap or the union is empty."""
    x1, y1, x2, y2 = (c[:, None] for c in boxes1.unbind(-1))
    u1, v1, u2, v2 = (c[None, :] for c in boxes2.unbind(-1))
    inter_w = (torch.minimum(x2, u2) - torch.maximum(x1, u1)).clamp_(min=0)
    inter_h = (torch.minimum(y2, v2) - torch.maximum(y1, v1)).clamp_(min=0)
    inter = inter_w * inter_h
    union = box_area(boxes1)[:, None] + box_area(boxes2)[None, :] - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(inter))


def cluster_assignments(overlap: np.ndarray) -> np.ndarray:
    """Greedy clustering over score-sorted rows: (M, M) bool `overlap` -> (M,) index of each row's top row."""
    count = overlap.shape[0]
    owner = np.full(count, -1, dtype=np.int64)
    for top in range(count):
        if owner[top] >= 0:
            continue
        members = overlap[top] & (owner < 0)
        members[top] = True  # the top always leaves the pool, whatever its IoU with itself
        owner[members] = top
    return owner


def weighted_nms(
    detections: torch.Tensor, scores: torch.Tensor, iou_threshold: float = 0.3
) -> tuple[torch.Tensor, torch.Tensor]:
    """MediaPipe WEIGHTED NMS for one image.

    Args:
        detections: (M, D) rows whose first 4 columns are xmin, ymin, xmax, ymax (e.g. D = 16 with keypoints).
        scores: (M,) scores.
        iou_threshold: a remaining detection joins the top's cluster when IoU > iou_threshold.

    Returns:
        (K, D) score-weighted cluster means and (K,) top scores, ordered by descending score.
    """
    if detections.shape[0] == 0:
        return detections.new_zeros((0, detections.shape[1])), scores.new_zeros((0,))
    scores, order = scores.sort(descending=True, stable=True)
    detections = detections[order]
    overlap = box_iou(detections[:, :4], detections[:, :4]) > iou_threshold
    owner = torch.from_numpy(cluster_assignments(overlap.cpu().numpy())).to(detections.device)
    tops = torch.unique(owner)  # sorted, so still in descending score order
    slot = torch.searchsorted(tops, owner)  # cluster number of every row
    total, summed = _cluster_sums(detections, scores.to(detections.dtype), slot, len(tops))
    means = summed / total.clamp(min=torch.finfo(total.dtype).tiny)
    means = torch.where(total > 0, means, detections[tops])  # all-zero scores: keep the top's row
    return means, scores[tops]


def _cluster_sums(
    detections: torch.Tensor, weights: torch.Tensor, slot: torch.Tensor, clusters: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, 1) sum of weights and (K, D) weighted sum of rows per cluster (`slot` = each row's cluster)."""
    if bool(torch.isfinite(detections).all()):
        # a (K, M) matrix of each row's weight in its cluster's line and one small matmul: index_add_ on these
        # few rows wakes torch's thread pool, which costs milliseconds when another runtime holds the cores
        lines = torch.arange(clusters, device=slot.device)[:, None]
        membership = torch.where(slot[None, :] == lines, weights[None, :], 0.0)
        return membership.sum(dim=1, keepdim=True), membership @ detections
    # non-finite rows: 0 * NaN would leak into every cluster through the matmul; index_add_ keeps them apart
    total = detections.new_zeros(clusters, 1).index_add_(0, slot, weights[:, None])
    return total, detections.new_zeros(clusters, detections.shape[1]).index_add_(0, slot, detections * weights[:, None])


def batched_weighted_nms(
    detections: torch.Tensor, scores: torch.Tensor, keep: torch.Tensor, iou_threshold: float = 0.3
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`weighted_nms` per image over (N, A, D) detections and (N, A) scores, using the rows where `keep` (N, A)."""
    return [weighted_nms(d[k], s[k], iou_threshold) for d, s, k in zip(detections, scores, keep, strict=True)]
