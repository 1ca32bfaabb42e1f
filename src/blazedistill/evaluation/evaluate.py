"""Evaluate a model against a reference model (agreement) and, when given, against ground truth.

Both models see the same letterboxed inputs. Each model's detections come in two lists per image:
- operating: what its detector outputs at its operating threshold (precision, recall, F1, mean IoU,
  keypoint NME and count agreement use these; the reference's are the agreement's ground truth);
- scored (for AP and the precision-recall curves): the operating detections, followed by the
  detections that weighted NMS finds at `LOW_SCORE` with a score below the operating threshold.
  Weighted NMS averages every overlapping candidate into a cluster's box, so a run at a low threshold
  shifts the boxes of confident faces a little; the removal rule only depends on the cluster's top
  anchor, so both runs have the same clusters at or above the operating threshold, and splicing keeps
  those boxes exactly as the user gets them (a model scored against itself gets exactly 1.0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from blazedistill.detector import Detection, Detector
from blazedistill.evaluation.metrics import (
    GroundTruth,
    detection_agreement,
    match_detections,
    precision_recall_curve,
    precision_recall_f1,
)
from blazedistill.jsonsafe import json_safe
from blazedistill.messages import first_line

#: score threshold of the detections AP is computed from (MediaPipe's own thresholds are 0.5-0.75)
LOW_SCORE = 0.05
#: MediaPipe clips logits to +-100 before the sigmoid; raw MAE uses the same clip (see distill/validate.py)
LOGIT_CLIP = 100.0
#: metrics of the operating-threshold detections (the rest come from the low-threshold ones)
OPERATING_KEYS = ("precision", "recall", "f1", "mean_iou", "keypoint_nme", "count_agreement", "num_predictions")


@dataclass
class ImageOutcome:
    """Detections of one image by both models, at the low and at the operating threshold."""

    path: Path
    model_low: list[Detection]
    model: list[Detection]
    reference_low: list[Detection]
    reference: list[Detection]


@dataclass
class Evaluation:
    """Everything `evaluate` measured; `to_dict()` is the JSON report."""

    model_name: str
    reference_name: str
    model_detector: Detector
    reference_detector: Detector
    outcomes: list[ImageOutcome]
    failures: list[str]
    raw_mae: dict[str, float] | None
    raw_mae_note: str
    agreement: dict[str, float]
    ground_truth: dict | None = None
    per_image: list[dict] = field(default_factory=list)
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    operating_points: dict[str, tuple[float, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        def side(name: str, det: Detector) -> dict:
            return {"name": name, "spec": det.spec.name, "input_size": det.spec.input_size, "min_score": det.min_score}

        return json_safe(
            {
                "model": side(self.model_name, self.model_detector),
                "reference": side(self.reference_name, self.reference_detector),
                "settings": {"low_score": LOW_SCORE, "iou": 0.5, "ap": "all-point interpolated"},
                "images": len(self.outcomes),
                "failures": self.failures,
                "raw_mae": self.raw_mae if self.raw_mae is not None else f"n/a: {self.raw_mae_note}",
                "agreement": self.agreement,
                "ground_truth": self.ground_truth,
                "per_image": self.per_image,
            }
        )


def same_raw_layout(a: Detector, b: Detector) -> bool:
    """True when raw outputs are comparable element by element: same input size and anchors."""
    return a.spec.input_size == b.spec.input_size and a.spec.anchors == b.spec.anchors


def _with_threshold(det: Detector, min_score: float) -> Detector:
    return Detector(det.model, spec=det.spec, min_score=min_score)


def _failure(path: Path, exc: Exception) -> str:
    text = first_line(exc)
    return text if text.startswith(str(path)) else f"{path}: {text}"


def _stack(inputs: list) -> torch.Tensor:
    """Prepared (3, S, S) inputs (numpy or torch) -> one (N, 3, S, S) float32 tensor."""
    return torch.from_numpy(np.stack([np.asarray(x, np.float32) for x in inputs]))


def _raw_and_detections(operating: Detector, low: Detector, batch: torch.Tensor, letterboxes: list) -> tuple:
    """Raw outputs, scored detections (see the module doc) and operating-threshold detections of one batch."""
    regressors, logits = (torch.as_tensor(t).float() for t in operating.model(batch.to(operating.device)))
    found = operating.postprocess(regressors, logits, letterboxes)
    below = low.postprocess(regressors, logits, letterboxes)
    scored = [
        ops + [d for d in extra if d.score < operating.min_score] for ops, extra in zip(found, below, strict=True)
    ]
    return (regressors, logits), scored, found


@torch.inference_mode()
def run_models(
    model: Detector, reference: Detector, paths: Sequence[Path], batch_size: int = 16
) -> tuple[list[ImageOutcome], list[str], dict[str, float] | None]:
    """Detections of both models on every readable image, one-line failures for the others, and the
    raw-output MAE (clipped logits; None when the two raw layouts differ)."""
    shared = same_raw_layout(model, reference)
    model_low, reference_low = (_with_threshold(d, min(LOW_SCORE, d.min_score)) for d in (model, reference))
    outcomes: list[ImageOutcome] = []
    failures: list[str] = []
    sums = {"mae_regressors": 0.0, "mae_classificators": 0.0}
    for start in range(0, len(paths), batch_size):
        ready = []  # (path, model input, model letterbox, reference input, reference letterbox)
        for path in paths[start : start + batch_size]:
            try:
                x, box = model.prepare(path)
                y, ref_box = (x, box) if shared else reference.prepare(path)
            except (ValueError, OSError) as exc:
                failures.append(_failure(path, exc))
                continue
            ready.append((path, x, box, y, ref_box))
        if not ready:
            continue
        paths_ok, xs, boxes, ys, ref_boxes = (list(column) for column in zip(*ready, strict=True))
        (r_m, c_m), m_low, m_op = _raw_and_detections(model, model_low, _stack(xs), boxes)
        (r_r, c_r), r_low, r_op = _raw_and_detections(reference, reference_low, _stack(ys), ref_boxes)
        if shared:
            n = len(ready)
            sums["mae_regressors"] += float((r_m - r_r.to(r_m.device)).abs().mean()) * n
            c_m, c_r = c_m.clamp(-LOGIT_CLIP, LOGIT_CLIP), c_r.to(c_m.device).clamp(-LOGIT_CLIP, LOGIT_CLIP)
            sums["mae_classificators"] += float((c_m - c_r).abs().mean()) * n
        outcomes += [ImageOutcome(*row) for row in zip(paths_ok, m_low, m_op, r_low, r_op, strict=True)]
    mae = {k: v / len(outcomes) for k, v in sums.items()} if shared and outcomes else None
    return outcomes, failures, mae


def compare(low: list, operating: list, truth: list, interpolation: str = "all_point") -> dict[str, float]:
    """AP of `low` against `truth` plus operating-threshold metrics of `operating` against `truth`."""
    scored = detection_agreement(low, truth, interpolation=interpolation)
    thresholded = detection_agreement(operating, truth, interpolation=interpolation)
    return {
        "ap50": scored["ap50"],
        "ap50_95": scored["ap50_95"],
        **{key: thresholded[key] for key in OPERATING_KEYS},
        "num_references": thresholded["num_references"],
        "num_images": thresholded["num_images"],
    }


def _curve(low: list, truth: list, operating: list) -> tuple[tuple[np.ndarray, np.ndarray], tuple[float, float]]:
    match = match_detections(low, truth)
    precision, recall, _ = precision_recall_curve(match)
    p, r, _ = precision_recall_f1(match_detections(operating, truth))
    return (precision, recall), (p, r)


def per_image_disagreement(outcomes: Sequence[ImageOutcome]) -> list[dict]:
    """Per image: face counts, F1 and mean IoU of the operating-threshold detections; worst first."""
    rows = []
    for o in outcomes:
        a = detection_agreement([o.model], [o.reference])
        rows.append(
            {
                "path": str(o.path),
                "model_faces": len(o.model),
                "reference_faces": len(o.reference),
                "f1": a["f1"],
                "mean_iou": a["mean_iou"],
                "ap50": a["ap50"],
            }
        )
    return sorted(rows, key=lambda r: (r["f1"], 1.0 if math.isnan(r["mean_iou"]) else r["mean_iou"]))


def evaluate(
    model: Detector,
    reference: Detector,
    paths: Sequence[Path],
    ground_truth: dict[Path, GroundTruth] | None = None,
    model_name: str | None = None,
    reference_name: str | None = None,
    batch_size: int = 16,
) -> Evaluation:
    """Agreement of `model` with `reference` on `paths` and, for the annotated ones, both against ground truth."""
    outcomes, failures, mae = run_models(model, reference, list(paths), batch_size)
    note = "" if mae is not None or not outcomes else "the raw outputs differ in input size or anchor layout"
    if not outcomes:
        note = "no image could be read"
    refs = [o.reference for o in outcomes]
    agreement = compare([o.model_low for o in outcomes], [o.model for o in outcomes], refs)
    result = Evaluation(
        model_name=model_name or model.spec.name,
        reference_name=reference_name or reference.spec.name,
        model_detector=model,
        reference_detector=reference,
        outcomes=outcomes,
        failures=failures,
        raw_mae=mae,
        raw_mae_note=note,
        agreement=agreement,
        per_image=per_image_disagreement(outcomes),
    )
    result.curves["model vs reference"], result.operating_points["model vs reference"] = _curve(
        [o.model_low for o in outcomes], refs, [o.model for o in outcomes]
    )
    if ground_truth is not None:
        annotated = [o for o in outcomes if o.path.resolve() in ground_truth]
        truth = [ground_truth[o.path.resolve()] for o in annotated]
        result.ground_truth = {
            "images": len(annotated),
            "faces": int(sum((~g.ignore).sum() for g in truth)),
            "ignored": int(sum(g.ignore.sum() for g in truth)),
            "model": compare([o.model_low for o in annotated], [o.model for o in annotated], truth),
            "reference": compare([o.reference_low for o in annotated], [o.reference for o in annotated], truth),
        }
        for side in ("model", "reference"):
            low = [getattr(o, f"{side}_low") for o in annotated]
            op = [getattr(o, side) for o in annotated]
            key = f"{side} vs ground truth"
            result.curves[key], result.operating_points[key] = _curve(low, truth, op)
    return result
