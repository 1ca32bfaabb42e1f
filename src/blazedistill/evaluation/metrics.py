"""Detection metrics: IoU, greedy matching with don't-care boxes, AP, precision/recall/F1, keypoint error.

Conventions (all documented here once):

* Boxes are (xmin, ymin, xmax, ymax) in any consistent unit; width = xmax - xmin (no "+1" pixel).
* Matching is COCO's greedy rule, per image and per IoU threshold ``t``: predictions are visited in
  descending score order (stable, so ties keep their input order); each takes the unmatched
  non-ignored ground-truth box of highest IoU with IoU >= t. If there is none, it may fall on an
  *ignore* (don't-care) box: overlap = intersection / area(prediction) >= t (COCO's "crowd" rule), and
  an ignore box can absorb any number of predictions. A prediction on an ignore box is neither a true
  nor a false positive; ignore boxes are never misses.
* Across images, predictions are pooled and sorted by score (stable: image order, then input order).
* ``interpolation="all_point"`` (default; PASCAL VOC 2010+): precision is replaced by its monotone
  envelope ``p_interp(r) = max_{r' >= r} p(r')`` and AP is the exact area under it,
  ``AP = sum_k (r_k - r_{k-1}) * p_interp(r_k)`` over every recall value reached (r_0 = 0).
  ``interpolation="coco101"`` (pycocotools' COCOeval): the mean of ``p_interp`` sampled at the 101
  recall levels 0, 0.01, ..., 1 (0 where a level is never reached).
* AP is NaN when there is no non-ignored ground truth at all (undefined, as COCO's -1).
* Precision is NaN without predictions, recall NaN without ground truth; F1 = 2TP / (2TP + FP + FN)
  is always defined: 0 when only one side is empty, 1 when both are (nothing to find, nothing claimed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: COCO's IoU thresholds 0.50:0.05:0.95 (same expression as pycocotools)
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
#: COCO's 101 recall levels
COCO_RECALL_LEVELS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
#: indices of the 6 BlazeFace keypoints that are the eyes (right eye, left eye)
EYE_KEYPOINTS = (0, 1)


def _array(x: Any, dtype=np.float64) -> np.ndarray:
    """numpy copy of a numpy array, torch tensor or nested list."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


@dataclass(frozen=True)
class Predictions:
    """Detections of one image: boxes (n, 4) xyxy, scores (n,), keypoints (n, K, 2) or None."""

    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True)
class GroundTruth:
    """Reference boxes of one image: boxes (n, 4) xyxy, ignore (n,) bool, keypoints (n, K, 2) or None."""

    boxes: np.ndarray
    ignore: np.ndarray
    keypoints: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.boxes)


def _boxes(x: Any, what: str) -> np.ndarray:
    boxes = _array(x)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{what}: boxes must have shape (n, 4), got {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise ValueError(f"{what}: boxes contain NaN or infinity")
    return boxes


def _keypoints(x: Any, n: int, what: str) -> np.ndarray | None:
    if x is None:
        return None
    kps = _array(x)
    if kps.size == 0 and n == 0:
        return None
    if kps.ndim != 3 or kps.shape[0] != n or kps.shape[2] != 2:
        raise ValueError(f"{what}: keypoints must have shape ({n}, K, 2), got {kps.shape}")
    return kps


def _is_detection_list(x: Any) -> bool:
    return isinstance(x, Sequence) and not isinstance(x, tuple) and all(hasattr(d, "box") for d in x)


def as_predictions(x: Any, what: str = "predictions") -> Predictions:
    """Predictions from Predictions, a list of Detection-like objects (.box/.score/.keypoints),
    a dict with "boxes"/"scores"[/"keypoints"], a tuple (boxes, scores[, keypoints]), or None (empty)."""
    if x is None:
        return Predictions(np.zeros((0, 4)), np.zeros(0))
    if isinstance(x, Predictions):
        return x
    if _is_detection_list(x):
        kps = [getattr(d, "keypoints", None) for d in x]
        has_kps = len(x) > 0 and all(k is not None for k in kps)
        boxes = np.stack([_array(d.box) for d in x]) if len(x) else np.zeros((0, 4))
        x = (boxes, [float(d.score) for d in x], np.stack([_array(k) for k in kps]) if has_kps else None)
    if isinstance(x, dict):
        x = (x["boxes"], x["scores"], x.get("keypoints"))
    elif hasattr(x, "boxes") and hasattr(x, "scores"):
        x = (x.boxes, x.scores, getattr(x, "keypoints", None))
    if not isinstance(x, tuple) or len(x) not in (2, 3):
        raise TypeError(f"{what}: cannot read detections from {type(x).__name__}")
    boxes = _boxes(x[0], what)
    scores = _array(x[1]).reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"{what}: {len(boxes)} boxes but {len(scores)} scores")
    if not np.isfinite(scores).all():
        raise ValueError(f"{what}: scores contain NaN or infinity")
    kps = _keypoints(x[2] if len(x) == 3 else None, len(boxes), what)
    return Predictions(boxes, scores, kps)


def as_ground_truth(x: Any, what: str = "ground truth") -> GroundTruth:
    """GroundTruth from GroundTruth, anything `as_predictions` reads (scores dropped, nothing ignored),
    a dict with "boxes"[/"ignore"/"keypoints"], an (n, 4) array, or None (empty)."""
    if isinstance(x, GroundTruth):
        return x
    if hasattr(x, "boxes") and hasattr(x, "ignore"):
        x = {"boxes": x.boxes, "ignore": x.ignore, "keypoints": getattr(x, "keypoints", None)}
    if isinstance(x, dict) and "scores" not in x:
        boxes = _boxes(x["boxes"], what)
        ignore = np.zeros(len(boxes), bool) if x.get("ignore") is None else _array(x["ignore"], bool).reshape(-1)
        if len(ignore) != len(boxes):
            raise ValueError(f"{what}: {len(boxes)} boxes but {len(ignore)} ignore flags")
        return GroundTruth(boxes, ignore, _keypoints(x.get("keypoints"), len(boxes), what))
    if x is None or hasattr(x, "boxes") or isinstance(x, (dict, tuple)) or _is_detection_list(x):
        preds = as_predictions(x, what)
        return GroundTruth(preds.boxes, np.zeros(len(preds), bool), preds.keypoints)
    return as_ground_truth({"boxes": x}, what)


def box_area(boxes: Any) -> np.ndarray:
    """Areas of (n, 4) xyxy boxes (0 for inverted boxes)."""
    b = _array(boxes).reshape(-1, 4)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    return wh[..., 0] * wh[..., 1]


def box_iou(a: Any, b: Any) -> np.ndarray:
    """IoU matrix (n, m) of xyxy boxes a (n, 4) and b (m, 4); 0 where the union is empty."""
    a, b = _array(a).reshape(-1, 4), _array(b).reshape(-1, 4)
    inter = _intersection(a, b)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def box_coverage(a: Any, b: Any) -> np.ndarray:
    """Share (n, m) of each box in a covered by each box in b: intersection / area(a) (COCO crowd IoU)."""
    a, b = _array(a).reshape(-1, 4), _array(b).reshape(-1, 4)
    inter = _intersection(a, b)
    area = box_area(a)[:, None]
    return np.divide(inter, area, out=np.zeros_like(inter), where=area > 0)


@dataclass(frozen=True)
class MatchResult:
    """All predictions of a dataset, pooled and sorted by descending score, matched at T IoU thresholds.

    ``gt_index[t, d]`` is the matched ground-truth box in image ``image_index[d]`` (-1: none) and
    ``ignored[t, d]`` says it is a don't-care box; ``iou[t, d]`` is the match's IoU (NaN: none).
    """

    iou_thresholds: np.ndarray  # (T,)
    scores: np.ndarray  # (D,)
    image_index: np.ndarray  # (D,)
    pred_index: np.ndarray  # (D,) index of the prediction within its image
    gt_index: np.ndarray  # (T, D)
    ignored: np.ndarray  # (T, D)
    iou: np.ndarray  # (T, D)
    num_positives: int  # non-ignored ground-truth boxes over all images

    @property
    def true_positive(self) -> np.ndarray:
        """(T, D) matched to a non-ignored ground-truth box."""
        return (self.gt_index >= 0) & ~self.ignored


def _match_image(pred: Predictions, gt: GroundTruth, thresholds: np.ndarray) -> tuple[np.ndarray, ...]:
    """Greedy matching of one image; returns order, gt_index (T, n), ignored (T, n), iou (T, n)."""
    order = np.argsort(-pred.scores, kind="stable")
    n, T = len(order), len(thresholds)
    gt_index = np.full((T, n), -1)
    ignored = np.zeros((T, n), bool)
    iou_out = np.full((T, n), np.nan)
    if n == 0 or len(gt) == 0:
        return order, gt_index, ignored, iou_out
    boxes = pred.boxes[order]
    iou = box_iou(boxes, gt.boxes)
    cover = box_coverage(boxes, gt.boxes)
    above = thresholds[None, :, None]
    # (n, T, G) overlap of each prediction with each box where it clears the threshold, else -1
    regular = np.where(~gt.ignore & (iou[:, None, :] >= above), iou[:, None, :], -1.0)
    dont_care = np.where(gt.ignore & (cover[:, None, :] >= above), cover[:, None, :], -1.0)
    taken = np.zeros((T, len(gt)), bool)
    rows = np.arange(T)
    for d in np.flatnonzero((regular >= 0).any(axis=(1, 2))):  # greedy: best free regular box
        cand = np.where(taken, -1.0, regular[d])
        best = cand.argmax(axis=1)
        hit = cand[rows, best] >= 0
        gt_index[hit, d] = best[hit]
        taken[rows[hit], best[hit]] = True
        iou_out[hit, d] = iou[d, best[hit]]
    best = dont_care.argmax(axis=2)  # (n, T): the rest may fall on any don't-care box
    fall = (gt_index.T < 0) & (np.take_along_axis(dont_care, best[..., None], axis=2)[..., 0] >= 0)
    gt_index.T[fall] = best[fall]
    ignored.T[fall] = True
    return order, gt_index, ignored, iou_out


def match_detections(
    preds_per_image: Sequence[Any], gts_per_image: Sequence[Any], iou_thresholds: Any = (0.5,)
) -> MatchResult:
    """Match every image's predictions to its ground truth (see the module docstring for the rule)."""
    if len(preds_per_image) != len(gts_per_image):
        raise ValueError(f"{len(preds_per_image)} prediction lists but {len(gts_per_image)} ground-truth lists")
    thresholds = _array(iou_thresholds).reshape(-1)
    parts: list[tuple[np.ndarray, ...]] = []
    num_positives = 0
    for i, (p, g) in enumerate(zip(preds_per_image, gts_per_image, strict=True)):
        pred, gt = as_predictions(p, f"image {i} predictions"), as_ground_truth(g, f"image {i} ground truth")
        num_positives += int((~gt.ignore).sum())
        order, gt_index, ignored, iou = _match_image(pred, gt, thresholds)
        parts.append((pred.scores[order], np.full(len(order), i), order, gt_index, ignored, iou))
    T = len(thresholds)
    scores = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
    pooled = np.argsort(-scores, kind="stable")

    def cat(k: int, rows: bool) -> np.ndarray:
        empty = np.zeros((T, 0)) if rows else np.zeros(0, int)
        arr = np.concatenate([p[k] for p in parts], axis=-1) if parts else empty
        return arr[..., pooled]

    return MatchResult(
        iou_thresholds=thresholds,
        scores=scores[pooled],
        image_index=cat(1, False),
        pred_index=cat(2, False),
        gt_index=cat(3, True).astype(int),
        ignored=cat(4, True).astype(bool),
        iou=cat(5, True).astype(float),
        num_positives=num_positives,
    )


def precision_recall_curve(match: MatchResult, t: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, score) after each non-ignored prediction, in descending score order."""
    keep = ~match.ignored[t]
    tp = match.true_positive[t][keep]
    tp_sum = np.cumsum(tp)
    fp_sum = np.cumsum(~tp)
    precision = tp_sum / np.maximum(tp_sum + fp_sum, 1)
    recall = tp_sum / match.num_positives if match.num_positives else np.full(len(tp), np.nan)
    return precision, recall, match.scores[keep]


def _envelope(precision: np.ndarray) -> np.ndarray:
    """Monotone (non-increasing) envelope: max precision at this or any later point."""
    return np.maximum.accumulate(precision[::-1])[::-1]


def average_precision(match: MatchResult, interpolation: str = "all_point") -> np.ndarray:
    """AP (T,) at each IoU threshold: "all_point" (VOC2010+ area) or "coco101" (pycocotools)."""
    if interpolation not in ("all_point", "coco101"):
        raise ValueError(f"interpolation must be 'all_point' or 'coco101', not {interpolation!r}")
    aps = np.full(len(match.iou_thresholds), np.nan)
    if match.num_positives == 0:
        return aps
    for t in range(len(aps)):
        precision, recall, _ = precision_recall_curve(match, t)
        if len(precision) == 0:
            aps[t] = 0.0
            continue
        envelope = _envelope(precision)
        if interpolation == "all_point":
            steps = np.diff(np.concatenate([[0.0], recall]))
            aps[t] = float(np.sum(steps * envelope))
        else:
            idx = np.searchsorted(recall, COCO_RECALL_LEVELS, side="left")
            sampled = np.where(idx < len(envelope), envelope[np.minimum(idx, len(envelope) - 1)], 0.0)
            aps[t] = float(sampled.mean())
    return aps


def precision_recall_f1(match: MatchResult, score_threshold: float = 0.0, t: int = 0) -> tuple[float, float, float]:
    """Precision, recall and F1 of the predictions with score >= score_threshold (ignored ones left out)."""
    keep = (match.scores >= score_threshold) & ~match.ignored[t]
    tp = int(match.true_positive[t][keep].sum())
    n_pred = int(keep.sum())
    fp, fn = n_pred - tp, match.num_positives - tp
    precision = tp / n_pred if n_pred else float("nan")
    recall = tp / match.num_positives if match.num_positives else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return precision, recall, f1


def best_f1_threshold(match: MatchResult, tolerance: float = 0.005, t: int = 0) -> tuple[float, float]:
    """(score threshold, F1): the highest threshold whose F1 is within `tolerance` of the best F1.

    Candidates are the predictions' own scores (the last of each run of equal scores); the highest
    near-best threshold is the most conservative operating point. (nan, nan) without predictions,
    ground truth or any true positive (no threshold is better than another then).
    """
    precision, recall, scores = precision_recall_curve(match, t)
    if len(scores) == 0 or match.num_positives == 0:
        return float("nan"), float("nan")
    with np.errstate(invalid="ignore"):  # 0/0 before the first true positive
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall), nan=0.0)
    last_of_tie = np.append(scores[1:] != scores[:-1], True)
    f1 = np.where(last_of_tie, f1, -1.0)
    if f1.max() <= 0:
        return float("nan"), float("nan")
    best = int(np.flatnonzero(f1 >= f1.max() - tolerance)[0])
    return float(scores[best]), float(f1[best])


def mean_matched_iou(match: MatchResult, score_threshold: float = 0.0, t: int = 0) -> float:
    """Mean IoU of the true-positive pairs with score >= score_threshold (NaN when there are none)."""
    keep = (match.scores >= score_threshold) & match.true_positive[t]
    return float(match.iou[t][keep].mean()) if keep.any() else float("nan")


def keypoint_nme(
    preds_per_image: Sequence[Any],
    gts_per_image: Sequence[Any],
    match: MatchResult,
    score_threshold: float = 0.0,
    t: int = 0,
    eyes: tuple[int, int] = EYE_KEYPOINTS,
) -> float:
    """Mean keypoint distance of matched pairs divided by the reference's inter-ocular distance.

    Averaged over keypoints, then over pairs; pairs without keypoints on either side or with coincident
    reference eyes are skipped; NaN when no pair is left.
    """
    errors: list[float] = []
    keep = np.flatnonzero((match.scores >= score_threshold) & match.true_positive[t])
    cache: dict[int, tuple[Predictions, GroundTruth]] = {}
    for d in keep:
        i = int(match.image_index[d])
        if i not in cache:
            cache[i] = (as_predictions(preds_per_image[i]), as_ground_truth(gts_per_image[i]))
        pred, gt = cache[i]
        if pred.keypoints is None or gt.keypoints is None:
            continue
        p = pred.keypoints[match.pred_index[d]]
        g = gt.keypoints[match.gt_index[t, d]]
        iod = float(np.linalg.norm(g[eyes[0]] - g[eyes[1]]))
        if p.shape != g.shape or iod <= 0:
            continue
        errors.append(float(np.linalg.norm(p - g, axis=-1).mean()) / iod)
    return float(np.mean(errors)) if errors else float("nan")


def count_agreement(
    gts_per_image: Sequence[Any], match: MatchResult, score_threshold: float = 0.0, t: int = 0
) -> float:
    """Share of images whose number of predictions >= score_threshold (not on don't-care boxes) equals
    their number of non-ignored ground-truth boxes (NaN for no images)."""
    n_images = len(gts_per_image)
    if n_images == 0:
        return float("nan")
    keep = (match.scores >= score_threshold) & ~match.ignored[t]
    pred_counts = np.bincount(match.image_index[keep], minlength=n_images)
    gt_counts = np.array([int((~as_ground_truth(g).ignore).sum()) for g in gts_per_image])
    return float(np.mean(pred_counts == gt_counts))


def detection_agreement(
    preds_per_image: Sequence[Any],
    refs_per_image: Sequence[Any],
    score_threshold: float = 0.0,
    iou_threshold: float = 0.5,
    interpolation: str = "all_point",
    calibrate: bool = False,
) -> dict[str, float]:
    """Every metric of predictions against references (ground truth or a reference model's detections).

    AP uses all predictions (pass them at a low score threshold); precision, recall, F1, mean IoU,
    keypoint NME and count agreement use those with score >= score_threshold and IoU >= iou_threshold
    Returns ap50, ap50_95, precision, recall, f1, mean_iou, keypoint_nme, count_agreement, and the sizes
    num_images, num_predictions (>= score_threshold), num_references (non-ignored); with `calibrate`, also
    best_f1_threshold and best_f1 (`best_f1_threshold` at iou_threshold, from the same matching).
    """
    thresholds = np.unique(np.concatenate([[iou_threshold], COCO_IOU_THRESHOLDS]))
    preds = [as_predictions(p, f"image {i} predictions") for i, p in enumerate(preds_per_image)]
    refs = [as_ground_truth(g, f"image {i} references") for i, g in enumerate(refs_per_image)]
    match = match_detections(preds, refs, thresholds)
    aps = average_precision(match, interpolation)
    t_op = int(np.flatnonzero(np.isclose(thresholds, iou_threshold))[0])
    t50 = int(np.flatnonzero(np.isclose(thresholds, 0.5))[0])
    coco = np.isin(np.round(thresholds, 6), np.round(COCO_IOU_THRESHOLDS, 6))
    precision, recall, f1 = precision_recall_f1(match, score_threshold, t_op)
    calibration = dict(zip(("best_f1_threshold", "best_f1"), best_f1_threshold(match, t=t_op), strict=True))
    return {
        **(calibration if calibrate else {}),
        "ap50": float(aps[t50]),
        "ap50_95": float(aps[coco].mean()),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "mean_iou": mean_matched_iou(match, score_threshold, t_op),
        "keypoint_nme": keypoint_nme(preds, refs, match, score_threshold, t_op),
        "count_agreement": count_agreement(refs, match, score_threshold, t_op),
        "num_images": len(refs),
        "num_predictions": int((match.scores >= score_threshold).sum()),
        "num_references": match.num_positives,
    }
