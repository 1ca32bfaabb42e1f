"""Run metrics: per-epoch rows to metrics.csv (always) and TensorBoard (when installed), the train-loss curve."""

from __future__ import annotations

import csv
import math
from pathlib import Path


class RunLog:
    """Keeps the run's history (restorable from a checkpoint) and writes it out on the main process."""

    def __init__(self, out: Path, enabled: bool = True):
        self.out = Path(out)
        self.enabled = enabled
        self.rows: list[dict] = []  # one per validation (epoch end)
        self.curve: list[list[float]] = []  # [step, train loss] every log_every steps
        self._tensorboard = _tensorboard_writer(self.out) if enabled else None

    def history(self) -> dict:
        return {"rows": [dict(r) for r in self.rows], "curve": [list(p) for p in self.curve]}

    def restore(self, history: dict) -> None:
        """Continue from a checkpoint's history; rewrites metrics.csv so it matches the checkpoint."""
        self.rows = [dict(r) for r in history["rows"]]
        self.curve = [list(p) for p in history["curve"]]
        if self.enabled:
            self._write_csv()

    def train_step(self, step: int, loss: float, lr: float, parts: dict[str, float]) -> None:
        self.curve.append([step, loss])
        if self._tensorboard is not None:
            self._tensorboard.add_scalar("train/loss", loss, step)
            self._tensorboard.add_scalar("train/lr", lr, step)
            for name, value in parts.items():
                self._tensorboard.add_scalar(f"train/{name}", value, step)

    def epoch_end(self, row: dict) -> None:
        self.rows.append(dict(row))
        if not self.enabled:
            return
        self._write_csv()
        if self._tensorboard is not None:
            for name, value in row.items():
                if name not in ("epoch", "step") and isinstance(value, (int, float)):
                    self._tensorboard.add_scalar(f"val/{name}", value, row["step"])
            self._tensorboard.flush()

    def last_row(self) -> dict:
        return dict(self.rows[-1]) if self.rows else {}

    def plot(self) -> None:
        if self.enabled:
            from blazedistill.distill.plots import plot_curves

            plot_curves(self.rows, self.curve, self.out)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()

    @staticmethod
    def format_row(row: dict) -> str:
        shown = ("train_loss", "val_loss", "mae_regressors", "mae_classificators", "score_agreement", "ap50")
        shown += ("mean_iou", "f1", "calibrated_min_score", "f1_calibrated")
        values = ", ".join(f"{k} {row[k]:.4g}" for k in shown if k in row)
        return f"epoch {row['epoch']:g} (step {row['step']}): {values}"

    def _write_csv(self) -> None:
        if not self.rows:
            return
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        path = self.out / "metrics.csv"
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: _csv_value(row.get(k)) for k in columns})


def read_metrics(path: str | Path) -> list[dict]:
    """metrics.csv back as a list of {column: float} rows (empty cells become NaN)."""
    with open(path, newline="") as f:
        return [{k: float(v) if v != "" else math.nan for k, v in row.items()} for row in csv.DictReader(f)]


def _csv_value(value):
    return "" if value is None else value


def _tensorboard_writer(out: Path):
    """A SummaryWriter in out/tensorboard when the optional tensorboard package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(out / "tensorboard"))
