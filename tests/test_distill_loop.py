"""The training loop with tiny stand-in models (input 32, 56 anchors) on generated images: fast and exact."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from blazedistill.distill import checkpoint as ckpt
from blazedistill.distill.config import RunConfig
from blazedistill.distill.loop import NonFiniteLossError, Parts, train
from blazedistill.specs import AnchorOptions, ModelSpec

TINY_SPEC = ModelSpec("tiny", 32, AnchorOptions(input_size=32, strides=(8, 16, 16, 16)), 0.5, 56)


class TinyDetector(nn.Module):
    """A BlazeFace-contract stand-in for TINY_SPEC: 4x4 cells x 2 anchors + 2x2 cells x 6 anchors."""

    def __init__(self, seed: int, width: int = 8):
        super().__init__()
        torch.manual_seed(seed)
        conv = nn.Conv2d
        self.a = nn.Sequential(
            conv(3, width, 3, 2, 1),
            nn.ReLU(),
            conv(width, width, 3, 2, 1),
            nn.ReLU(),
            conv(width, width, 3, 2, 1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        self.b = nn.Sequential(conv(width, width, 3, 2, 1), nn.ReLU())
        self.head_a, self.head_b = conv(width, 2 * 17, 1), conv(width, 6 * 17, 1)
        self.spec = TINY_SPEC

    def forward(self, x):
        fa = self.a(x)
        fb = self.b(fa)
        rows = [h(f).permute(0, 2, 3, 1).reshape(x.shape[0], -1, 17) for h, f in ((self.head_a, fa), (self.head_b, fb))]
        out = torch.cat(rows, dim=1)
        return out[..., :16] * 8, out[..., 16:] * 4


def write_images(folder, count: int, seed: int = 0):
    """`count` generated JPEGs: a bright ellipse on a random background, at random places and sizes."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:48, :48]
    for i in range(count):
        pixels = rng.integers(0, 120, (48, 48, 3)).astype(np.uint8)
        cx, cy, r = rng.uniform(12, 36), rng.uniform(12, 36), rng.uniform(5, 14)
        pixels[((xx - cx) / r) ** 2 + ((yy - cy) / (1.3 * r)) ** 2 < 1] = rng.integers(150, 255, 3)
        Image.fromarray(pixels).save(folder / f"img{i:03d}.jpg", quality=90)
    return folder


def tiny_parts(data_dir, cfg: RunConfig, loss_fn=None) -> Parts:
    from blazedistill.distill.dataset import build_dataloaders
    from blazedistill.distill.losses import get_loss

    loaders = build_dataloaders(
        [str(data_dir)],
        val_fraction=0.25,
        input_size=32,
        batch_size=cfg.train.batch_size,
        workers=cfg.data.workers,
        seed=cfg.train.seed,
    )
    return Parts(
        teacher=TinyDetector(seed=1),
        student=TinyDetector(seed=2),
        loss_fn=loss_fn or get_loss("detection", 32),
        train_loader=loaders.train,
        val_loader=loaders.val,
    )


def tiny_config(out, **train) -> RunConfig:
    cfg = RunConfig()
    cfg.model.student = "tiny"
    cfg.data.workers = 0
    cfg.optim.ema_decay = 0.9
    cfg.optim.warmup_steps = 2
    cfg.val.teacher_min_score = 0.5
    cfg.train.__dict__.update({"epochs": 2, "batch_size": 4, "out": str(out), "log_every": 1, "device": "cpu"})
    cfg.train.__dict__.update(train)
    return cfg


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("tiny") / "images", 16)


@pytest.mark.slow
def test_resume_at_an_epoch_boundary_reproduces_the_uninterrupted_run(tmp_path, images):
    train(tiny_config(tmp_path / "a"), tiny_parts(images, tiny_config(tmp_path / "a")))
    paused = train(tiny_config(tmp_path / "b"), tiny_parts(images, tiny_config(tmp_path / "b")), stop_after_epoch=1)
    assert paused["stopped"].startswith("paused after epoch 1") and paused["steps"] == 3
    first_half = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert (first_half["epoch"], first_half["epoch_step"], first_half["step"]) == (1, 0, 3)
    resumed = train(tiny_config(tmp_path / "b"), tiny_parts(images, tiny_config(tmp_path / "b")), resume=tmp_path / "b")
    assert resumed["steps"] == 6 and resumed["stopped"] == "finished"

    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    for name, value in a["ema"].items():
        assert torch.equal(value, b["ema"][name]), name
    for index, state in a["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg_sq"], b["optimizer"]["state"][index]["exp_avg_sq"])
    assert a["scheduler"] == b["scheduler"]
    assert not torch.equal(first_half["model"]["head_a.weight"], a["model"]["head_a.weight"])  # it did train on
    # the rebuilt log matches too
    assert (tmp_path / "a" / "metrics.csv").read_text() == (tmp_path / "b" / "metrics.csv").read_text()


def test_non_finite_loss_stops_with_a_message_and_keeps_the_last_good_state(tmp_path, images):
    from blazedistill.distill.losses import get_loss

    real_loss = get_loss("detection", 32)
    calls = []

    def poisoned(student, teacher):
        result = real_loss(student, teacher)
        if torch.is_grad_enabled():  # training steps only (validation runs under inference mode)
            calls.append(1)
            if len(calls) == 5:
                result["total"] = result["total"] * float("nan")
        return result

    cfg = tiny_config(tmp_path / "nan")
    parts = tiny_parts(images, cfg, loss_fn=poisoned)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at epoch 2, step 5.*last\.pt keeps the last good"):
        train(cfg, parts)
    state = ckpt.load_checkpoint(tmp_path / "nan" / "last.pt")
    assert state["step"] == 4 and (state["epoch"], state["epoch_step"]) == (1, 1)
    for name, value in parts.student.state_dict().items():
        assert torch.isfinite(value.float()).all(), name
        assert torch.equal(value, state["model"][name]), name  # the bad step changed nothing


def test_teacher_gets_no_gradients_and_stays_in_eval_mode(tmp_path, images):
    cfg = tiny_config(tmp_path / "t", epochs=1)
    parts = tiny_parts(images, cfg)
    before = {k: v.clone() for k, v in parts.teacher.state_dict().items()}
    summary = train(cfg, parts)
    assert not parts.teacher.training
    assert all(p.grad is None and not p.requires_grad for p in parts.teacher.parameters())
    for name, value in parts.teacher.state_dict().items():
        assert torch.equal(value, before[name]), name  # BN running stats untouched too
    assert summary["throughput"]["images_per_s"] > 0
    shares = summary["throughput"]
    assert 0 <= shares["data_wait_share"] <= 1 and 0 < shares["teacher_share"] < 1
    with open(tmp_path / "t" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and float(rows[0]["step"]) == 3
    for key in ("val_loss", "mae_regressors", "mae_classificators", "ap50", "score_agreement"):
        assert np.isfinite(float(rows[0][key])), key


def test_checkpoints_carry_the_calibrated_student_threshold(tmp_path, images):
    cfg = tiny_config(tmp_path / "c", epochs=1)
    cfg.optim.lr = 0.0  # the student stays a copy of the teacher: it agrees perfectly at the teacher's threshold
    parts = tiny_parts(images, cfg)
    parts.student.load_state_dict(parts.teacher.state_dict())
    summary = train(cfg, parts)
    state = ckpt.load_checkpoint(tmp_path / "c" / "last.pt")
    calibrated = state["calibrated_min_score"]
    final = summary["final"]
    assert final["f1_calibrated"] == 1.0 and final["teacher_faces"] > 0
    assert calibrated == summary["calibrated_min_score"] == round(final["calibrated_min_score"], 4)
    assert TINY_SPEC.min_score <= calibrated <= 1 and state["spec"]["min_score"] == calibrated
    assert state["min_score"] == TINY_SPEC.min_score == summary["teacher_min_score"]  # the teacher's, kept apart

    cfg = tiny_config(tmp_path / "off", epochs=1)
    cfg.val.calibrate = False
    summary = train(cfg, tiny_parts(images, cfg))
    state = ckpt.load_checkpoint(tmp_path / "off" / "last.pt")
    assert state["calibrated_min_score"] is None and state["spec"]["min_score"] == TINY_SPEC.min_score
