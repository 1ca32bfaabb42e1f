import pickle
import random

import numpy as np
import pytest
import torch

from blazedistill.distill import checkpoint as ckpt
from blazedistill.specs import teacher_spec


def student_checkpoint(tmp_path, ema: bool = False):
    from blazedistill.models.registry import DEFAULT_STUDENT, create_student

    spec = teacher_spec("front")
    torch.manual_seed(0)
    model = create_student(DEFAULT_STUDENT, spec)
    trained = {k: v + 0.01 if v.dtype.is_floating_point else v for k, v in model.state_dict().items()}
    state = {
        "format": ckpt.FORMAT,
        "student": DEFAULT_STUDENT,
        "student_kwargs": {},
        "spec": spec.to_dict(),
        "teacher": "front",
        "model": model.state_dict(),
        "ema": trained if ema else None,
        "rng": ckpt.rng_state(),
    }
    path = tmp_path / "student.pt"
    ckpt.save_checkpoint(state, path)
    return path, model, trained


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint({"format": ckpt.FORMAT, "value": torch.arange(3)}, path)
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
        ckpt.save_checkpoint({"format": ckpt.FORMAT, "value": lambda: 0}, path)  # cannot be pickled
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    state = torch.load(path, weights_only=True)  # the old checkpoint survived intact
    assert torch.equal(state["value"], torch.arange(3))


def test_rng_state_round_trips_every_generator():
    state = ckpt.rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.random(), np.random.rand(), torch.rand(1)  # move on
    ckpt.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_checkpoint_with_rng_loads_with_weights_only(tmp_path):
    path = tmp_path / "x.pt"
    ckpt.save_checkpoint({"format": ckpt.FORMAT, "rng": ckpt.rng_state(), "config": {"a": [1, 2.5, None]}}, path)
    state = torch.load(path, weights_only=True)
    assert state["config"] == {"a": [1, 2.5, None]}


def test_load_student_rebuilds_the_model_with_its_spec(tmp_path):
    path, model, _ = student_checkpoint(tmp_path)
    loaded = ckpt.load_student(path)
    assert not loaded.training and loaded.spec == teacher_spec("front")
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    model.eval()
    with torch.no_grad():
        for a, b in zip(loaded(x), model(x), strict=True):
            assert torch.equal(a, b)


def test_load_student_prefers_the_ema_weights(tmp_path):
    path, _, trained = student_checkpoint(tmp_path, ema=True)
    loaded = ckpt.load_student(path)
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, trained[name])


def test_missing_corrupt_and_foreign_files_are_named(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="no such checkpoint file"):
        ckpt.load_student(tmp_path / "nope.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x04 definitely not a checkpoint")
    with pytest.raises(ckpt.CheckpointError, match="corrupt.pt: not a readable PyTorch checkpoint"):
        ckpt.load_student(corrupt)
    text = tmp_path / "text.pt"
    text.write_text("hello\n")  # the weights-only unpickler raises KeyError on these bytes
    with pytest.raises(ckpt.CheckpointError, match="text.pt: not a readable PyTorch checkpoint"):
        ckpt.load_student(text)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ckpt.CheckpointError, match="foreign.pt: not a blazedistill checkpoint"):
        ckpt.load_student(foreign)


def test_a_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": ckpt.FORMAT, "obj": ckpt.CheckpointError("x")}, path)  # a class, not plain data
    with pytest.raises(ckpt.CheckpointError, match="not a readable PyTorch checkpoint"):
        ckpt.load_checkpoint(path)


def test_truncated_file_is_refused(tmp_path):
    path, _, _ = student_checkpoint(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt.CheckpointError, match="student.pt: not a readable PyTorch checkpoint"):
        ckpt.load_student(path)


def test_wrong_architecture_is_a_clear_error(tmp_path):
    path, _, _ = student_checkpoint(tmp_path)
    state = torch.load(path, weights_only=True)
    state["student"] = "resnet_blazeface"
    ckpt.save_checkpoint(state, path)
    with pytest.raises(ckpt.CheckpointError, match="cannot rebuild student 'resnet_blazeface'"):
        ckpt.load_student(path)
