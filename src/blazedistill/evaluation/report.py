"""Presenting an `Evaluation`: terminal table, precision-recall plot, side-by-side pictures of disagreements."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from blazedistill.evaluation.evaluate import LOW_SCORE, Evaluation

#: longest side of each half of a side-by-side picture
PANEL_SIZE = 720
#: mean IoU above which two models' matched boxes count as the same
AGREE_IOU = 0.999


def _num(value: float | int | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def _faces(n: int) -> str:
    return f"{n} face" if n == 1 else f"{n} faces"


def format_table(result: Evaluation) -> str:
    """The evaluation as a plain-text table for the terminal."""
    m, r = result.model_detector, result.reference_detector
    a = result.agreement
    at = f"@ {m.min_score:g}"
    lines = [
        f"model      {result.model_name} ({m.spec.name}, {m.input_size} px, threshold {m.min_score:g})",
        f"reference  {result.reference_name} ({r.spec.name}, {r.input_size} px, threshold {r.min_score:g})",
        f"images     {len(result.outcomes)} evaluated, {len(result.failures)} failed",
        "",
        f"agreement with the reference (its {a['num_references']} detections = ground truth, IoU 0.5;",
        f"AP from the model's detections >= {LOW_SCORE:g}, all-point interpolated)",
    ]
    rows = [
        ("AP50", a["ap50"]),
        ("AP[.50:.95]", a["ap50_95"]),
        (f"precision {at}", a["precision"]),
        (f"recall {at}", a["recall"]),
        (f"F1 {at}", a["f1"]),
        ("mean IoU of matches", a["mean_iou"]),
        ("keypoint NME (IOD)", a["keypoint_nme"]),
        ("face counts agree", a["count_agreement"]),
    ]
    mae = result.raw_mae or {}
    lines += [f"  {name:<24}{_num(value):>9}" for name, value in rows]
    for name, key in (("raw MAE regressors", "mae_regressors"), ("raw MAE logits (±100)", "mae_classificators")):
        value = mae.get(key)
        lines.append(f"  {name:<24}{'n/a' if value is None else f'{value:.3g}':>9}")
    if result.raw_mae is None:
        lines.append(f"  (raw MAE n/a: {result.raw_mae_note})")
    gt = result.ground_truth
    if gt is not None:
        lines += [
            "",
            f"ground truth: {gt['images']} images, {gt['faces']} faces ({gt['ignored']} don't care)",
            f"  {'':<24}{'model':>9}{'reference':>11}",
        ]
        keys = [("AP50", "ap50"), ("AP[.50:.95]", "ap50_95"), ("precision", "precision"), ("recall", "recall")]
        keys += [("F1", "f1"), ("mean IoU of matches", "mean_iou"), ("detections", "num_predictions")]
        for name, key in keys:
            lines.append(f"  {name:<24}{_num(gt['model'][key]):>9}{_num(gt['reference'][key]):>11}")
        lines.append("  (precision, recall, F1: each model at its own threshold)")
    return "\n".join(lines)


def plot_precision_recall(result: Evaluation, path: str | Path) -> Path:
    """Precision-recall curves (IoU 0.5) with each operating point marked, saved as an image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5), dpi=120)
    for name, (precision, recall) in result.curves.items():
        line = ax.plot(recall, precision, label=name, drawstyle="steps-post")[0]
        p, r = result.operating_points[name]
        ax.plot([r], [p], "o", color=line.get_color())
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.01))
    ax.set_title(f"{result.model_name} vs {result.reference_name} (IoU 0.5; dots: operating thresholds)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _panel(image: Image.Image, title: str) -> Image.Image:
    scale = PANEL_SIZE / max(image.size)
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    bar = 28
    panel = Image.new("RGB", (image.width, image.height + bar), "white")
    panel.paste(image, (0, bar))
    try:
        font = ImageFont.load_default(size=16)
    except (TypeError, OSError):
        font = ImageFont.load_default()
    ImageDraw.Draw(panel).text((4, 4), title, fill="black", font=font)
    return panel


def side_by_side(result: Evaluation, row: dict) -> Image.Image:
    """The model's (left) and the reference's (right) operating-threshold detections on the image of a
    `result.per_image` row."""
    from blazedistill.draw import draw_detections

    outcome = next(o for o in result.outcomes if str(o.path) == row["path"])
    stats = f"F1 {_num(row['f1'], 2)}, mean IoU {_num(row['mean_iou'], 2)}"
    left = _panel(draw_detections(outcome.path, outcome.model), f"{result.model_name}: {_faces(len(outcome.model))}")
    right = _panel(
        draw_detections(outcome.path, outcome.reference),
        f"{result.reference_name}: {_faces(len(outcome.reference))} ({stats})",
    )
    canvas = Image.new("RGB", (left.width + right.width + 8, max(left.height, right.height)), "white")
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + 8, 0))
    return canvas


def save_worst_pictures(result: Evaluation, out_dir: str | Path, count: int = 8) -> list[Path]:
    """Side-by-side pictures of the `count` images where the two models disagree most (F1, then IoU);
    images where they agree exactly (F1 1 and mean IoU >= 0.999, or both empty) are left out."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    worst = [r for r in result.per_image if r["f1"] < 1 or r["mean_iou"] < AGREE_IOU][:count]
    for rank, row in enumerate(worst, start=1):
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(row["path"]).stem)[:80]
        path = out_dir / f"worst_{rank:02d}_{stem}.jpg"
        tmp = path.with_name(f".{path.name}.part.jpg")
        side_by_side(result, row).save(tmp, quality=90)
        os.replace(tmp, path)
        saved.append(path)
    return saved
