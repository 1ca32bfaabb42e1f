"""Export: ONNX / TorchScript / TFLite parity with PyTorch, graph shape, metadata, failure paths, CLI."""

from __future__ import annotations

import importlib.util
import re
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from blazedistill.export import (
    ExportError,
    export_and_verify,
    export_model,
    prepare_for_export,
    verification_inputs,
)
from blazedistill.models.exported import (
    MODEL_KEY,
    SPEC_KEY,
    ExportedModelError,
    TorchScriptModel,
    add_tflite_metadata,
    read_tflite_metadata,
)
from blazedistill.models.onnx_runtime import OnnxModel
from blazedistill.specs import AnchorOptions, ModelSpec, teacher_spec

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

TOLERANCE = 1e-4
#: channel widening of the front teacher's blocks (FACTS.md): 24→24→28→32→36→42→48→56→64→72→80→88→96
FRONT_CHANNEL_PADS = sorted([4, 4, 4, 6, 6, 8, 8, 8, 8, 8, 8])


def _tiny_spec() -> ModelSpec:
    """A 16-pixel model with one 8×8 grid of 2 anchors (128 anchors)."""
    return ModelSpec("tiny", 16, AnchorOptions(input_size=16, strides=(2,)), 0.5, 128)


class PaddedSkipNet(nn.Module):
    """Small BlazeFace-contract model whose skip widens channels by zero-padding, like the teachers' blocks."""

    def __init__(self):
        super().__init__()
        self.spec = _tiny_spec()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.pw = nn.Conv2d(4, 6, 1)
        self.regressor = nn.Conv2d(6, 32, 1)
        self.classifier = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(self.pw(self.dw(x)) + F.pad(x, (0, 0, 0, 0, 0, 2)))
        n = x.shape[0]
        regressors = self.regressor(x).permute(0, 2, 3, 1).reshape(n, -1, 16)
        return regressors, self.classifier(x).permute(0, 2, 3, 1).reshape(n, -1, 1)


def _ops(path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path)).graph.node]


def _assert_checks_pass(report, dynamic_batch: bool) -> None:
    assert [c.batch for c in report.checks] == [3 if dynamic_batch else 1, 1]
    for check in report.checks:
        for diff in (check.regressors, check.classificators):
            assert 0.0 <= diff.max_scaled <= TOLERANCE
            assert diff.max_scaled <= diff.max_abs or diff.max_abs <= TOLERANCE


@pytest.fixture(scope="module")
def front():
    from blazedistill import load_teacher

    return load_teacher("front")


@pytest.fixture(scope="module")
def front_onnx(front, tmp_path_factory):
    out = tmp_path_factory.mktemp("front") / "front.onnx"
    return export_and_verify(front, "onnx", out, dynamic_batch=True)


@pytest.fixture(scope="module")
def bn_student():
    """The default student (resnet10, BN) with non-trivial BN statistics, so folding matters."""
    from blazedistill.models.registry import DEFAULT_STUDENT, create_student

    torch.manual_seed(0)
    model = create_student(DEFAULT_STUDENT, "front")
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.train()  # export must switch to eval itself


# --- front teacher ---------------------------------------------------------------------------------------


def test_onnx_front_parity_dynamic_batch(front, front_onnx):
    _assert_checks_pass(front_onnx, dynamic_batch=True)
    model = OnnxModel(front_onnx.path)
    assert model.spec == teacher_spec("front") and model.fixed_batch is None
    for n in (1, 3):
        x = torch.rand(n, 3, 128, 128, generator=torch.Generator().manual_seed(n)) * 2 - 1
        with torch.no_grad():
            expected = front(x)
        found = model(x)
        for e, f in zip(expected, found, strict=True):
            assert f.shape == e.shape
            assert ((f - e).abs() / e.abs().clamp(min=1)).max() <= TOLERANCE


def test_onnx_front_graph_uses_constant_pads_on_channels(front_onnx):
    proto = onnx.load(str(front_onnx.path))
    assert proto.opset_import[0].version >= 17
    ops = [node.op_type for node in proto.graph.node]
    assert not {"Shape", "ConstantOfShape", "Slice", "Gather"} & set(ops)  # no shape arithmetic
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    channel_pads = []
    for node in proto.graph.node:
        if node.op_type == "Pad":
            pads = initializers[node.input[1]]  # a constant, not computed at run time
            assert list(pads[[0, 2, 3, 4, 6, 7]]) == [0] * 6 and pads[1] == 0  # NCHW: only trailing channels
            channel_pads.append(int(pads[5]))
    assert sorted(channel_pads) == FRONT_CHANNEL_PADS


def test_onnx_metadata_round_trip(front_onnx):
    metadata = {p.key: p.value for p in onnx.load(str(front_onnx.path)).metadata_props}
    assert metadata[MODEL_KEY] == "front"
    assert ModelSpec.from_dict(__import__("json").loads(metadata[SPEC_KEY])) == teacher_spec("front")
    assert OnnxModel(front_onnx.path).spec == teacher_spec("front")


def test_onnx_model_detects_like_the_teacher(front, front_onnx, grace_hopper):
    from blazedistill import Detector

    expected = Detector(front).detect(grace_hopper)
    found = Detector(OnnxModel(front_onnx.path)).detect(grace_hopper)
    assert len(expected) == len(found) == 1
    assert abs(found[0].score - expected[0].score) < 1e-5
    np.testing.assert_allclose(found[0].box, expected[0].box, atol=1e-3)


def test_torchscript_front_parity(front, tmp_path):
    report = export_and_verify(front, "torchscript", tmp_path / "front.torchscript", dynamic_batch=True)
    _assert_checks_pass(report, dynamic_batch=True)
    loaded = TorchScriptModel(report.path)
    assert loaded.spec == teacher_spec("front")
    x = verification_inputs(front.spec, dynamic_batch=False)["grace_hopper letterboxed"]
    with torch.no_grad():
        for e, f in zip(front(x), loaded(x), strict=True):
            assert ((f - e).abs() / e.abs().clamp(min=1)).max() <= TOLERANCE


# --- a student with batch norm ---------------------------------------------------------------------------


def test_prepare_folds_batchnorm_and_leaves_the_original(bn_student):
    prepared = prepare_for_export(bn_student)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in prepared.modules())
    assert not prepared.training and not any(p.requires_grad for p in prepared.parameters())
    assert bn_student.training and any(isinstance(m, nn.BatchNorm2d) for m in bn_student.modules())
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        for e, f in zip(bn_student.eval()(x), prepared(x), strict=True):
            torch.testing.assert_close(f, e, atol=1e-4, rtol=1e-4)
    bn_student.train()


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_student_with_batchnorm_exports_within_tolerance(bn_student, format, tmp_path):
    report = export_and_verify(bn_student, format, tmp_path / f"student.{format}", dynamic_batch=True)
    _assert_checks_pass(report, dynamic_batch=True)
    assert report.model == "resnet10" and "resnet10 (front layout)" in report.lines()[0]
    if format == "onnx":
        assert "BatchNormalization" not in _ops(report.path)


# --- small padded model: graph, static batch, failures ----------------------------------------------------


def test_channel_padding_exports_as_pad_node_and_batch_1_files_run_any_batch(tmp_path):
    model = _seeded_tiny()
    path = export_model(model, "onnx", tmp_path / "tiny.onnx")
    ops = _ops(path)
    assert ops.count("Pad") == 1 and "ConstantOfShape" not in ops and "Shape" not in ops
    exported = OnnxModel(path)
    assert exported.fixed_batch == 1
    x = torch.rand(3, 3, 16, 16) * 2 - 1  # run image by image
    with torch.no_grad():
        for e, f in zip(model(x), exported(x), strict=True):
            torch.testing.assert_close(f, e, atol=1e-5, rtol=1e-5)


def _seeded_tiny() -> PaddedSkipNet:
    torch.manual_seed(1)
    return PaddedSkipNet().eval()


def _tiny_onnx(tmp_path) -> OnnxModel:
    return OnnxModel(export_model(_seeded_tiny(), "onnx", tmp_path / "seeded.onnx"))


def test_failing_verification_raises_and_keeps_the_file_aside(tmp_path, monkeypatch):
    original_run = OnnxModel.run

    def perturbed(self, x):
        regressors, classificators = original_run(self, x)
        return regressors, classificators + 1e-2

    monkeypatch.setattr(OnnxModel, "run", perturbed)
    out = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match=r"verification failed: .* 0\.01 > tolerance 0\.0001 .*bad\.onnx\.unverified"):
        export_model(_seeded_tiny(), "onnx", out)
    assert not out.exists() and (tmp_path / "bad.onnx.unverified").is_file()
    assert not (tmp_path / "bad.onnx.partial").exists()


def test_nan_output_fails_verification(tmp_path, monkeypatch):
    monkeypatch.setattr(
        OnnxModel,
        "run",
        lambda self, x: (np.full((len(x), 128, 16), np.nan, np.float32), np.zeros((len(x), 128, 1), np.float32)),
    )
    with pytest.raises(ExportError, match="verification failed"):
        export_model(_seeded_tiny(), "onnx", tmp_path / "nan.onnx")


def test_bad_requests_fail_clearly(tmp_path):
    with pytest.raises(ExportError, match=r"must be named \*\.onnx"):
        export_model(_seeded_tiny(), "onnx", tmp_path / "x.pt")
    with pytest.raises(ExportError, match="unknown export format"):
        export_model(_seeded_tiny(), "coreml", tmp_path / "x.onnx")
    with pytest.raises(ExportError, match="fixed batch of 1"):
        export_model(_seeded_tiny(), "tflite", tmp_path / "x.tflite", dynamic_batch=True)
    with pytest.raises(ExportError, match="has no `spec"):
        export_model(nn.Conv2d(3, 3, 1), "onnx", tmp_path / "x.onnx")
    with pytest.raises(ExportError, match="no PyTorch weights"):
        export_model(_tiny_onnx(tmp_path), "onnx", tmp_path / "again.onnx")


def test_onnx_without_or_with_foreign_metadata_is_refused(tmp_path):
    path = export_model(_seeded_tiny(), "onnx", tmp_path / "tiny.onnx")
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "plain.onnx"))
    with pytest.raises(ExportedModelError, match=r"plain\.onnx: no 'blazedistill\.spec' metadata"):
        OnnxModel(tmp_path / "plain.onnx")
    wrong = teacher_spec("front").to_dict()  # 128 px, 896 anchors: not this 16 px file
    proto.metadata_props.add(key=SPEC_KEY, value=__import__("json").dumps(wrong))
    onnx.save(proto, str(tmp_path / "foreign.onnx"))
    with pytest.raises(ExportedModelError, match=r"foreign\.onnx: expected one input \(N, 3, 128, 128\)"):
        OnnxModel(tmp_path / "foreign.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(ExportedModelError, match=r"junk\.onnx: onnxruntime cannot load it"):
        OnnxModel(tmp_path / "junk.onnx")
    with pytest.raises(ExportedModelError, match="no such file"):
        OnnxModel(tmp_path / "missing.onnx")


# --- TFLite -----------------------------------------------------------------------------------------------


def test_tflite_metadata_round_trip_keeps_the_model_working(tmp_path):
    pytest.importorskip("ai_edge_litert")
    from blazedistill.hub import model_file
    from blazedistill.models.tflite_runtime import TFLiteModel

    copy = tmp_path / "front_with_metadata.tflite"
    shutil.copy(model_file("face_detection_front.tflite"), copy)
    add_tflite_metadata(copy, {SPEC_KEY: "{}", MODEL_KEY: "front"})
    metadata = read_tflite_metadata(copy)
    assert metadata[SPEC_KEY] == "{}" and metadata[MODEL_KEY] == "front"
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    original = TFLiteModel("front")(x)
    rewritten = TFLiteModel(copy, spec=teacher_spec("front"))(x)
    for a, b in zip(original, rewritten, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.skipif(
    importlib.util.find_spec("litert_torch") is None,
    reason="litert-torch is not installed (optional extra tflite-export: pip install 'blazedistill[tflite-export]')",
)
@pytest.mark.slow
def test_tflite_export_of_a_student(bn_student, tmp_path):
    from blazedistill.models.loading import load_model

    report = export_and_verify(bn_student, "tflite", tmp_path / "student.tflite")
    _assert_checks_pass(report, dynamic_batch=False)
    loaded = load_model(report.path)
    assert loaded.spec == teacher_spec("front")
    assert read_tflite_metadata(report.path)[MODEL_KEY] == "resnet10"


# --- CLI --------------------------------------------------------------------------------------------------


def test_cli_export_prints_verification(tmp_path, capsys):
    from blazedistill.cli.main import main

    out = tmp_path / "front.torchscript"
    assert main(["export", "--model", "front", "--format", "torchscript", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and f"exported front to {out} (torchscript, " in text
    checks = re.findall(r"on (.+?) \(N=(\d)\): regressors max \|Δ\| (\S+) .*classificators max \|Δ\| (\S+) ", text)
    assert [(name, n) for name, n, _, _ in checks] == [("random noise", "1"), ("grace_hopper letterboxed", "1")]
    assert all(float(r) <= TOLERANCE and float(c) <= TOLERANCE for _, _, r, c in checks)
    assert "passed: max |Δ| / max(1, |PyTorch|)" in text


def test_cli_export_usage_errors(tmp_path, capsys):
    from blazedistill.cli.main import main

    assert main(["export", "--model", "front", "--format", "onnx", "--out", str(tmp_path / "f.pt")]) == 2
    assert "must be named *.onnx" in capsys.readouterr().err
    assert main(["export", "--model", "nobody", "--format", "onnx", "--out", str(tmp_path / "f.onnx")]) == 2
    assert "unknown model 'nobody'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_torchscript_without_metadata_or_unreadable_is_refused(tmp_path):
    plain = tmp_path / "plain.torchscript"
    torch.jit.save(torch.jit.script(nn.Identity()), str(plain))
    with pytest.raises(ExportedModelError, match=r"plain\.torchscript: no 'blazedistill\.spec' metadata"):
        TorchScriptModel(plain)
    (tmp_path / "junk.torchscript").write_bytes(b"junk")
    with pytest.raises(ExportedModelError, match=r"junk\.torchscript: not a TorchScript archive"):
        TorchScriptModel(tmp_path / "junk.torchscript")


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_cli_export_refuses_a_tolerance_that_cannot_bound_anything(tmp_path, capsys, value):
    from blazedistill.cli.main import main

    argv = ["export", "--model", "front", "--format", "onnx", "--out", str(tmp_path / "f.onnx")]
    with pytest.raises(SystemExit) as info:
        main([*argv, f"--tolerance={value}"])
    assert info.value.code == 2
    assert "--tolerance: must be a finite number >= 0" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
