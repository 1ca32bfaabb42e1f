"""`blazedistill distill` end to end with the real front teacher and the default student, on a few photos."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageOps

from blazedistill.cli.main import main
from blazedistill.distill.config import load_config
from blazedistill.distill.logs import read_metrics

SRC = Path(__file__).resolve().parents[1] / "src"
RUN_FILES = ("config.yaml", "last.pt", "best.pt", "metrics.csv", "loss_curve.png", "mae_curve.png", "summary.json")


@pytest.fixture(scope="module")
def photos(tmp_path_factory, grace_hopper):
    """10 framings of matplotlib's Grace Hopper photo (crops, zoom-outs, a flip) as small JPEGs."""
    folder = tmp_path_factory.mktemp("photos")
    image = Image.open(grace_hopper).convert("RGB")
    w, h = image.size
    for i in range(10):
        margin = 0.04 * i
        crop = image.crop((int(margin * w), int(margin * h / 2), int(w - margin * w / 2), int(h - margin * h)))
        if i % 3 == 1:
            crop = ImageOps.mirror(crop)
        if i % 4 == 2:
            crop = ImageOps.expand(crop, border=crop.width // 2, fill=(90, 100, 110))
        crop.thumbnail((200, 200))
        crop.save(folder / f"photo{i}.jpg", quality=90)
    return folder


def distill(args: list[str]) -> int:
    return main(["distill", "--workers", "0", "--device", "cpu", "--set", "train.log_every=1", *args])


@pytest.mark.slow
def test_tiny_distillation_writes_every_artefact_and_the_student_detects(tmp_path, photos, grace_hopper, capsys):
    from blazedistill import Detector, load_model
    from blazedistill.models.registry import DEFAULT_STUDENT

    out = tmp_path / "run"
    args = ["--data", str(photos), "--val-fraction", "0.2", "--epochs", "2", "--batch-size", "4", "--out", str(out)]
    assert distill([*args, "--preview", str(grace_hopper)]) == 0
    printed = capsys.readouterr().out
    assert "done (finished): 4 steps, 2.00 epochs" in printed and "images/s" in printed

    for name in RUN_FILES:
        assert (out / name).is_file(), name
    assert [p.name for p in (out / "side_by_side").iterdir()] == ["000_grace_hopper.jpg"]
    rows = read_metrics(out / "metrics.csv")
    assert [r["step"] for r in rows] == [2, 4] and [r["epoch"] for r in rows] == [1, 2]
    assert all(0 <= r["ap50"] <= 1 and r["mae_regressors"] > 0 for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["student"] == DEFAULT_STUDENT
    assert 0 < summary["throughput"]["teacher_share"] < 1

    cfg = load_config(out / "config.yaml")
    state = torch.load(out / "best.pt", weights_only=True)
    assert state["config"] == cfg.to_dict() and cfg.model.student == DEFAULT_STUDENT
    assert state["teacher"] == "front" and state["input_size"] == 128 and state["min_score"] == 0.75

    model = load_model(out / "best.pt")
    assert model.spec.name == "front" and model.spec.num_anchors == 896 and not model.training
    reg, cls = model(torch.zeros(1, 3, 128, 128))
    assert reg.shape == (1, 896, 16) and cls.shape == (1, 896, 1)
    detections = Detector(model, min_score=0.0).detect(grace_hopper)
    assert detections and all(0 <= d.score <= 1 for d in detections)


@pytest.mark.slow
def test_config_yaml_reproduces_the_run(tmp_path, photos):
    args = ["--val-fraction", "0.2", "--max-steps", "2", "--batch-size", "4", "--set", "optim.ema_decay=0.9"]
    assert distill(["--data", str(photos), *args, "--out", str(tmp_path / "a")]) == 0
    assert distill(["--config", str(tmp_path / "a" / "config.yaml"), "--out", str(tmp_path / "b")]) == 0
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 2
    for part in ("model", "ema"):
        for name, value in a[part].items():
            assert torch.equal(value, b[part][name]), f"{part}.{name}"


@pytest.mark.slow
def test_two_processes_under_torchrun(tmp_path, photos):
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        "-m",
        "blazedistill",
        "distill",
        "--data",
        str(photos),
        "--val-fraction",
        "0.2",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("done (finished)") == 1  # the main process alone reports and writes
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 2  # 8 images / (2 processes x 2)
    assert len(read_metrics(out / "metrics.csv")) == 1
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".pt") == ["best.pt", "last.pt"]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
