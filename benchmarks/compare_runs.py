"""Validation curves of several distillation runs on shared axes, and their last rows as a markdown table.

python benchmarks/compare_runs.py runs/utk-detection runs/utk-seed --out docs/img/utk_compare.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from blazedistill.distill.logs import read_metrics  # noqa: E402

PANELS = [
    ("ap50", "AP50 vs the teacher's detections"),
    ("mean_iou", "mean IoU of matched boxes"),
    ("mae_regressors", "raw MAE, regressors"),
    ("mae_classificators", "raw MAE, classificators (clipped logits)"),
]
TABLE = ["ap50", "ap50_95", "f1", "f1_calibrated", "calibrated_min_score", "mean_iou", "score_agreement"]
TABLE += ["keypoint_nme", "mae_regressors", "mae_classificators"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (each with metrics.csv)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4))
    print("| run | " + " | ".join(TABLE) + " |")
    print("|---|" + "---:|" * len(TABLE))
    for run in args.runs:
        rows = read_metrics(run / "metrics.csv")
        for ax, (key, title) in zip(axes, PANELS, strict=True):
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], marker="o", ms=3, label=run.name)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("optimizer step")
            ax.grid(alpha=0.3)
        print(f"| {run.name} | " + " | ".join(f"{rows[-1][k]:.3f}" for k in TABLE) + " |")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)


if __name__ == "__main__":
    main()
