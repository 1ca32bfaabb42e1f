"""`blazedistill detect` end to end: folders, bad files in the batch, JSON on stdout, annotated copies."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from blazedistill.cli.main import main

REPO_SRC = os.path.join(os.path.dirname(__file__), "..", "src")


@pytest.fixture
def photo_folder(tmp_path, grace_hopper):
    """good photos (one nested, one PNG), a white image, and three bad files."""
    root = tmp_path / "in"
    (root / "nested").mkdir(parents=True)
    shutil.copy(grace_hopper, root / "hopper.jpg")
    Image.open(grace_hopper).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "nested" / "mirror.PNG")
    Image.new("RGB", (320, 240), "white").save(root / "white.png")
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.txt").write_text("not an image, and not listed")
    (root / "fake.webp").write_text("not an image either")
    data = (root / "hopper.jpg").read_bytes()
    (root / "nested" / "cut.jpg").write_bytes(data[: len(data) // 3])
    return root


def test_batch_with_bad_files(photo_folder, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["detect", str(photo_folder), "--out", str(out), "--json", "-", "--batch-size", "2"])
    captured = capsys.readouterr()
    assert status == 1
    records = json.loads(captured.out)  # stdout holds nothing but the JSON
    by_name = {os.path.relpath(r["image"], photo_folder): r for r in records}
    assert sorted(by_name) == ["hopper.jpg", "nested/mirror.PNG", "white.png"]
    hopper = by_name["hopper.jpg"]
    assert (hopper["width"], hopper["height"]) == (512, 600)
    (face,) = hopper["detections"]
    assert 0.75 <= face["score"] <= 1 and len(face["box"]) == 4 and np.array(face["keypoints"]).shape == (6, 2)
    (mirrored,) = by_name["nested/mirror.PNG"]["detections"]
    assert abs((512 - mirrored["box"][2]) - face["box"][0]) < 10
    assert by_name["white.png"]["detections"] == []
    errors = captured.err.strip().splitlines()
    for bad, reason in [("empty.jpg", "empty file"), ("fake.webp", "not a recognised"), ("cut.jpg", "truncated")]:
        (line,) = [e for e in errors if bad in e]
        assert reason in line
    assert "3 input(s) failed" in errors[-1]
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["hopper.jpg", "nested/mirror.PNG", "white.png"]
    annotated = np.asarray(Image.open(out / "hopper.jpg"))
    original = np.asarray(Image.open(photo_folder / "hopper.jpg"))
    assert annotated.shape == original.shape
    x0, y0 = (int(round(v)) for v in face["box"][:2])
    r, g, b = annotated[y0 + 20, x0].astype(int)
    assert g > 150 and g > r + 80 and g > b + 80  # the green box edge (JPEG-blurred)


def test_json_file_and_clean_run(grace_hopper, tmp_path, capsys):
    target = tmp_path / "sub" / "result.json"
    status = main(["detect", str(grace_hopper), "--model", "short_range", "--json", str(target), "--min-score", "0.9"])
    assert status == 0 and capsys.readouterr().out == ""
    (record,) = json.loads(target.read_text())
    assert record["image"] == str(grace_hopper) and len(record["detections"]) == 1


def test_without_json_or_out_the_detections_are_printed(grace_hopper, capsys):
    assert main(["detect", str(grace_hopper), "--model", "front"]) == 0
    captured = capsys.readouterr()
    line = captured.out.strip()
    assert line.startswith(f"{grace_hopper}: 1 face(s): 0.") and line.count("[") == 1
    box = [int(v) for v in line.split("[")[1].rstrip("]").split(", ")]
    assert box[0] < box[2] and box[1] < box[3]  # a real box in pixels
    assert "1 image(s), 1 face(s)" in captured.err


def test_missing_path_still_processes_the_rest(grace_hopper, tmp_path, capsys):
    status = main(["detect", str(tmp_path / "nope.jpg"), str(grace_hopper), "--json", "-"])
    captured = capsys.readouterr()
    assert status == 1 and "nope.jpg: no such file or directory" in captured.err
    assert "1 input(s) failed; 1 of 2 inputs processed" in captured.err  # the missing path counts
    assert len(json.loads(captured.out)) == 1


def test_refuses_to_overwrite_inputs(photo_folder, capsys):
    before = (photo_folder / "hopper.jpg").read_bytes()
    assert main(["detect", str(photo_folder), "--out", str(photo_folder)]) == 2
    assert "would overwrite" in capsys.readouterr().err
    assert (photo_folder / "hopper.jpg").read_bytes() == before


def test_usage_errors(grace_hopper, capsys):
    assert main(["detect", str(grace_hopper), "--model", "no_such_model"]) == 2
    assert "unknown model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["detect", str(grace_hopper), "--batch-size", "0"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["detect", str(grace_hopper), "--min-score", "1.5"])
    assert info.value.code == 2


def test_same_names_from_two_folders_do_not_collide(grace_hopper, tmp_path, capsys):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        shutil.copy(grace_hopper, tmp_path / sub / "x.jpg")
    out = tmp_path / "out"
    assert main(["detect", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["x.jpg", "x_2.jpg"]


@pytest.mark.slow
def test_console_entry_point(grace_hopper):
    env = {**os.environ, "PYTHONPATH": os.path.abspath(REPO_SRC)}
    proc = subprocess.run(
        [sys.executable, "-m", "blazedistill", "detect", str(grace_hopper), "--json", "-"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)[0]["detections"]) == 1


def test_device_auto_is_resolved(grace_hopper, capsys):
    assert main(["detect", str(grace_hopper), "--device", "auto", "--json", "-"]) == 0
    assert len(json.loads(capsys.readouterr().out)[0]["detections"]) == 1


@pytest.mark.parametrize("device", ["bogus", "cuda:x"])
def test_bad_device_is_a_usage_error(grace_hopper, capsys, device):
    assert main(["detect", str(grace_hopper), "--device", device]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --device") and device in line


def test_json_never_overwrites_an_input_and_bad_targets_fail_fast(grace_hopper, tmp_path, capsys):
    photo = tmp_path / "photo.jpg"
    shutil.copy(grace_hopper, photo)
    before = photo.read_bytes()
    assert main(["detect", str(photo), "--json", str(photo)]) == 2
    assert "--json" in capsys.readouterr().err and photo.read_bytes() == before
    assert main(["detect", str(photo), "--json", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    assert main(["detect", str(photo), "--out", str(blocker / "out")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: --out {blocker / 'out'}: cannot create")
    assert main(["detect", str(photo), "--json", str(blocker / "x.json")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: --json {blocker / 'x.json'}: cannot create")


def test_json_write_failure_after_the_run_is_one_line(grace_hopper, tmp_path, capsys, monkeypatch):
    from blazedistill.cli import detect as detect_cli

    def refuse(records, target):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(detect_cli, "_write_json", refuse)
    assert main(["detect", str(grace_hopper), "--json", str(tmp_path / "r.json")]) == 1
    line, summary = capsys.readouterr().err.strip().splitlines()
    assert line == f"error: --json {tmp_path / 'r.json'}: cannot write (Permission denied)"
    assert summary == "1 image(s), 1 face(s)"
