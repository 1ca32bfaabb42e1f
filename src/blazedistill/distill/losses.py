"""Distillation losses: ``seed`` (the original README formula) and ``detection`` (the default).

Both are ``nn.Module``s called as ``loss(student_outputs, teacher_outputs) -> dict[str, Tensor]``, each
argument a BlazeFace-contract pair (regressors (N, A, 16), classificators (N, A, 1)); the dict holds
the components and ``"total"`` (the one to backpropagate). Teacher outputs are plain targets: they
are detached (and cloned when they come from ``torch.inference_mode``), so no gradient ever reaches
the teacher. Both compute in float32 whatever the autocast dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Outputs = tuple[torch.Tensor, torch.Tensor]

#: MediaPipe clips score logits to this range before the sigmoid
SCORE_CLIP = 100.0


def _target(t: torch.Tensor) -> torch.Tensor:
    """A teacher output as a float32 target outside autograd (inference tensors are cloned)."""
    t = t.detach().float()
    return t.clone() if t.is_inference() else t


class SeedLoss(nn.Module):
    """The original project's README loss, applied to the regressors AND to the classificators.

    Per output: ``KL(log_softmax(s/T, dim=1) ‖ softmax(t/T, dim=1))`` with ``reduction="batchmean"``
    times ``α·T²``, plus ``SmoothL1(s, t)`` (beta 1, mean over elements) times ``(1 − α)``; T = 0.01,
    α = 0.6. The softmax runs over dim 1 of (N, A, C), the anchors, separately for each channel C.
    The README applied it to the regressors only, which leaves the score head untrained; here it runs
    on both, and ``total`` is the sum of the two outputs' losses.

    Numerics: both softmaxes are computed as log_softmax / softmax of the float32 logits divided by T,
    which subtract the per-column maximum, so the teacher's background logits (about −21,000, i.e.
    −2.1e6 after /T) stay finite and simply give probability 0 (the KL treats 0·log 0 as 0). The only
    clip is of t/T to ±1e30 (a no-op for any finite real logits: float32 holds them), so an infinite
    teacher logit cannot turn the softmax into NaN. The SmoothL1 terms compare raw values, so the
    score term chases the teacher's raw −21,000 logits, as the formula says.
    """

    def __init__(self, temperature: float = 0.01, alpha: float = 0.6) -> None:
        super().__init__()
        if temperature <= 0 or not 0 <= alpha <= 1:
            raise ValueError(f"seed loss needs temperature > 0 and 0 <= alpha <= 1, got {temperature}, {alpha}")
        self.temperature = temperature
        self.alpha = alpha

    def forward(self, student: Outputs, teacher: Outputs) -> dict[str, torch.Tensor]:
        parts: dict[str, torch.Tensor] = {}
        for name, s, t in (("reg", *_pair(student, teacher, 0)), ("cls", *_pair(student, teacher, 1))):
            s_log_p = F.log_softmax(s / self.temperature, dim=1)
            t_p = F.softmax((t / self.temperature).clamp(-1e30, 1e30), dim=1)
            kl = F.kl_div(s_log_p, t_p, reduction="batchmean")
            parts[f"{name}_kl"] = kl * self.alpha * self.temperature**2
            parts[f"{name}_smooth_l1"] = F.smooth_l1_loss(s, t) * (1 - self.alpha)
        parts["total"] = sum(parts.values())
        return parts


class DetectionLoss(nn.Module):
    """Per-anchor soft BCE on scores + teacher-confidence-weighted SmoothL1 on boxes and keypoints.

    - ``score``: mean over all N·A anchors of BCE(s/τ, sigmoid(clip(t, ±100)/τ)) × τ² (τ ≥ 1), the
      binary analogue of Hinton's soft targets; it keeps the absolute calibration MediaPipe's fixed
      thresholds rely on (a softmax over anchors would not).
    - ``box`` (x, y, w, h) and ``keypoints`` (12 values): SmoothL1 with ``beta`` on raw / input_size,
      i.e. in units of the input side (beta 0.01 ≈ 1.3 px at 128), averaged over the coordinates of
      each anchor, then averaged over anchors with weights = teacher probability sigmoid(clip(t)),
      normalised by their sum (+ eps): anchors the teacher calls background, whose boxes mean nothing,
      do not count.
    - ``total`` = score_weight·score + box_weight·box + keypoint_weight·keypoints.
    """

    def __init__(
        self,
        input_size: int,
        temperature: float = 1.0,
        beta: float = 0.01,
        score_weight: float = 1.0,
        box_weight: float = 1.0,
        keypoint_weight: float = 1.0,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if input_size <= 0 or temperature < 1 or beta <= 0:
            raise ValueError(
                f"detection loss needs input_size > 0, temperature >= 1, beta > 0; "
                f"got {input_size}, {temperature}, {beta}"
            )
        self.input_size = input_size
        self.temperature = temperature
        self.beta = beta
        self.weights = {"score": score_weight, "box": box_weight, "keypoints": keypoint_weight}
        self.eps = eps

    def forward(self, student: Outputs, teacher: Outputs) -> dict[str, torch.Tensor]:
        s_reg, t_reg = _pair(student, teacher, 0)
        s_cls, t_cls = _pair(student, teacher, 1)
        tau = self.temperature
        t_logits = t_cls.clamp(-SCORE_CLIP, SCORE_CLIP)
        score = F.binary_cross_entropy_with_logits(s_cls / tau, torch.sigmoid(t_logits / tau)) * tau**2
        weights = torch.sigmoid(t_logits)[..., 0]  # (N, A)
        weights = weights / (weights.sum() + self.eps)
        errors = F.smooth_l1_loss(s_reg / self.input_size, t_reg / self.input_size, beta=self.beta, reduction="none")
        parts = {
            "score": score,
            "box": (errors[..., :4].mean(-1) * weights).sum(),
            "keypoints": (errors[..., 4:].mean(-1) * weights).sum(),
        }
        parts["total"] = sum(self.weights[name] * value for name, value in parts.items())
        return parts


def _pair(student: Outputs, teacher: Outputs, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Output ``index`` of student (float32) and teacher (as a target); ValueError on shape mismatch."""
    s, t = student[index], teacher[index]
    if s.shape != t.shape:
        raise ValueError(f"student output {index} has shape {tuple(s.shape)}, teacher's {tuple(t.shape)}")
    return s.float(), _target(t)


LOSSES: dict[str, Callable[..., nn.Module]] = {
    "detection": DetectionLoss,
    "seed": lambda input_size, **kwargs: SeedLoss(**kwargs),  # raw units: the input size plays no part
}


def get_loss(name: str, input_size: int, **kwargs) -> nn.Module:
    """The loss ``name`` ("detection" or "seed") for a model with square inputs of side ``input_size``."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")
    return LOSSES[name](input_size=input_size, **kwargs)
