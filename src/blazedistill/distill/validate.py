"""Per-epoch validation: how closely the student reproduces the teacher on held-out images.

- the original project's "2 output MAE": mean |student - teacher| of the regressors and of the
  classificators (logits clipped to MediaPipe's +-100 first: the teacher's background logits reach about
  -21,000 and would otherwise swamp the mean with values no detector ever looks at);
- score agreement on the anchors the teacher is confident about (teacher probability > `confident`):
  the share where the student's probability is on the same side, and the mean |p_student - p_teacher|;
- detection agreement: the teacher's detections (its threshold, weighted NMS) are the ground truth, the
  student's detections at a low threshold are the predictions: AP at IoU 0.5, and precision, recall and
  mean IoU of matched boxes at the student's operating threshold (the spec's min_score);
- the calibrated threshold: the highest student score threshold whose F1 against the teacher's
  detections is within 0.005 of the best (a student's scores need not sit where the teacher's do).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from blazedistill.anchors import generate_anchors
from blazedistill.decode import SCORE_CLIP, decode_boxes, decode_scores, valid_detections
from blazedistill.distill.config import ValConfig
from blazedistill.evaluation.metrics import detection_agreement
from blazedistill.nms import batched_weighted_nms

#: detection-agreement results copied into the validation row
AGREEMENT_KEYS = ("ap50", "ap50_95", "precision", "recall", "f1", "mean_iou", "keypoint_nme")


@torch.inference_mode()
def validate(
    student: nn.Module,
    teacher: nn.Module,
    loader: Iterable[torch.Tensor],
    loss_fn,
    cfg: ValConfig,
    device: torch.device,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> dict[str, float]:
    """Validation metrics of `student` against `teacher` over the batches of `loader` (see the module doc)."""
    spec = teacher.spec
    anchors = torch.from_numpy(generate_anchors(spec.anchors)).to(device)
    teacher_min = spec.min_score if cfg.teacher_min_score is None else cfg.teacher_min_score
    was_training = student.training
    student.eval()
    sums = {"loss": 0.0, "reg": 0.0, "cls": 0.0, "agree": 0.0, "prob_diff": 0.0}
    images = positives = 0
    predictions, references = [], []
    for batch in loader:
        batch = batch.images if hasattr(batch, "images") else batch
        batch = batch.to(device)
        if batch.dtype == torch.uint8:
            batch = batch.float() / 127.5 - 1.0
        batch = batch.contiguous(memory_format=memory_format)
        t_reg, t_cls = (t.float() for t in teacher(batch))
        s_reg, s_cls = (s.float() for s in student(batch))
        n = batch.shape[0]
        images += n
        sums["loss"] += float(_total(loss_fn((s_reg, s_cls), (t_reg, t_cls)))) * n
        sums["reg"] += float((s_reg - t_reg).abs().mean()) * n
        sums["cls"] += float((_clip(s_cls) - _clip(t_cls)).abs().mean()) * n

        p_t, p_s = decode_scores(t_cls), decode_scores(s_cls)
        confident = p_t > cfg.confident
        positives += int(confident.sum())
        sums["agree"] += float((p_s[confident] > cfg.confident).sum())
        sums["prob_diff"] += float((p_s[confident] - p_t[confident]).abs().sum())

        predictions += _detections(s_reg, p_s, anchors, spec.input_size, cfg.student_min_score, spec.nms_iou)
        references += _detections(t_reg, p_t, anchors, spec.input_size, teacher_min, spec.nms_iou)
    student.train(was_training)
    if images == 0:
        raise ValueError("the validation set is empty")

    agreement = detection_agreement(
        predictions, references, score_threshold=spec.min_score, iou_threshold=cfg.iou, calibrate=True
    )
    return {
        "val_loss": sums["loss"] / images,
        "mae_regressors": sums["reg"] / images,
        "mae_classificators": sums["cls"] / images,
        "score_agreement": sums["agree"] / positives if positives else float("nan"),
        "score_abs_diff": sums["prob_diff"] / positives if positives else float("nan"),
        **{key: float(agreement[key]) for key in AGREEMENT_KEYS},
        "calibrated_min_score": agreement["best_f1_threshold"],
        "f1_calibrated": agreement["best_f1"],
        "teacher_faces": int(agreement["num_references"]),
        "student_faces": int(agreement["num_predictions"]),
    }


def _detections(raw, scores, anchors, input_size: int, min_score: float, nms_iou: float) -> list[dict]:
    """Per image {"boxes", "scores", "keypoints"} in normalised input coordinates, after weighted NMS."""
    decoded = decode_boxes(raw, anchors, input_size)
    keep = valid_detections(decoded, scores, min_score)
    found = []
    for rows, top_scores in batched_weighted_nms(decoded, scores, keep, nms_iou):
        rows = rows.cpu()
        found.append({"boxes": rows[:, :4], "scores": top_scores.cpu(), "keypoints": rows[:, 4:].reshape(-1, 6, 2)})
    return found


def _clip(logits: torch.Tensor) -> torch.Tensor:
    return logits.clamp(-SCORE_CLIP, SCORE_CLIP)


def _total(loss) -> torch.Tensor:
    """The scalar to report from a loss that returns a tensor or a dict with "total"."""
    return loss["total"] if isinstance(loss, dict) else loss
