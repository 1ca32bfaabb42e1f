"""Detection metrics: hand-computed cases, a slow reference for all-point AP, and pycocotools' COCOeval."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from blazedistill.evaluation.metrics import (
    COCO_IOU_THRESHOLDS,
    GroundTruth,
    as_ground_truth,
    as_predictions,
    average_precision,
    box_iou,
    detection_agreement,
    keypoint_nme,
    match_detections,
    mean_matched_iou,
    precision_recall_f1,
)


@dataclass
class FakeDetection:
    score: float
    box: np.ndarray
    keypoints: np.ndarray


def _box(x, y, s=10.0):
    return [x, y, x + s, y + s]


# ---------------------------------------------------------------- IoU


def test_box_iou_hand_values_and_torch_input():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], float)
    b = torch.tensor([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=torch.float32)
    iou = box_iou(a, b)
    assert iou.shape == (2, 3)
    np.testing.assert_allclose(iou[0], [1.0, 50 / 150, 0.0])
    np.testing.assert_array_equal(iou[1], [0, 0, 0])  # empty box: IoU 0, not NaN
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)


# ---------------------------------------------------------------- hand-built AP


def _ranked_case(outcomes: str, num_gt: int):
    """One image: predictions with descending scores; 'T' hits the next ground-truth box, 'F' hits nothing."""
    gts = [_box(100 * k, 0) for k in range(num_gt)]
    boxes, hit = [], 0
    for o in outcomes:
        if o == "T":
            boxes.append(gts[hit])
            hit += 1
        else:
            boxes.append(_box(1000, 1000 + 50 * len(boxes)))
    scores = np.linspace(0.9, 0.1, len(boxes))
    return [(np.array(boxes, float), scores)], [np.array(gts, float)]


@pytest.mark.parametrize(
    "outcomes, num_gt, expected",
    [
        ("FT", 1, 0.5),
        ("TFFT", 2, 0.75),
        ("TFT", 2, 0.5 + 0.5 * 2 / 3),
        ("FTT", 2, 2 / 3),
        ("T", 2, 0.5),
        ("TT", 2, 1.0),
        ("FF", 2, 0.0),
    ],
)
def test_all_point_ap_hand_values(outcomes, num_gt, expected):
    preds, gts = _ranked_case(outcomes, num_gt)
    ap = average_precision(match_detections(preds, gts))[0]
    assert ap == pytest.approx(expected, abs=1e-12)


def test_coco101_samples_the_envelope_at_101_recall_levels():
    # TFFT with 2 boxes: envelope 1.0 up to recall 0.5 (51 levels), 0.5 up to 1.0 (50 levels)
    preds, gts = _ranked_case("TFFT", 2)
    ap = average_precision(match_detections(preds, gts), "coco101")[0]
    assert ap == pytest.approx((51 * 1.0 + 50 * 0.5) / 101, abs=1e-12)
    with pytest.raises(ValueError, match="interpolation"):
        average_precision(match_detections(preds, gts), "voc11")


def test_empty_sides():
    both_empty = match_detections([None], [None])
    assert np.isnan(average_precision(both_empty)[0])
    p, r, f1 = precision_recall_f1(both_empty)
    assert np.isnan(p) and np.isnan(r) and f1 == 1.0
    nothing_found = match_detections([None], [np.array([_box(0, 0)])])
    assert average_precision(nothing_found)[0] == 0.0
    p, r, f1 = precision_recall_f1(nothing_found)
    assert np.isnan(p) and r == 0.0 and f1 == 0.0
    nothing_there = match_detections([(np.array([_box(0, 0)]), [0.9])], [None])
    p, r, f1 = precision_recall_f1(nothing_there)
    assert p == 0.0 and np.isnan(r) and f1 == 0.0


def test_duplicate_is_a_false_positive_and_lower_threshold_keeps_it_out():
    gt = np.array([_box(0, 0)])
    preds = (np.array([_box(0, 0), _box(1, 0)]), np.array([0.9, 0.8]))
    match = match_detections([preds], [gt])
    assert match.true_positive[0].tolist() == [True, False]
    assert precision_recall_f1(match, 0.0) == pytest.approx((0.5, 1.0, 2 / 3))
    assert precision_recall_f1(match, 0.85) == (1.0, 1.0, 1.0)


def test_matching_prefers_highest_iou_and_respects_threshold():
    gts = np.array([_box(0, 0), _box(4, 0)])
    # both predictions overlap box 0 with IoU 70/130 and box 1 with IoU 90/110
    preds = (np.array([_box(3, 0), _box(3, 0)]), np.array([0.9, 0.8]))
    match = match_detections([preds], [gts], [0.5, 0.85])
    assert match.gt_index.tolist() == [[1, 0], [-1, -1]]
    np.testing.assert_allclose(match.iou[0], [90 / 110, 70 / 130])
    assert np.isnan(match.iou[1]).all()


# ---------------------------------------------------------------- don't-care boxes


def test_ignore_boxes_are_neither_hits_nor_misses():
    gt = GroundTruth(np.array([_box(0, 0), _box(100, 0, 40)]), np.array([False, True]))
    # one hit, two detections inside the don't-care box, one false positive far away
    boxes = np.array([_box(0, 0), _box(105, 5, 20), _box(110, 10, 20), _box(500, 500)])
    match = match_detections([(boxes, np.array([0.9, 0.8, 0.7, 0.6]))], [gt])
    assert match.true_positive[0].tolist() == [True, False, False, False]
    assert match.ignored[0].tolist() == [False, True, True, False]
    assert match.num_positives == 1
    assert precision_recall_f1(match) == pytest.approx((0.5, 1.0, 2 / 3))
    assert average_precision(match)[0] == 1.0  # the false positive ranks below the only hit


def test_regular_box_wins_over_ignore_box():
    gt = GroundTruth(np.array([_box(0, 0, 20), _box(0, 0)]), np.array([True, False]))
    match = match_detections([(np.array([_box(0, 0)]), np.array([0.5]))], [gt])
    assert match.gt_index[0, 0] == 1 and not match.ignored[0, 0]


# ---------------------------------------------------------------- other metrics


def test_keypoint_nme_hand_value():
    kps = np.zeros((1, 6, 2))
    kps[0, 1] = [10, 0]  # eyes 10 px apart
    ref = GroundTruth(np.array([_box(0, 0)]), np.array([False]), kps)
    moved = kps + np.array([3.0, 4.0])  # every point 5 px away
    preds = [FakeDetection(0.9, np.array(_box(0, 0)), moved[0])]
    match = match_detections([preds], [ref])
    assert keypoint_nme([preds], [ref], match) == pytest.approx(0.5)
    assert mean_matched_iou(match) == 1.0


def test_agreement_of_a_model_with_itself_is_exactly_one():
    rng = np.random.default_rng(3)
    images = []
    for n in (0, 1, 3, 2):
        xy = rng.uniform(0, 400, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(20, 80, (n, 1))], axis=1)
        kps = boxes[:, None, :2] + rng.uniform(0, 20, (n, 6, 2))
        images.append(
            [FakeDetection(float(s), b, k) for s, b, k in zip(rng.uniform(0.5, 1, n), boxes, kps, strict=True)]
        )
    result = detection_agreement(images, images, score_threshold=0.5)
    for key in ("ap50", "ap50_95", "precision", "recall", "f1", "mean_iou", "count_agreement"):
        assert result[key] == 1.0, key
    assert result["keypoint_nme"] == 0.0
    assert result["num_references"] == 6 and result["num_images"] == 4


def test_count_agreement_and_operating_threshold():
    gts = [np.array([_box(0, 0)]), np.array([_box(0, 0), _box(50, 50)])]
    preds = [(np.array([_box(0, 0), _box(300, 300)]), np.array([0.9, 0.2])), (np.array([_box(0, 0)]), [0.8])]
    result = detection_agreement(preds, gts, score_threshold=0.5)
    assert result["count_agreement"] == 0.5  # image 0: 1 vs 1; image 1: 1 vs 2
    assert result["precision"] == 1.0 and result["recall"] == pytest.approx(2 / 3)
    assert result["num_predictions"] == 2


def test_input_forms_agree():
    boxes = np.array([_box(0, 0), _box(20, 20)])
    scores = np.array([0.3, 0.7])
    kps = np.zeros((2, 6, 2))
    forms = [
        (boxes, scores, kps),
        {"boxes": torch.tensor(boxes), "scores": torch.tensor(scores), "keypoints": kps},
        [FakeDetection(s, b, k) for s, b, k in zip(scores, boxes, kps, strict=True)],
    ]
    for form in forms:
        p = as_predictions(form)
        np.testing.assert_array_equal(p.boxes, boxes)
        np.testing.assert_array_equal(p.scores, scores)
        assert p.keypoints.shape == (2, 6, 2)
        assert as_ground_truth(form).ignore.tolist() == [False, False]
    assert len(as_predictions([])) == 0 and len(as_ground_truth([])) == 0
    np.testing.assert_array_equal(as_ground_truth([[0, 0, 1, 1]]).boxes, [[0, 0, 1, 1]])


def test_bad_inputs_name_the_image():
    with pytest.raises(ValueError, match="image 1 predictions: boxes must have shape"):
        match_detections([None, (np.zeros((2, 3)), np.zeros(2))], [None, None])
    with pytest.raises(ValueError, match="image 0 predictions: scores contain NaN"):
        match_detections([(np.zeros((1, 4)), [np.nan])], [None])
    with pytest.raises(ValueError, match="2 prediction lists but 1"):
        match_detections([None, None], [None])


# ---------------------------------------------------------------- generated cases vs references


def _generated_case(seed: int, num_images: int = 12, with_ignore: bool = True):
    """Random ground truth (some don't-care) and jittered / missing / duplicate / extra detections, xywh."""
    rng = np.random.default_rng(seed)
    gts, dets = [], []
    for _ in range(num_images):
        n = int(rng.integers(0, 7))
        xy = rng.uniform(0, 500, (n, 2))
        wh = rng.uniform(8, 120, (n, 2))
        ignore = (rng.random(n) < 0.15) if with_ignore else np.zeros(n, bool)
        gts.append((np.concatenate([xy, wh], 1), ignore))
        boxes = []
        for b in np.concatenate([xy, wh], 1):
            if rng.random() < 0.8:  # found, with jitter up to ~30% of the size
                boxes.append(b + rng.normal(0, 0.12, 4) * np.r_[b[2:], b[2:]])
            if rng.random() < 0.15:  # duplicate
                boxes.append(b + rng.normal(0, 0.2, 4) * np.r_[b[2:], b[2:]])
        for _ in range(int(rng.integers(0, 4))):  # extra
            boxes.append(np.r_[rng.uniform(0, 500, 2), rng.uniform(8, 120, 2)])
        boxes = np.array(boxes).reshape(-1, 4)
        boxes[:, 2:] = np.abs(boxes[:, 2:]) + 1
        dets.append((boxes, rng.random(len(boxes))))
    return gts, dets


def _xyxy(xywh):
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)


def _ours(gts, dets, interpolation):
    preds = [(_xyxy(b), s) for b, s in dets]
    truth = [GroundTruth(_xyxy(b), ig) for b, ig in gts]
    return average_precision(match_detections(preds, truth, COCO_IOU_THRESHOLDS), interpolation)


def _cocoeval_precision(gts, dets, recall_levels=None, iou_thresholds=None):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, results = [], [], []
    for i, ((gb, ig), (db, ds)) in enumerate(zip(gts, dets, strict=True), start=1):
        images.append({"id": i})
        for b, crowd in zip(gb, ig, strict=True):
            anns.append(
                {"id": len(anns) + 1, "image_id": i, "category_id": 1, "bbox": b.tolist(),
                 "area": float(b[2] * b[3]), "iscrowd": int(crowd)}
            )  # fmt: skip
        results += [
            {"image_id": i, "category_id": 1, "bbox": b.tolist(), "score": float(s)}
            for b, s in zip(db, ds, strict=True)
        ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "face"}]}
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluator.params.maxDets = [1, 10, 10_000]
        if recall_levels is not None:
            evaluator.params.recThrs = recall_levels
        if iou_thresholds is not None:
            evaluator.params.iouThrs = np.asarray(iou_thresholds)
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator.eval["precision"][:, :, 0, 0, -1]  # (T, R)


@pytest.mark.parametrize("seed", range(6))
def test_coco101_matches_pycocotools(seed):
    gts, dets = _generated_case(seed)
    precision = _cocoeval_precision(gts, dets)
    theirs = precision.mean(axis=1)
    ours = _ours(gts, dets, "coco101")
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert ours[0] == pytest.approx(theirs[0], abs=1e-6)  # AP50
    assert ours.mean() == pytest.approx(theirs.mean(), abs=1e-6)  # AP[.50:.95]
    assert 0.2 < ours[0] < 0.999  # the generated cases are neither trivial nor hopeless


def test_all_point_approaches_cocoeval_with_dense_recall_levels():
    gts, dets = _generated_case(11)
    dense = np.linspace(0, 1, 100_001)  # the mean of the envelope over these -> its area, within ~1e-5
    theirs = _cocoeval_precision(gts, dets, dense, iou_thresholds=[0.5, 0.75]).mean(axis=1)
    np.testing.assert_allclose(_ours(gts, dets, "all_point")[[0, 5]], theirs, atol=2e-5)


def _slow_all_point_ap(gts, dets, threshold):
    """Independent loop implementation: greedy matching, then the VOC2010 devkit's envelope and area."""

    def iou(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
        return inter / (area_a + area_b - inter), inter / area_a

    ranked = []  # (score, outcome) with outcome "tp", "fp" or "ignore"
    positives = 0
    for (gb, ig), (db, ds) in zip(gts, dets, strict=True):
        g, d = _xyxy(gb), _xyxy(db)
        positives += int((~ig).sum())
        used = [False] * len(g)
        for k in sorted(range(len(d)), key=lambda k: -ds[k]):
            best, best_j = threshold, None
            for j in range(len(g)):
                v = iou(d[k], g[j])[0]
                if not ig[j] and not used[j] and v >= best:
                    best, best_j = v, j
            if best_j is not None:
                used[best_j] = True
                ranked.append((ds[k], "tp"))
                continue
            on_ignore = any(ig[j] and iou(d[k], g[j])[1] >= threshold for j in range(len(g)))
            ranked.append((ds[k], "ignore" if on_ignore else "fp"))
    ranked = [r for r in sorted(ranked, key=lambda r: -r[0]) if r[1] != "ignore"]
    tp = fp = 0
    recall, precision = [], []
    for _, outcome in ranked:
        tp, fp = tp + (outcome == "tp"), fp + (outcome == "fp")
        recall.append(tp / positives)
        precision.append(tp / (tp + fp))
    mrec, mpre = [0.0] + recall + [1.0], [0.0] + precision + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1) if mrec[i + 1] != mrec[i])


@pytest.mark.parametrize("seed", range(4))
def test_all_point_matches_slow_reference(seed):
    gts, dets = _generated_case(100 + seed)
    ours = _ours(gts, dets, "all_point")
    for t, threshold in enumerate(COCO_IOU_THRESHOLDS):
        assert ours[t] == pytest.approx(_slow_all_point_ap(gts, dets, threshold), abs=1e-12)


def test_generated_detections_against_themselves_score_one():
    gts, dets = _generated_case(7, with_ignore=False)
    preds = [(_xyxy(b), s) for b, s in dets]
    result = detection_agreement(preds, preds)
    assert result["ap50"] == 1.0 and result["ap50_95"] == 1.0


def test_best_f1_threshold_is_the_highest_near_best_operating_point():
    from blazedistill.evaluation.metrics import best_f1_threshold

    gt = [[[0, 0, 10, 10], [50, 50, 60, 60]]]
    preds = [
        {
            "boxes": [[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60], [80, 80, 90, 90]],
            "scores": [0.9, 0.8, 0.6, 0.3],
        }
    ]
    match = match_detections(preds, gt)
    # F1 = 2TP / (predictions + positives) at each cut: 2/3, 2/4, 4/5, 4/6
    threshold, f1 = best_f1_threshold(match)
    assert threshold == 0.6 and f1 == pytest.approx(0.8)
    threshold, f1 = best_f1_threshold(match, tolerance=0.2)  # 2/3 is within 0.2 of 0.8: the higher cut wins
    assert threshold == 0.9 and f1 == pytest.approx(2 / 3)
    assert all(np.isnan(best_f1_threshold(match_detections([{"boxes": [], "scores": []}], gt))))
    all_wrong = [{"boxes": [[20, 20, 30, 30]], "scores": [0.7]}]
    assert all(np.isnan(best_f1_threshold(match_detections(all_wrong, gt))))  # no true positive: no calibration
