"""MediaPipe's BlazeFace teachers as PyTorch modules, converted from the pinned .tflite files and cached."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from .. import hub
from ..specs import ModelSpec, teacher_spec
from .tflite_graph import PLAN_FORMAT, TFLiteGraphModule
from .tflite_reader import read_tflite

CACHE_FORMAT = f"blazedistill-converted-v1/{PLAN_FORMAT}"


def _cache_path(digest: str) -> Path:
    tag = CACHE_FORMAT.replace("/", "-")
    return hub.cache_dir() / "converted" / f"{digest}-{tag}.pt"


def _save_atomic(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_cached(path: Path, digest: str) -> TFLiteGraphModule | None:
    """The cached conversion, or None when absent or unreadable (it is then rebuilt)."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("format") != CACHE_FORMAT or blob.get("sha256") != digest:
            return None
        module = TFLiteGraphModule(blob["plan"])
        module.load_state_dict(blob["state_dict"])
        return module
    except Exception:
        return None


def convert_tflite(model_file: str | Path, digest: str | None = None) -> TFLiteGraphModule:
    """A .tflite file as a PyTorch module, through the cache under ``hub.cache_dir()/converted``."""
    digest = digest or hub.sha256_file(model_file)
    path = _cache_path(digest)
    module = _load_cached(path, digest)
    if module is None:
        module = TFLiteGraphModule.from_graph(read_tflite(model_file))
        state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        _save_atomic({"format": CACHE_FORMAT, "sha256": digest, "plan": module.plan, "state_dict": state}, path)
    return module


def load_teacher(name: str, model_file: str | Path | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """A MediaPipe BlazeFace teacher by name (front, short_range, back, full_range, full_range_sparse).

    The module is frozen and in eval mode; ``forward(x)`` takes (N, 3, S, S) float32 RGB in [-1, 1] and
    returns ``(regressors (N, A, 16), classificators (N, A, 1))``; ``module.spec`` is its ModelSpec.
    ``model_file`` replaces the cached download and must match the name's pinned SHA-256.
    """
    spec: ModelSpec = teacher_spec(name)
    if model_file is None:
        path = hub.model_file(spec.model_file)
        digest = hub.sha256_file(path)
    else:
        path = Path(model_file)
        if not path.is_file():
            raise hub.ModelFileError(f"{path}: no such model file")
        digest = hub.sha256_file(path)
        if digest != hub.MODEL_SHA256[spec.model_file]:
            raise hub.ModelFileError(
                f"{path}: not MediaPipe's {spec.model_file} (SHA-256 {digest[:12]}… instead of the pinned "
                f"{hub.MODEL_SHA256[spec.model_file][:12]}…); teacher {name!r} needs that exact file"
            )
    module = convert_tflite(path, digest)
    module.spec = spec
    module.requires_grad_(False)
    return module.to(device).eval()
