"""Detector on real photos: sensible faces, every input kind, mapping back to pixels, and detection parity
between the PyTorch teachers and the TFLite interpreter running the same pipeline."""

from __future__ import annotations

import json
import shutil
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from blazedistill.detector import Detection, Detector
from blazedistill.imageio import list_images, load_image
from blazedistill.specs import TEACHER_SPECS, teacher_spec

TEACHERS = list(TEACHER_SPECS)


@cache
def torch_detector(name: str) -> Detector:
    from blazedistill.models.teachers import load_teacher

    return Detector(load_teacher(name))


@cache
def tflite_detector(name: str) -> Detector:
    pytest.importorskip("ai_edge_litert", reason="the TFLite interpreter (ai-edge-litert) is not installed")
    from blazedistill.models.tflite_runtime import TFLiteModel

    return Detector(TFLiteModel(name))


@pytest.fixture(params=["torch", "tflite"])
def backend(request):
    return torch_detector if request.param == "torch" else tflite_detector


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def assert_same_detections(got: list[Detection], want: list[Detection], min_iou: float, score_tol: float) -> None:
    """Same count; each wanted detection has a distinct match with IoU >= min_iou and a close score."""
    assert len(got) == len(want), f"{len(got)} vs {len(want)} detections"
    unmatched = list(range(len(got)))
    for w in want:
        best = max(unmatched, key=lambda i: iou(got[i].box, w.box))
        assert iou(got[best].box, w.box) >= min_iou, (got[best].box, w.box)
        assert abs(got[best].score - w.score) <= score_tol, (got[best].score, w.score)
        unmatched.remove(best)


# ---- one real photo, every teacher, both runtimes --------------------------------------------------------


@pytest.mark.parametrize("name", TEACHERS)
def test_grace_hopper_one_sensible_face(grace_hopper, backend, name):
    (face,) = backend(name).detect(grace_hopper)
    assert face.score >= teacher_spec(name).min_score
    right_eye, left_eye, nose, mouth, right_ear, left_ear = face.keypoints
    assert right_eye[0] < nose[0] < left_eye[0]  # the person's right eye is on the image's left
    assert right_ear[0] < right_eye[0] and left_eye[0] < left_ear[0]
    assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]
    xmin, ymin, xmax, ymax = face.box
    assert 140 < xmin < xmax < 390 and 100 < ymin < ymax < 360  # her face: below the cap, above the collar
    assert 150 < xmax - xmin < 240 and 150 < ymax - ymin < 240
    assert (face.keypoints[:4] > face.box[:2]).all() and (face.keypoints[:4] < face.box[2:]).all()


@pytest.mark.parametrize("name", TEACHERS)
def test_white_and_black_images_have_no_faces(backend, name):
    detector = backend(name)
    assert detector.detect_batch([np.full((480, 640, 3), 255, np.uint8), np.zeros((300, 200, 3), np.uint8)]) == [
        [],
        [],
    ]


def test_min_score_override_keeps_the_top_score(grace_hopper):
    detector = tflite_detector("front")
    (face,) = detector.detect(grace_hopper)
    everything = Detector(detector.model, min_score=0.0).detect(grace_hopper)
    assert len(everything) > 1 and everything[0].score == face.score
    assert Detector(detector.model, min_score=0.99).detect(grace_hopper) == []


# ---- input kinds and mapping back to original pixels ------------------------------------------------------


def test_input_kinds_agree(grace_hopper, tmp_path):
    detector = torch_detector("front")
    pixels = load_image(grace_hopper)
    (want,) = detector.detect(pixels)
    same = [Image.open(grace_hopper), pixels.astype(np.float32) / 255, np.asfortranarray(pixels)]
    for got in detector.detect_batch(same, batch_size=2):
        assert len(got) == 1 and np.allclose(got[0].box, want.box, atol=1e-3)
        assert got[0].score == pytest.approx(want.score, abs=1e-5)
    (from_path,) = detector.detect(grace_hopper)  # decoded at reduced size (JPEG draft), mapped back
    assert iou(from_path.box, want.box) > 0.95 and abs(from_path.score - want.score) < 0.02
    png = tmp_path / "gh.png"
    Image.fromarray(pixels).save(png)
    (from_png,) = detector.detect(png)
    assert np.allclose(from_png.box, want.box, atol=1e-3)


def test_mirrored_view_mirrors_the_face(grace_hopper):
    detector = torch_detector("front")
    pixels = load_image(grace_hopper)
    (face,) = detector.detect(pixels)
    (mirrored,) = detector.detect(pixels[:, ::-1])  # non-contiguous view
    width = pixels.shape[1]
    flipped_box = np.array([width - face.box[2], face.box[1], width - face.box[0], face.box[3]])
    assert iou(mirrored.box, flipped_box) > 0.9
    # keypoints swap sides: the mirrored right eye is where the original left eye was
    swapped = face.keypoints[[1, 0, 2, 3, 5, 4]] * [-1, 1] + [width, 0]
    assert np.abs(mirrored.keypoints[:4] - swapped[:4]).max() < 0.05 * width


def test_exif_rotated_file(grace_hopper, tmp_path):
    detector = torch_detector("front")
    pixels = load_image(grace_hopper)
    (upright,) = detector.detect(pixels)
    stored = Image.fromarray(pixels).transpose(Image.Transpose.ROTATE_90)  # displayed after a 90 degree CW turn
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    (face,) = detector.detect(tmp_path / "rotated.jpg")
    assert iou(face.box, upright.box) > 0.9


def test_face_at_the_border_extends_past_it(grace_hopper):
    (face,) = torch_detector("front").detect(load_image(grace_hopper)[:, 200:])
    assert face.box[0] < 0  # MediaPipe does not clip


@pytest.mark.parametrize("size", [(1, 1), (49, 49), (1, 300)])
def test_tiny_images_run(size):
    image = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    assert torch_detector("front").detect(image) == []


@pytest.mark.slow
def test_face_in_8000x6000_image(grace_hopper, tmp_path):
    detector = torch_detector("back")
    small = Image.open(grace_hopper)
    (face,) = detector.detect(small)
    canvas = Image.new("RGB", (8000, 6000), (200, 200, 200))
    canvas.paste(small.resize((5120, 6000), Image.Resampling.BILINEAR), (1500, 0))
    path = tmp_path / "huge.jpg"
    canvas.save(path, quality=90)
    expected = face.box * [5120 / 512, 6000 / 600, 5120 / 512, 6000 / 600] + [1500, 0, 1500, 0]
    (drafted,) = detector.detect(path)  # JPEG decoded 8 times smaller, mapped back
    (full,) = detector.detect(np.asarray(canvas))
    assert iou(drafted.box, expected) > 0.9 and iou(full.box, expected) > 0.9
    assert iou(drafted.box, full.box) > 0.95 and abs(drafted.score - full.score) < 0.02


def test_batch_equals_single_and_json(grace_hopper):
    detector = torch_detector("front")
    pixels = load_image(grace_hopper)
    images = [pixels, np.full((100, 100, 3), 255, np.uint8), pixels[:, ::-1], pixels[:300]]
    batched = detector.detect_batch(images, batch_size=3)
    for got, image in zip(batched, images, strict=True):
        assert_same_detections(got, detector.detect(image), min_iou=0.999, score_tol=1e-5)
    record = json.loads(json.dumps(batched[0][0].to_dict()))
    assert set(record) == {"score", "box", "keypoints"}
    assert len(record["box"]) == 4 and np.array(record["keypoints"]).shape == (6, 2)


def test_spec_is_required():
    with pytest.raises(ValueError, match="spec"):
        Detector(torch.nn.Identity())


# ---- detection parity: PyTorch teacher vs the TFLite interpreter, same pipeline ------------------------------


@cache
def _prepared(images: tuple[Path, ...], size: int) -> tuple[np.ndarray, list]:
    """Letterboxed inputs shared by the teachers of one input size (decoding is the slow part)."""
    detector = tflite_detector(next(n for n, s in TEACHER_SPECS.items() if s.input_size == size))
    batch = np.empty((len(images), 3, size, size), np.float32)
    return batch, [detector.prepare_into(batch[i], path) for i, path in enumerate(images)]


def _parity(name: str, images: list[Path]) -> None:
    torch_side, tflite_side = torch_detector(name), tflite_detector(name)
    batch, boxes = _prepared(tuple(images), torch_side.input_size)
    got = torch_side.detect_tensor(batch, boxes)
    want = tflite_side.detect_tensor(batch, boxes)
    for path, g, w in zip(images, got, want, strict=True):
        try:
            assert_same_detections(g, w, min_iou=0.95, score_tol=0.01)
        except AssertionError as exc:
            raise AssertionError(f"{name} on {path.name}: {exc}") from None
    assert sum(map(len, want)) > 0


@pytest.mark.parametrize("name", TEACHERS)
def test_parity_on_grace_hopper(grace_hopper, name):
    _parity(name, [grace_hopper])


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["wild", "dlib_faces"])
@pytest.mark.parametrize("name", TEACHERS)
def test_parity_on_shared_photos(shared_data, folder, name):
    images, _ = list_images([shared_data / folder])
    if not images:
        pytest.skip(f"no photos in {shared_data / folder}")
    _parity(name, images)


# ---- loading and the TFLite runtime ---------------------------------------------------------------------


def test_load_model_by_name_and_by_file(tmp_path):
    import blazedistill
    from blazedistill.hub import model_file

    model = blazedistill.load_model("back")
    assert model.spec == teacher_spec("back") and not model.training
    renamed = tmp_path / "my_model.tflite"
    shutil.copy(model_file("face_detection_back.tflite"), renamed)
    assert blazedistill.load_model(renamed).spec.name == "back"  # recognised by its pinned hash
    assert blazedistill.Detector is Detector


def test_load_model_errors(tmp_path):
    from blazedistill.models.loading import load_model

    with pytest.raises(ValueError, match="unknown model 'nope'.*front"):
        load_model("nope")
    with pytest.raises(FileNotFoundError, match="no such model file"):
        load_model(tmp_path / "student.pt")
    (tmp_path / "other.tflite").write_bytes(b"not mediapipe")
    with pytest.raises(ValueError, match="other.tflite: not a readable .tflite file"):
        load_model(tmp_path / "other.tflite")
    with pytest.raises(ValueError, match="only applies to a teacher"):
        load_model(tmp_path / "other.tflite", model_file=tmp_path / "other.tflite")


def test_tflite_model_shapes():
    model = tflite_detector("full_range").model
    regressors, logits = model(torch.zeros(2, 3, 192, 192))
    assert regressors.shape == (2, 2304, 16) and logits.shape == (2, 2304, 1)
    assert torch.equal(regressors[0], regressors[1])
    empty = model(np.zeros((0, 3, 192, 192), np.float32))
    assert empty[0].shape == (0, 2304, 16) and empty[1].shape == (0, 2304, 1)
    with pytest.raises(ValueError, match=r"\(N, 3, 192, 192\)"):
        model(torch.zeros(1, 3, 128, 128))
