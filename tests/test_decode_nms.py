"""Decoding and MediaPipe WEIGHTED NMS on hand-built cases (and against a plain loop on random boxes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from blazedistill.decode import decode_boxes, decode_scores, valid_detections
from blazedistill.nms import batched_weighted_nms, box_iou, weighted_nms

# ---- decoding ------------------------------------------------------------------------------------------


def test_decode_hand_computed():
    raw = torch.zeros(1, 2, 16)
    raw[0, 1, :4] = torch.tensor([12.8, -6.4, 25.6, 51.2])  # S = 128: dx 0.1, dy -0.05, w 0.2, h 0.4
    raw[0, 1, 4:6] = torch.tensor([-12.8, 0.0])  # keypoint 0: 0.1 left of the anchor
    raw[0, 1, 14:16] = torch.tensor([0.0, 64.0])  # keypoint 5: 0.5 below
    anchors = torch.tensor([[0.25, 0.75], [0.5, 0.5]])
    out = decode_boxes(raw, anchors, 128)
    assert out.shape == (1, 2, 16)
    assert torch.allclose(out[0, 1, :4], torch.tensor([0.5, 0.25, 0.7, 0.65]))
    assert torch.allclose(out[0, 1, 4:6], torch.tensor([0.4, 0.5]))
    assert torch.allclose(out[0, 1, 14:16], torch.tensor([0.5, 1.0]))
    assert torch.allclose(out[0, 1, 6:14].view(-1, 2), torch.tensor([0.5, 0.5]))
    assert torch.allclose(out[0, 0], torch.tensor([0.25, 0.75] * 8))  # zero raw: a point box at the anchor


def test_decode_rejects_wrong_layout():
    with pytest.raises(ValueError, match="16"):
        decode_boxes(torch.zeros(1, 4, 4), torch.zeros(4, 2), 128)


def test_scores_are_clipped_sigmoid():
    logits = torch.tensor([[[-21000.0], [0.0], [2.0], [1000.0]]])
    scores = decode_scores(logits)
    assert scores.shape == (1, 4)
    assert torch.isfinite(scores).all()
    assert scores[0, 0] == pytest.approx(1 / (1 + math.exp(100)), rel=1e-3)
    assert scores[0, 1:].tolist() == pytest.approx([0.5, 1 / (1 + math.exp(-2)), 1.0])


def test_valid_detections():
    decoded = torch.zeros(1, 6, 16)
    decoded[0, :, :4] = torch.tensor(
        [[0, 0, 1, 1], [0, 0, 0, 0], [1, 0, 0, 1], [0, 1, 1, 0], [0, 0, float("nan"), 1], [0, 0, float("inf"), 1]]
    )
    scores = torch.tensor([[0.5, 0.5, 0.9, 0.9, 0.9, 0.9]])
    assert valid_detections(decoded, scores, 0.5).tolist() == [[True, True, False, False, False, False]]
    assert valid_detections(decoded, scores, 0.51).tolist() == [[False] * 6]
    decoded[0, 0, 7] = float("nan")  # a NaN keypoint also disqualifies the row
    assert not valid_detections(decoded, scores, 0.5)[0, 0]


# ---- IoU -----------------------------------------------------------------------------------------------


def test_box_iou_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0]])
    iou = box_iou(a, b)
    assert iou[0].tolist() == pytest.approx([1 / 7, 1.0, 0.0])
    assert iou[1].tolist() == [0.0, 0.0, 0.0]  # zero area: 0, not NaN
    assert box_iou(torch.tensor([[float("nan")] * 4]), a).isnan().logical_not().all()


# ---- weighted NMS --------------------------------------------------------------------------------------


def _rows(boxes, keypoint_offset: float = 0.0) -> torch.Tensor:
    boxes = torch.tensor(boxes, dtype=torch.float32)
    keypoints = boxes[:, :2].repeat(1, 6) + keypoint_offset
    return torch.cat([boxes, keypoints], dim=1)


def test_cluster_is_weighted_mean_with_top_score():
    rows = _rows([[0, 0, 10, 10], [1, 1, 11, 11]])
    scores = torch.tensor([0.9, 0.6])
    out, out_scores = weighted_nms(rows, scores)
    expected = (0.9 * rows[0] + 0.6 * rows[1]) / 1.5
    assert out.shape == (1, 16) and torch.allclose(out[0], expected)
    assert out_scores.tolist() == pytest.approx([0.9])  # MediaPipe: the top's score, not the mean 0.75


def test_order_and_separate_clusters():
    rows = _rows([[20, 20, 30, 30], [0, 0, 10, 10], [0.5, 0, 10.5, 10]])
    scores = torch.tensor([0.7, 0.8, 0.95])  # unsorted input
    out, out_scores = weighted_nms(rows, scores)
    assert out_scores.tolist() == pytest.approx([0.95, 0.7])
    assert torch.allclose(out[0, :4], (0.95 * rows[2, :4] + 0.8 * rows[1, :4]) / 1.75)
    assert torch.equal(out[1], rows[0])


def test_membership_is_decided_by_the_top_only():
    # B overlaps A (IoU 0.43) and C overlaps B (IoU 0.43) but not A (IoU 0.11): greedy gives {A, B}, {C}
    rows = _rows([[0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]])
    out, out_scores = weighted_nms(rows, torch.tensor([0.9, 0.8, 0.7]))
    assert out_scores.tolist() == pytest.approx([0.9, 0.7])
    assert torch.equal(out[1], rows[2])


def test_threshold_is_strict():
    rows = _rows([[0, 0, 10, 10], [0, 0, 10, 10]])
    rows[1, :4] = torch.tensor([0.0, 0.0, 10.0, 10.0])
    assert len(weighted_nms(rows, torch.tensor([0.9, 0.8]), iou_threshold=0.999)[0]) == 1
    assert len(weighted_nms(rows, torch.tensor([0.9, 0.8]), iou_threshold=1.0)[0]) == 2  # IoU 1 is not > 1


def test_degenerate_boxes_terminate():
    nan = float("nan")
    rows = _rows([[nan, nan, nan, nan], [5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10], [-3, -3, -8, -8]])
    out, out_scores = weighted_nms(rows, torch.tensor([0.99, 0.98, 0.97, 0.5, 0.4]))
    assert len(out) == 5  # nothing overlaps anything: every detection is its own cluster, and the loop ends
    assert out_scores.tolist() == pytest.approx([0.99, 0.98, 0.97, 0.5, 0.4])
    assert out[0].isnan().all() and torch.equal(out[3], rows[3])
    many = _rows([[1, 1, 1, 1]] * 2000)
    assert len(weighted_nms(many, torch.rand(2000))[0]) == 2000


def test_zero_scores_keep_the_top_box():
    rows = _rows([[0, 0, 10, 10], [1, 1, 11, 11]])
    out, _ = weighted_nms(rows, torch.zeros(2))
    assert torch.isfinite(out).all() and torch.equal(out[0], rows[0])


def test_empty_input():
    out, scores = weighted_nms(torch.zeros(0, 16), torch.zeros(0))
    assert out.shape == (0, 16) and scores.shape == (0,)
    results = batched_weighted_nms(torch.zeros(2, 5, 16), torch.zeros(2, 5), torch.zeros(2, 5, dtype=torch.bool))
    assert [r[0].shape for r in results] == [(0, 16), (0, 16)]


def _reference_weighted_nms(rows: np.ndarray, scores: np.ndarray, threshold: float):
    """MediaPipe's loop written plainly (with the top always removed)."""

    def iou(a, b):
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        if w <= 0 or h <= 0:
            return 0.0
        inter = w * h
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    remaining = sorted(range(len(scores)), key=lambda i: -scores[i])
    outputs = []
    while remaining:
        top = remaining[0]
        members = [i for i in remaining if i == top or iou(rows[top], rows[i]) > threshold]
        weights = scores[members]
        outputs.append(((rows[members] * weights[:, None]).sum(0) / weights.sum(), scores[top]))
        remaining = [i for i in remaining if i not in members]
    return outputs


def test_matches_plain_loop_on_random_boxes():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 60))
        centres = rng.uniform(0, 1, (n, 2)) * np.array([1, 1]) * rng.choice([0.2, 1.0])
        sizes = rng.uniform(0.05, 0.3, (n, 2))
        boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], 1)
        rows = np.concatenate([boxes, rng.uniform(0, 1, (n, 12))], 1).astype(np.float32)
        scores = rng.uniform(0.5, 1, n).astype(np.float32)
        out, out_scores = weighted_nms(torch.from_numpy(rows), torch.from_numpy(scores), 0.3)
        expected = _reference_weighted_nms(rows.astype(np.float64), scores.astype(np.float64), 0.3)
        assert len(out) == len(expected)
        for got, got_score, (want, want_score) in zip(out.numpy(), out_scores.numpy(), expected, strict=True):
            assert np.allclose(got, want, atol=1e-5) and got_score == pytest.approx(want_score)


def test_batched_equals_per_image():
    rng = np.random.default_rng(1)
    centres = torch.from_numpy(rng.uniform(0, 1, (3, 40, 2)).astype(np.float32))
    rows = torch.cat([centres - 0.1, centres + 0.1, torch.rand(3, 40, 12)], dim=-1)
    scores = torch.rand(3, 40)
    keep = scores > 0.4
    for (out, out_scores), r, s, k in zip(batched_weighted_nms(rows, scores, keep), rows, scores, keep, strict=True):
        single, single_scores = weighted_nms(r[k], s[k])
        assert torch.equal(out, single) and torch.equal(out_scores, single_scores)
