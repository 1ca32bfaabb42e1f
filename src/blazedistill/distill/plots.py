"""Run pictures: loss_curve.png, mae_curve.png, and side_by_side/ (teacher | student detections)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from torch import nn  # noqa: E402


def plot_curves(rows: list[dict], curve: list[list[float]], out: str | Path) -> None:
    """loss_curve.png (train steps, train and validation per epoch) and mae_curve.png (both raw outputs)."""
    out = Path(out)
    steps = [r["step"] for r in rows]

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    if curve:
        s, loss = np.asarray(curve, dtype=float).T
        ax.plot(s, loss, color="tab:blue", alpha=0.25, linewidth=0.8, label="train (logged steps)")
        ax.plot(s, _smooth(loss), color="tab:blue", linewidth=1.2, label="train (smoothed)")
    if rows:
        ax.plot(steps, [r["train_loss"] for r in rows], "o-", color="navy", label="train (epoch mean)")
        ax.plot(steps, [r.get("val_loss", math.nan) for r in rows], "s-", color="tab:orange", label="validation")
    _finish(ax, "optimizer step", "loss", "distillation loss", log=_positive(curve, rows))
    fig.tight_layout()
    fig.savefig(out / "loss_curve.png")
    plt.close(fig)

    fig, (ax_reg, ax_cls) = plt.subplots(1, 2, figsize=(9, 3.8), dpi=100)
    ax_reg.plot(steps, [r.get("mae_regressors", math.nan) for r in rows], "o-", color="tab:green")
    _finish(ax_reg, "optimizer step", "mean |student - teacher|", "regressors (N, A, 16)")
    ax_cls.plot(steps, [r.get("mae_classificators", math.nan) for r in rows], "o-", color="tab:red")
    _finish(ax_cls, "optimizer step", "mean |student - teacher|", "classificators (N, A, 1), logits clipped")
    fig.suptitle("validation MAE of the raw outputs")
    fig.tight_layout()
    fig.savefig(out / "mae_curve.png")
    plt.close(fig)


def draw_side_by_side(
    teacher: nn.Module, student: nn.Module, images: list, out_dir: str | Path, student_min_score: float | None = None
) -> list[Path]:
    """teacher | student detections on each (name, image source) pair, as out_dir/NNN_name.jpg; returns the files.

    Each model runs at its own threshold (its spec's min_score, or `student_min_score`), as `blazedistill
    detect` would; the captions name the thresholds.
    """
    from blazedistill.detector import Detector
    from blazedistill.draw import draw_detections
    from blazedistill.imageio import load_image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    teacher_detector, student_detector = Detector(teacher), Detector(student, min_score=student_min_score)
    captions = f"teacher @{teacher_detector.min_score:g}", f"student @{student_detector.min_score:g}"
    written = []
    for i, (name, source) in enumerate(images):
        image = _shrink(load_image(source))
        left = draw_detections(image, teacher_detector.detect(image))
        right = draw_detections(image, student_detector.detect(image))
        path = out_dir / f"{i:03d}_{Path(str(name)).stem[:60]}.jpg"
        _caption(_hconcat(left, right), *captions).save(path, quality=88)
        written.append(path)
    return written


def _shrink(image: np.ndarray, longest: int = 640) -> np.ndarray:
    """Large photos shrunk to `longest` pixels (the models see 128-256 pixels anyway)."""
    h, w = image.shape[:2]
    if max(h, w) <= longest:
        return image
    scale = longest / max(h, w)
    return np.asarray(Image.fromarray(image).resize((round(w * scale), round(h * scale)), Image.BILINEAR))


def _hconcat(left: Image.Image, right: Image.Image, gap: int = 6) -> Image.Image:
    canvas = Image.new("RGB", (left.width + gap + right.width, max(left.height, right.height)), "white")
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + gap, 0))
    return canvas


def _caption(panel: Image.Image, left: str, right: str, height: int = 18) -> Image.Image:
    canvas = Image.new("RGB", (panel.width, panel.height + height), "white")
    canvas.paste(panel, (0, height))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 3), left, fill="black")
    draw.text((panel.width // 2 + 4, 3), right, fill="black")
    return canvas


def _smooth(values: np.ndarray, window: int = 9) -> np.ndarray:
    if len(values) < window:
        return values
    kernel = np.ones(window) / window
    padded = np.pad(values, (window // 2, window // 2), mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def _positive(curve: list, rows: list[dict]) -> bool:
    values = [v for _, v in curve] + [r.get(k, 1.0) for r in rows for k in ("train_loss", "val_loss")]
    return all(v > 0 for v in values if v == v)


def _finish(ax, xlabel: str, ylabel: str, title: str, log: bool = False) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
