"""Distillation losses against hand-computed values (plain Python float math, not torch)."""

from __future__ import annotations

import math

import pytest
import torch

from blazedistill.distill.losses import DetectionLoss, SeedLoss, get_loss


def softmax(xs: list[float]) -> list[float]:
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def smooth_l1(d: float, beta: float = 1.0) -> float:
    return 0.5 * d * d / beta if abs(d) < beta else abs(d) - 0.5 * beta


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def seed_by_hand(s: list, t: list, T: float, alpha: float) -> float:
    """s, t: nested lists [n][a][c]; KL over anchors per (n, c), summed, / N; SmoothL1 mean."""
    n_batch, n_anchor, n_chan = len(s), len(s[0]), len(s[0][0])
    kl = 0.0
    for n in range(n_batch):
        for c in range(n_chan):
            ps = softmax([s[n][a][c] / T for a in range(n_anchor)])
            pt = softmax([t[n][a][c] / T for a in range(n_anchor)])
            kl += sum(q * (math.log(q) - math.log(p)) for p, q in zip(ps, pt, strict=True) if q > 0)
    kl /= n_batch
    sl1 = [smooth_l1(s[n][a][c] - t[n][a][c]) for n in range(n_batch) for a in range(n_anchor) for c in range(n_chan)]
    return kl * alpha * T * T + sum(sl1) / len(sl1) * (1 - alpha)


SEED_S_REG = [[[0.010, 2.0], [0.020, -1.5], [0.000, 0.3]], [[0.004, 0.0], [-0.01, 0.1], [0.03, 0.2]]]
SEED_T_REG = [[[0.000, 0.5], [0.015, -1.0], [0.010, 0.3]], [[0.010, 0.0], [0.000, 0.1], [0.02, 3.2]]]
SEED_S_CLS = [[[0.02], [-0.01], [0.0]], [[0.5], [0.49], [0.51]]]
SEED_T_CLS = [[[0.0], [0.012], [-0.005]], [[0.47], [0.5], [0.52]]]


def test_seed_loss_matches_hand_computation():
    s = (torch.tensor(SEED_S_REG), torch.tensor(SEED_S_CLS))
    t = (torch.tensor(SEED_T_REG), torch.tensor(SEED_T_CLS))
    parts = SeedLoss()(s, t)
    expected_reg = seed_by_hand(SEED_S_REG, SEED_T_REG, 0.01, 0.6)
    expected_cls = seed_by_hand(SEED_S_CLS, SEED_T_CLS, 0.01, 0.6)
    assert float(parts["reg_kl"] + parts["reg_smooth_l1"]) == pytest.approx(expected_reg, rel=1e-4)
    assert float(parts["cls_kl"] + parts["cls_smooth_l1"]) == pytest.approx(expected_cls, rel=1e-4)
    assert float(parts["total"]) == pytest.approx(expected_reg + expected_cls, rel=1e-4)
    assert float(parts["reg_kl"]) > 0 and float(parts["cls_kl"]) > 0  # the example is not degenerate


def test_seed_loss_finite_with_real_teacher_background_logits():
    s = (torch.randn(2, 896, 16, requires_grad=True), torch.randn(2, 896, 1, requires_grad=True))
    t_cls = torch.full((2, 896, 1), -21000.0)
    t_cls[:, 100] = 5.0
    parts = SeedLoss()(s, (torch.randn(2, 896, 16), t_cls))
    parts["total"].backward()
    assert torch.isfinite(parts["total"]) and torch.isfinite(s[1].grad).all()
    # with T = 0.01 the teacher's softmax is one-hot on anchor 100: KL = -mean(log p_s[100]) * alpha T^2
    log_p = torch.log_softmax(s[1].detach() / 0.01, dim=1)[:, 100, 0]
    assert float(parts["cls_kl"].detach()) == pytest.approx(float(-log_p.mean() * 0.6 * 1e-4), rel=1e-4)


def test_seed_loss_zero_when_student_equals_teacher():
    reg, cls = torch.randn(2, 10, 16), torch.randn(2, 10, 1)
    parts = SeedLoss()((reg, cls), (reg.clone(), cls.clone()))
    assert float(parts["total"]) == pytest.approx(0.0, abs=1e-6)


def detection_by_hand(s_reg, s_cls, t_reg, t_cls, size, tau, beta) -> dict[str, float]:
    """Lists [a][k] for one image: soft BCE mean × tau², teacher-prob-weighted SmoothL1 means."""
    bce = []
    for s, t in zip(s_cls, t_cls, strict=True):
        p = sigmoid(max(-100.0, min(100.0, t[0])) / tau)
        q = sigmoid(s[0] / tau)
        bce.append(-(p * math.log(q) + (1 - p) * math.log(1 - q)))
    w = [sigmoid(max(-100.0, min(100.0, t[0]))) for t in t_cls]
    w = [v / (sum(w) + 1e-6) for v in w]

    def part(lo: int, hi: int) -> float:
        per_anchor = [
            sum(smooth_l1(sr[k] / size - tr[k] / size, beta) for k in range(lo, hi)) / (hi - lo)
            for sr, tr in zip(s_reg, t_reg, strict=True)
        ]
        return sum(wa * e for wa, e in zip(w, per_anchor, strict=True))

    return {"score": sum(bce) / len(bce) * tau * tau, "box": part(0, 4), "keypoints": part(4, 16)}


def test_detection_loss_matches_hand_computation():
    t_cls = [[2.0], [-21000.0], [0.3]]
    s_cls = [[0.5], [-3.0], [1.0]]
    t_reg = [[0.5, -3.0, 10.0, 10.0] + [float(k) for k in range(12)] for _ in range(3)]
    s_reg = [
        [0.0, 0.0, 12.0, 10.0] + [float(k) + 0.5 * (k % 3) for k in range(12)],
        [50.0] * 16,  # background anchor: a wild box that must not count
        [0.6, -2.9, 10.0, 9.0] + [float(k) - 2.0 for k in range(12)],
    ]
    loss = DetectionLoss(input_size=100, temperature=2.0, beta=0.01)
    parts = loss((torch.tensor([s_reg]), torch.tensor([s_cls])), (torch.tensor([t_reg]), torch.tensor([t_cls])))
    expected = detection_by_hand(s_reg, s_cls, t_reg, t_cls, 100, 2.0, 0.01)
    for name, value in expected.items():
        assert float(parts[name]) == pytest.approx(value, rel=1e-4), name
    assert float(parts["total"]) == pytest.approx(sum(expected.values()), rel=1e-4)
    weighted = DetectionLoss(
        input_size=100, temperature=2.0, beta=0.01, score_weight=2, box_weight=3, keypoint_weight=5
    )
    total = weighted((torch.tensor([s_reg]), torch.tensor([s_cls])), (torch.tensor([t_reg]), torch.tensor([t_cls])))
    by_hand = 2 * expected["score"] + 3 * expected["box"] + 5 * expected["keypoints"]
    assert float(total["total"]) == pytest.approx(by_hand, rel=1e-4)


def test_detection_loss_at_student_equals_teacher():
    reg = torch.randn(3, 896, 16) * 20
    cls = torch.randn(3, 896, 1) * 4
    s_cls = cls.clone().requires_grad_(True)
    parts = get_loss("detection", 128, temperature=2.0)((reg.clone(), s_cls), (reg, cls))
    assert float(parts["box"]) == 0.0 and float(parts["keypoints"]) == 0.0
    parts["total"].backward()
    assert s_cls.grad.abs().max() < 1e-7  # soft BCE is minimal where student logits equal the teacher's
    p = torch.sigmoid(cls / 2.0).double()
    entropy = -(p * p.log() + (1 - p) * (1 - p).log()).mean() * 4
    assert float(parts["score"].detach()) == pytest.approx(float(entropy), rel=1e-4)


@pytest.mark.parametrize("name", ["seed", "detection"])
def test_gradient_reaches_student_only(name):
    student = (torch.randn(2, 896, 16, requires_grad=True), torch.randn(2, 896, 1, requires_grad=True))
    t_reg = (torch.randn(2, 896, 16) * 10).requires_grad_(True)
    t_cls = (torch.randn(2, 896, 1) * 5).requires_grad_(True)
    get_loss(name, 128)(student, (t_reg, t_cls))["total"].backward()
    assert t_reg.grad is None and t_cls.grad is None
    assert student[0].grad.abs().sum() > 0 and student[1].grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["seed", "detection"])
def test_accepts_teacher_outputs_from_inference_mode(name):
    student = (torch.randn(1, 896, 16, requires_grad=True), torch.randn(1, 896, 1, requires_grad=True))
    with torch.inference_mode():
        teacher = (torch.randn(1, 896, 16), torch.randn(1, 896, 1))
    get_loss(name, 128)(student, teacher)["total"].backward()
    assert student[1].grad is not None


def test_errors_are_clear():
    with pytest.raises(ValueError, match="unknown loss 'mse'"):
        get_loss("mse", 128)
    with pytest.raises(ValueError, match="temperature >= 1"):
        get_loss("detection", 128, temperature=0.5)
    with pytest.raises(ValueError, match="shape"):
        SeedLoss()(
            (torch.zeros(1, 896, 16), torch.zeros(1, 896, 1)), (torch.zeros(1, 2304, 16), torch.zeros(1, 2304, 1))
        )
