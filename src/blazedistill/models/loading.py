"""One entry point for every model kind: teacher names, student checkpoints (.pt), ONNX exports (.onnx)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import torch

from blazedistill.hub import MODEL_SHA256, sha256_file
from blazedistill.specs import TEACHER_SPECS


def teacher_name_of_file(path: str | os.PathLike) -> str | None:
    """The teacher whose pinned .tflite file has the same SHA-256 as `path` (front for the shared 128 file)."""
    digest = sha256_file(path)
    for file_name, expected in MODEL_SHA256.items():
        if digest == expected:
            return next(name for name, spec in TEACHER_SPECS.items() if spec.model_file == file_name)
    return None


SUFFIXES = (".pt", ".onnx", ".torchscript", ".tflite")


def load_model(name_or_path: str | os.PathLike, model_file: str | os.PathLike | None = None) -> torch.nn.Module:
    """A BlazeFace-contract module (with `.spec`) in eval mode.

    `name_or_path`: a teacher name (front, short_range, back, full_range, full_range_sparse; `model_file`
    overrides the teacher's .tflite file), a student checkpoint (.pt), or a file written by
    `blazedistill export` (.onnx, .torchscript, .tflite). A .tflite file identical to one of MediaPipe's
    pinned files loads as that PyTorch teacher.
    """
    name = str(name_or_path)
    if name in TEACHER_SPECS:
        from blazedistill.models.teachers import load_teacher

        return load_teacher(name, model_file=model_file)
    path = Path(name_or_path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"unknown model {name!r}: expected a teacher name ({', '.join(TEACHER_SPECS)}) "
            f"or a model file ({', '.join(SUFFIXES)})"
        )
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    if model_file is not None:
        raise ValueError("--model-file only applies to a teacher given by name")
    if suffix == ".pt":
        from blazedistill.distill.checkpoint import load_student

        return load_student(path).eval()
    if suffix == ".onnx":
        from blazedistill.models.onnx_runtime import OnnxModel

        return OnnxModel(path).eval()
    if suffix == ".torchscript":
        from blazedistill.models.exported import TorchScriptModel

        return TorchScriptModel(path).eval()
    teacher = teacher_name_of_file(path)
    if teacher is not None:
        from blazedistill.models.teachers import load_teacher

        return load_teacher(teacher, model_file=path)
    from blazedistill.models.exported import load_tflite_export

    try:
        return load_tflite_export(path).eval()
    except struct.error:  # the flatbuffer reader's reaction to a file that is not a flatbuffer
        raise ValueError(f"{path}: not a readable .tflite file") from None
