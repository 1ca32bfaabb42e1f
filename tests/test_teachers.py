"""The PyTorch teachers equal the TFLite interpreter; the converter's pieces do what TFLite does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from blazedistill import hub, load_teacher
from blazedistill.imageio import load_image
from blazedistill.models import teachers as teachers_module
from blazedistill.models.tflite_graph import _DepthToSpace, _same_pads, _trim_after, bilinear_taps
from blazedistill.models.tflite_reader import TFLiteError, densify, read_tflite
from blazedistill.preprocess import letterbox
from blazedistill.specs import teacher_spec

TEACHERS = ["front", "back", "full_range", "full_range_sparse"]
# |torch - tflite| <= ATOL + RTOL * |tflite|, element-wise. front/back emit logits and regressors up to ~2e4
# on photos, where float32 summation order alone moves results by ~1e-2: the interpreter's own reference
# kernels differ from its XNNPACK kernels by up to 3e-2 there and need the same RTOL (5.6e-6 measured;
# ours 5.5e-6). The full-range models stay below ATOL everywhere.
ATOL, RTOL = 1e-3, 1e-5


@pytest.fixture(scope="module")
def interpreters():
    """The TFLite interpreter run of each teacher (models.tflite_runtime), created on first use."""
    pytest.importorskip("ai_edge_litert.interpreter")
    from blazedistill.models.tflite_runtime import TFLiteModel

    cache: dict = {}

    def get(name: str) -> TFLiteModel:
        if name not in cache:
            cache[name] = TFLiteModel(name)
        return cache[name]

    return get


def assert_parity(name: str, x: torch.Tensor, interpreter) -> None:
    teacher = load_teacher(name)
    with torch.inference_mode():
        reg, cls = teacher(x)
    ref_reg, ref_cls = (t.numpy() for t in interpreter(x))
    a = teacher.spec.num_anchors
    assert reg.shape == (len(x), a, 16) and cls.shape == (len(x), a, 1)
    assert reg.dtype == cls.dtype == torch.float32
    assert ref_reg.shape == reg.shape and ref_cls.shape == cls.shape
    for ours, ref in [(reg.numpy(), ref_reg), (cls.numpy(), ref_cls)]:
        excess = np.abs(ours - ref) - (ATOL + RTOL * np.abs(ref))
        assert excess.max() <= 0, f"{name}: max |Δ| {np.abs(ours - ref).max():.2e} beyond tolerance"
        if name.startswith("full_range"):
            assert np.abs(ours - ref).max() <= ATOL


def photo(path, size: int) -> torch.Tensor:
    """A photo letterboxed to (3, size, size) in [-1, 1], as the detection pipeline feeds it."""
    return letterbox(load_image(path), size)[0]


@pytest.mark.parametrize("name", TEACHERS)
def test_parity_random_inputs(name, interpreters):
    size = teacher_spec(name).input_size
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, size, size, generator=g) * 2 - 1
    x = torch.cat([x, -torch.ones(1, 3, size, size)])  # and an all-black image
    assert_parity(name, x, interpreters(name))


@pytest.mark.parametrize("name", TEACHERS)
def test_parity_grace_hopper(name, interpreters, grace_hopper):
    x = photo(grace_hopper, teacher_spec(name).input_size)[None]
    assert_parity(name, x, interpreters(name))


@pytest.mark.parametrize("name", TEACHERS)
def test_parity_shared_photos(name, interpreters, shared_data):
    photos = sorted((shared_data / "wild").glob("*.jpg"))[:3] + sorted((shared_data / "dlib_faces").glob("*.jpg"))[:3]
    if not photos:
        pytest.skip("no photos in shared_data/wild or dlib_faces")
    size = teacher_spec(name).input_size
    x = torch.stack([photo(p, size) for p in photos])
    assert_parity(name, x, interpreters(name))


def test_batch_equals_single_images():
    teacher = load_teacher("front")
    x = torch.rand(3, 3, 128, 128, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        batched = teacher(x)
        single = [teacher(x[i : i + 1]) for i in range(3)]
    for k in range(2):
        torch.testing.assert_close(batched[k], torch.cat([s[k] for s in single]), atol=1e-4, rtol=1e-5)


def test_short_range_is_front_with_its_threshold():
    short, front = load_teacher("short_range"), load_teacher("front")
    assert short.spec.min_score == 0.5 and front.spec.min_score == 0.75
    x = torch.zeros(1, 3, 128, 128)
    with torch.inference_mode():
        assert torch.equal(short(x)[0], front(x)[0])


def test_teacher_is_frozen_eval_and_checks_input_shape():
    teacher = load_teacher("front")
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(ValueError, match=r"\(N, 3, 128, 128\)"):
        teacher(torch.zeros(1, 3, 256, 256))
    with pytest.raises(ValueError, match="unknown teacher"):
        load_teacher("nope")


def test_cache_round_trip(tmp_path, monkeypatch):
    model_file = hub.model_file("face_detection_back.tflite")
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path))
    first = load_teacher("back", model_file=model_file)
    cached = list((tmp_path / "converted").glob("*.pt"))
    assert len(cached) == 1 and hub.sha256_file(model_file) in cached[0].name

    def no_reading(*args, **kwargs):
        raise AssertionError("the cached conversion should have been used")

    monkeypatch.setattr(teachers_module, "read_tflite", no_reading)
    second = load_teacher("back", model_file=model_file)
    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.inference_mode():
        for a, b in zip(first(x), second(x), strict=True):
            assert torch.equal(a, b)
    # a corrupt cache file is rebuilt, not trusted
    cached[0].write_bytes(b"garbage")
    monkeypatch.undo()
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path))
    third = load_teacher("back", model_file=model_file)
    with torch.inference_mode():
        assert torch.equal(third(x)[1], first(x)[1])


def test_mismatching_model_file_is_refused(tmp_path):
    wrong = tmp_path / "face_detection_front.tflite"
    wrong.write_bytes(hub.model_file("face_detection_back.tflite").read_bytes())
    with pytest.raises(hub.ModelFileError, match=f"{wrong}.*not MediaPipe's face_detection_front.tflite"):
        load_teacher("front", model_file=wrong)
    with pytest.raises(hub.ModelFileError, match="no such model file"):
        load_teacher("front", model_file=tmp_path / "missing.tflite")


def test_reader_refuses_non_tflite_and_truncated_files(tmp_path):
    text = tmp_path / "notes.tflite"
    text.write_text("not a model")
    with pytest.raises(TFLiteError, match=f"{text}: not a .tflite model"):
        read_tflite(text)
    truncated = tmp_path / "cut.tflite"
    truncated.write_bytes(hub.model_file("face_detection_front.tflite").read_bytes()[:5000])
    with pytest.raises(TFLiteError, match=str(truncated)):
        read_tflite(truncated)


def test_reader_refuses_unsupported_operators(tmp_path):
    import tflite

    data = bytearray(hub.model_file("face_detection_front.tflite").read_bytes())
    model = tflite.Model.GetRootAsModel(data, 0)
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) == 19:  # RELU -> LOGISTIC (14)
            tab = code._tab
            data[tab.Pos + tab.Offset(4)] = 14  # deprecated_builtin_code (int8)
            if tab.Offset(10):
                data[tab.Pos + tab.Offset(10)] = 14  # builtin_code (int32, little endian)
    patched = tmp_path / "logistic.tflite"
    patched.write_bytes(bytes(data))
    with pytest.raises(TFLiteError, match=rf"{patched}: operator \d+ \(LOGISTIC\) is not supported"):
        read_tflite(patched)


def test_reader_graph_structure():
    graph = read_tflite(hub.model_file("face_detection_full_range_sparse.tflite"))
    types = {op.type for op in graph.operators}
    assert "DENSIFY" not in types and "DEQUANTIZE" not in types and "DEPTH_TO_SPACE" in types
    assert [graph.tensors[t].name for t in graph.outputs] == ["Identity", "Identity_1"]
    first = graph.operators[0]
    assert first.type == "PAD" and graph.constants[first.inputs[1]].tolist() == [[0, 0], [1, 1], [1, 1], [0, 0]]
    conv = graph.operators[1]
    assert conv.options == {"padding": "VALID", "stride": (2, 2), "dilation": (1, 1), "activation": "RELU"}
    kernel = graph.constants[conv.inputs[1]]
    assert kernel.dtype == np.float32 and kernel.shape == (32, 3, 3, 3)


def test_densify_csr_matrix():
    dense = densify(
        np.array([1, 2, 3, 4, 5, 6], np.float32),
        (4, 4),
        traversal_order=[0, 1],
        block_map=[],
        dim_metadata=[
            {"format": "DENSE", "dense_size": 4},
            {"format": "SPARSE_CSR", "array_segments": [0, 3, 4, 5, 6], "array_indices": [0, 2, 3, 1, 2, 3]},
        ],
    )
    expected = [[1, 0, 2, 3], [0, 4, 0, 0], [0, 0, 5, 0], [0, 0, 0, 6]]
    assert dense.tolist() == expected


def test_densify_column_major_and_blocks():
    # traversal order (1, 0): columns outer, the rows of each column stored sparse
    csc = densify(
        np.array([1, 2, 3], np.float32),
        (2, 2),
        traversal_order=[1, 0],
        block_map=[],
        dim_metadata=[
            {"format": "DENSE", "dense_size": 2},
            {"format": "SPARSE_CSR", "array_segments": [0, 2, 3], "array_indices": [0, 1, 1]},
        ],
    )
    assert csc.tolist() == [[1, 0], [2, 3]]
    # 2x2 blocks of a 4x4 matrix: block row 0 holds block column 0, block row 1 holds block column 1
    blocked = densify(
        np.array([1, 2, 3, 4, 0, 0, 5, 6], np.float32),
        (4, 4),
        traversal_order=[0, 1, 2, 3],
        block_map=[0, 1],
        dim_metadata=[
            {"format": "DENSE", "dense_size": 2},
            {"format": "SPARSE_CSR", "array_segments": [0, 1, 2], "array_indices": [0, 1]},
            {"format": "DENSE", "dense_size": 2},
            {"format": "DENSE", "dense_size": 2},
        ],
    )
    assert blocked.tolist() == [[1, 2, 0, 0], [3, 4, 0, 0], [0, 0, 0, 0], [0, 0, 5, 6]]


def test_densify_rejects_inconsistent_storage():
    meta = [
        {"format": "DENSE", "dense_size": 2},
        {"format": "SPARSE_CSR", "array_segments": [0, 1, 2], "array_indices": [0, 1]},
    ]
    with pytest.raises(TFLiteError, match="stores 3 values"):
        densify(np.ones(3, np.float32), (2, 2), [0, 1], [], meta)


def test_same_padding_puts_the_odd_pixel_last():
    assert _same_pads(128, 5, 2, 1) == (1, 2)  # the first conv of front: padded (1, 2)
    assert _same_pads(64, 3, 2, 1) == (0, 1)
    assert _same_pads(64, 3, 1, 1) == (1, 1)
    assert _same_pads(64, 2, 2, 1) == (0, 0)
    # PAD (0, 2) before a VALID 3x3 stride-2 conv on 64 pixels: the window ends reach only 1 padded pixel
    assert _trim_after(64, 0, 2, 3, 2, 1) == 1
    assert _trim_after(96, 1, 1, 3, 2, 1) == 0


def test_bilinear_taps_match_tflite_modes():
    x = torch.arange(2 * 3 * 5 * 4, dtype=torch.float32).reshape(2, 3, 5, 4).sin()
    for align_corners, half_pixel in [(False, True), (True, False)]:
        y_lo, y_hi, y_w = bilinear_taps(5, 10, align_corners, half_pixel)
        x_lo, x_hi, x_w = bilinear_taps(4, 7, align_corners, half_pixel)
        rows = torch.lerp(x[:, :, y_lo], x[:, :, y_hi], y_w[:, None])
        ours = torch.lerp(rows[..., x_lo], rows[..., x_hi], x_w)
        ref = F.interpolate(x, size=(10, 7), mode="bilinear", align_corners=align_corners)
        torch.testing.assert_close(ours, ref)
    # legacy mode (neither flag): source = destination * in / out, 2 -> 4 samples at 0, 0.5, 1, 1.5 (clamped)
    lo, hi, w = bilinear_taps(2, 4, False, False)
    values = torch.tensor([10.0, 20.0])
    assert torch.lerp(values[lo], values[hi], w).tolist() == [10.0, 15.0, 20.0, 20.0]


def test_depth_to_space_uses_tensorflow_channel_order():
    n, h, w, block, c_out = 2, 3, 4, 2, 3
    nhwc = np.random.default_rng(0).standard_normal((n, h, w, block * block * c_out)).astype(np.float32)
    expected = np.zeros((n, h * block, w * block, c_out), np.float32)
    for i in range(block):
        for j in range(block):
            expected[:, i::block, j::block, :] = nhwc[..., (i * block + j) * c_out : (i * block + j + 1) * c_out]
    step = _DepthToSpace({"block_size": block})
    got = step(torch.from_numpy(nhwc).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    assert np.array_equal(got.numpy(), expected)
