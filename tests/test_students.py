"""Every registered student against the BlazeFace output contract, for every layout it supports."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from blazedistill.models import registry
from blazedistill.models.blazeface import BlazeBlock
from blazedistill.models.registry import DEFAULT_STUDENT, create_student, list_students, register_student
from blazedistill.models.resnet import fold_batchnorm
from blazedistill.models.ssd import SSDHead, SSDStudent, anchor_levels
from blazedistill.specs import teacher_spec

STUDENTS = list_students()
TEACHERS = ["front", "short_range", "back", "full_range"]


def build(name: str, teacher: str) -> nn.Module:
    """The student, or a skip when it declines the layout (after checking it declines clearly)."""
    try:
        return create_student(name, teacher)
    except ValueError as exc:
        assert teacher not in ("front", "short_range", "back"), f"every student must support {teacher}"
        assert name in str(exc) and "not supported" in str(exc)
        pytest.skip(f"{name} does not support {teacher}: {exc}")


def random_input(model: nn.Module, n: int = 2, seed: int = 0) -> torch.Tensor:
    size = model.spec.input_size
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def randomise_batchnorm(model: nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters, as after training."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)


def test_registry_lists_the_required_students():
    assert {"resnet_blazeface", "blazeface", "resnet10", DEFAULT_STUDENT} <= set(STUDENTS)
    assert STUDENTS == sorted(STUDENTS)


@pytest.mark.parametrize("teacher", TEACHERS)
@pytest.mark.parametrize("name", STUDENTS)
def test_output_contract(name, teacher):
    model = build(name, teacher).eval()
    spec = teacher_spec(teacher)
    assert model.spec is spec and model.student_config == {"name": name, "kwargs": {}}
    with torch.no_grad():
        reg, cls = model(random_input(model))
    assert reg.shape == (2, spec.num_anchors, 16) and cls.shape == (2, spec.num_anchors, 1)
    assert reg.dtype == cls.dtype == torch.float32
    assert torch.isfinite(reg).all() and torch.isfinite(cls).all()
    assert reg.std() > 0 and cls.std() > 0


@pytest.mark.parametrize("name", STUDENTS)
def test_gradients_reach_every_parameter_in_train_mode(name):
    model = build(name, "front").train()
    reg, cls = model(random_input(model))
    g = torch.Generator().manual_seed(2)
    loss = (reg * torch.randn(reg.shape, generator=g)).sum() + (cls * torch.randn(cls.shape, generator=g)).sum()
    loss.backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), param_name
        assert param.grad.abs().sum() > 0, param_name


@pytest.mark.parametrize("name", STUDENTS)
def test_channels_last_gives_the_same_outputs(name):
    model = build(name, "front").eval()
    randomise_batchnorm(model)
    x = random_input(model)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last))
    for e, o in zip(expected, got, strict=True):
        torch.testing.assert_close(o, e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("teacher", ["front", "full_range"])
@pytest.mark.parametrize("name", STUDENTS)
def test_fold_batchnorm_keeps_outputs(name, teacher):
    model = build(name, teacher)
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        pytest.skip(f"{name} has no batch norm")
    randomise_batchnorm(model)
    model.eval()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = random_input(model)
    with torch.no_grad():
        for e, o in zip(model(x), folded(x), strict=True):
            assert (o - e).abs().max() <= 1e-5 * max(1.0, e.abs().max().item())


def test_fold_batchnorm_by_hand():
    conv_bn = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.BatchNorm2d(1))
    with torch.no_grad():
        conv_bn[0].weight.fill_(2.0)
        conv_bn[1].running_mean.fill_(1.0)
        conv_bn[1].running_var.fill_(4.0 - 1e-5)
        conv_bn[1].weight.fill_(3.0)
        conv_bn[1].bias.fill_(0.5)
    folded = fold_batchnorm(conv_bn)
    # y = 3 * (2x - 1) / 2 + 0.5 = 3x - 1
    assert folded[0].weight.item() == pytest.approx(3.0) and folded[0].bias.item() == pytest.approx(-1.0)


def test_train_and_eval_modes_differ_only_for_batch_norm_students():
    for name in ("resnet10", "resnet_blazeface"):
        model = build(name, "front")
        x = random_input(model, n=4)
        randomise_batchnorm(model)
        with torch.no_grad():
            train_out, eval_out = model.train()(x)[1], model.eval()(x)[1]
        has_bn = any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        assert torch.allclose(train_out, eval_out) != has_bn, name


def test_anchor_levels_of_the_teachers():
    as_tuples = {
        t: [(lv.stride, lv.grid, lv.anchors_per_cell) for lv in anchor_levels(teacher_spec(t))] for t in TEACHERS
    }
    assert as_tuples["front"] == as_tuples["short_range"] == [(8, 16, 2), (16, 8, 6)]
    assert as_tuples["back"] == [(16, 16, 2), (32, 8, 6)]
    assert as_tuples["full_range"] == [(4, 48, 1)]


def test_resnet_blazeface_has_the_seed_projections():
    model = create_student("resnet_blazeface", "front")
    shapes = {
        k: (tuple(m.weight.shape[:2]), m.bias) if isinstance(m, nn.Conv2d) else None
        for k, m in model.backbone.projections.items()
    }
    assert shapes == {"1": ((28, 24), None), "4": ((42, 32), None), "9": ((80, 48), None), "13": None, "15": None}


def test_resnet_blazeface_wiring_written_out():
    """The seed student's forward, spelled out block by block (both 8×8 skips start at block 11's output)."""
    backbone = create_student("resnet_blazeface", "front").backbone.eval()
    b, p = backbone.blocks, backbone.projections
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        o = torch.relu(backbone.stem(nn.functional.pad(x, (1, 2, 1, 2))))
        o = b[1](b[0](o)) + p["1"](o)
        o = b[2](o)
        o = b[4](b[3](o)) + p["4"](o)
        o = b[5](o)
        o = b[9](b[8](b[7](b[6](o)))) + p["9"](o)
        feature_a = b[10](o)
        s = b[11](feature_a)
        o = b[13](b[12](s)) + s
        feature_b = b[15](b[14](o)) + s
        got_a, got_b = backbone(x)
    torch.testing.assert_close(got_a, feature_a)
    torch.testing.assert_close(got_b, feature_b)
    assert feature_a.shape == (2, 88, 16, 16) and feature_b.shape == (2, 96, 8, 8)


def test_blazeblock_stride2_pads_bottom_right_and_max_pools_the_skip():
    block = BlazeBlock(1, 2, stride=2)
    with torch.no_grad():
        block.depthwise.weight.fill_(1.0)
        block.depthwise.bias.zero_()
        block.pointwise.weight.copy_(torch.tensor([[[[1.0]]], [[[-1.0]]]]))
        block.pointwise.bias.zero_()
    image = [[float(4 * r + c) for c in range(4)] for r in range(4)]
    out = block(torch.tensor(image)[None, None])
    padded = [row + [0.0, 0.0] for row in image] + [[0.0] * 6] * 2
    for i in range(2):
        for j in range(2):
            window = sum(padded[2 * i + di][2 * j + dj] for di in range(3) for dj in range(3))
            pooled = max(image[2 * i + di][2 * j + dj] for di in range(2) for dj in range(2))
            assert out[0, 0, i, j].item() == pytest.approx(window + pooled)
            assert out[0, 1, i, j].item() == 0.0  # ReLU(-window + zero-padded skip channel)


class TinyBackbone(nn.Module):
    """A two-level backbone written in a few lines, to exercise the 'one function' path."""

    def __init__(self, width: int, bad: bool = False) -> None:
        super().__init__()
        self.down8 = nn.Conv2d(3, width, 8, stride=8)
        self.down2 = nn.Conv2d(width, 2 * width, 2, stride=4 if bad else 2)

    def forward(self, x):
        a = torch.relu(self.down8(x))
        return [a, torch.relu(self.down2(a))]


def test_add_a_backbone_with_one_function(monkeypatch):
    monkeypatch.setattr(registry, "_STUDENTS", dict(registry._STUDENTS))

    @register_student("tiny")
    def tiny(spec, width: int = 4):
        return SSDStudent(TinyBackbone(width), spec)

    model = create_student("tiny", "front", width=6)
    assert "tiny" in list_students() and model.student_config == {"name": "tiny", "kwargs": {"width": 6}}
    assert [m.in_channels for m in model.head.classifiers] == [6, 12]
    reg, cls = model(torch.zeros(3, 3, 128, 128))
    assert reg.shape == (3, 896, 16) and cls.shape == (3, 896, 1)
    with pytest.raises(ValueError, match="already registered"):
        register_student("tiny")(tiny)
    with pytest.raises(ValueError, match="needs 8x8"):
        SSDStudent(TinyBackbone(4, bad=True), teacher_spec("front"))


def test_head_orders_rows_nhwc_level_by_level():
    """Row r of the output is (level, y, x, anchor) in MediaPipe's order: finest level, row-major, anchors last."""
    levels = anchor_levels(teacher_spec("front"))
    head = SSDHead([2, 2], levels)
    features = []
    for li, level in enumerate(levels):
        ys, xs = torch.meshgrid(torch.arange(level.grid), torch.arange(level.grid), indexing="ij")
        features.append(torch.stack([ys, xs]).float()[None])
        with torch.no_grad():
            conv = head.classifiers[li]
            conv.weight.copy_(torch.tensor([1000.0, 10.0]).reshape(1, 2, 1, 1).expand_as(conv.weight))
            conv.bias.copy_(torch.arange(level.anchors_per_cell) + 100000.0 * li)
    _, cls = head(features)
    expected = [
        100000.0 * li + 1000 * y + 10 * x + a
        for li, level in enumerate(levels)
        for y in range(level.grid)
        for x in range(level.grid)
        for a in range(level.anchors_per_cell)
    ]
    assert cls[0, :, 0].tolist() == expected


def test_unknown_student_and_unknown_teacher():
    with pytest.raises(ValueError, match="unknown student 'nope'"):
        create_student("nope", "front")
    with pytest.raises(ValueError, match="unknown teacher"):
        create_student("resnet10", "nope")


def test_blazeface_with_the_front_teachers_weights_is_the_teacher(grace_hopper):
    """The `blazeface` student is the front topology: given the teacher's weights, it gives its outputs."""
    from blazedistill import load_teacher
    from blazedistill.imageio import load_image
    from blazedistill.preprocess import letterbox

    teacher = load_teacher("front")
    student = create_student("blazeface", "front").eval()
    source, target = list(teacher.state_dict().values()), student.state_dict()
    assert len(source) == len(target)
    weights = {}
    for (name, want), have in zip(target.items(), source, strict=True):
        # the teacher turns TF's bottom/right SAME padding into symmetric padding with zero taps added on
        # the top/left of the kernel: cut them off (they must be zeros) to get the file's kernel back
        if have.dim() == 4 and have.shape != want.shape:
            rows, cols = have.shape[-2] - want.shape[-2], have.shape[-1] - want.shape[-1]
            assert rows >= 0 and cols >= 0 and not have[..., :rows, :].any() and not have[..., :, :cols].any()
            have = have[..., rows:, cols:]
        assert have.shape == want.shape, name
        weights[name] = have
    student.load_state_dict(weights)
    x = torch.stack([letterbox(load_image(grace_hopper), 128)[0], torch.zeros(3, 128, 128)])
    with torch.no_grad():
        expected, got = teacher(x), student(x)
    assert torch.sigmoid(expected[1][0]).max() > 0.9  # a real face, so the check covers a real detection
    for e, o in zip(expected, got, strict=True):
        torch.testing.assert_close(o, e, rtol=1e-5, atol=1e-3)
