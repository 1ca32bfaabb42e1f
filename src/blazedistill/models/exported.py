"""What an exported file carries about its model (spec, version), and TorchScript/TFLite metadata access."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from blazedistill.messages import first_line
from blazedistill.specs import ModelSpec

SPEC_KEY = "blazedistill.spec"
VERSION_KEY = "blazedistill.version"
MODEL_KEY = "blazedistill.model"
#: TorchScript keeps the same entries as one JSON file in the archive's extra files
TORCHSCRIPT_EXTRA_FILE = "blazedistill.json"


class ExportedModelError(ValueError):
    """An exported file cannot be used as a BlazeFace-contract model (unreadable, foreign or incomplete)."""


def model_name(model: nn.Module) -> str:
    """A student's registered name, else the spec's (teacher) name."""
    return (getattr(model, "student_config", None) or {}).get("name") or model.spec.name


def export_metadata(model: nn.Module) -> dict[str, str]:
    """The key/value pairs stored in every exported file: the spec as JSON, the model's name, the version."""
    from blazedistill import __version__

    spec = json.dumps(model.spec.to_dict(), sort_keys=True)
    return {SPEC_KEY: spec, MODEL_KEY: model_name(model), VERSION_KEY: __version__}


def spec_from_metadata(metadata: Mapping[str, str], source: str | Path) -> ModelSpec:
    """The ModelSpec stored by `export_metadata`; a clear error when it is missing or unreadable."""
    text = metadata.get(SPEC_KEY)
    if text is None:
        raise ExportedModelError(
            f"{source}: no {SPEC_KEY!r} metadata, so its anchors and input size are unknown; "
            "export the model with `blazedistill export` (found keys: "
            f"{', '.join(sorted(metadata)) or 'none'})"
        )
    try:
        return ModelSpec.from_dict(json.loads(text))
    except (ValueError, TypeError, KeyError) as exc:
        raise ExportedModelError(f"{source}: unreadable {SPEC_KEY!r} metadata ({exc})") from None


def check_output_shapes(spec: ModelSpec, regressors: tuple, classificators: tuple, source: str | Path) -> None:
    """Raise unless the output shapes (batch dims may be symbolic) follow the BlazeFace contract of `spec`."""
    expected = ((spec.num_anchors, 16), (spec.num_anchors, 1))
    found = (tuple(regressors[1:]), tuple(classificators[1:]))
    if len(regressors) != 3 or len(classificators) != 3 or found != expected:
        raise ExportedModelError(
            f"{source}: outputs {list(regressors)} and {list(classificators)} do not match the BlazeFace "
            f"contract (N, {spec.num_anchors}, 16) and (N, {spec.num_anchors}, 1)"
        )


# --- TorchScript -------------------------------------------------------------------------------------------


class TorchScriptModel(nn.Module):
    """A TorchScript file written by `blazedistill export --format torchscript`, with its spec."""

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise ExportedModelError(f"{self.path}: no such file")
        extra = {TORCHSCRIPT_EXTRA_FILE: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript
                self.module = torch.jit.load(str(self.path), map_location="cpu", _extra_files=extra)
        except RuntimeError as exc:
            raise ExportedModelError(f"{self.path}: not a TorchScript archive ({first_line(exc)})") from None
        try:
            metadata = json.loads(extra[TORCHSCRIPT_EXTRA_FILE]) if extra[TORCHSCRIPT_EXTRA_FILE] else {}
        except ValueError:
            metadata = {}
        self.spec = spec_from_metadata(metadata, self.path)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        regressors, classificators = self.module(x)
        return regressors, classificators


# --- TFLite --------------------------------------------------------------------------------------------------


def add_tflite_metadata(path: str | Path, metadata: Mapping[str, str]) -> None:
    """Rewrite a .tflite file with `metadata` appended to the flatbuffer's metadata table (name -> buffer)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    path = Path(path)
    model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    model.metadata = [m for m in (model.metadata or []) if _decode(m.name) not in metadata]
    for name, value in metadata.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(value.encode(), dtype=np.uint8)
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = name
        entry.buffer = len(model.buffers) - 1
        model.metadata.append(entry)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))


def read_tflite_metadata(path: str | Path) -> dict[str, str]:
    """The flatbuffer metadata entries of a .tflite file that hold UTF-8 text (name -> text)."""
    import tflite

    path = Path(path)
    try:
        model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
    except OSError as exc:
        raise ExportedModelError(f"{path}: cannot read ({exc.strerror})") from None
    entries = {}
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        data = model.Buffers(entry.Buffer()).DataAsNumpy()
        if isinstance(data, np.ndarray):
            try:
                entries[_decode(entry.Name())] = data.tobytes().decode()
            except UnicodeDecodeError:
                continue  # binary metadata (e.g. the converter's min_runtime_version) is not ours
    return entries


def load_tflite_export(path: str | Path, num_threads: int | None = None) -> nn.Module:
    """A .tflite file written by `blazedistill export --format tflite`, run by the TFLite interpreter."""
    from blazedistill.models.tflite_runtime import TFLiteModel

    spec = spec_from_metadata(read_tflite_metadata(path), path)
    return TFLiteModel(path, spec=spec, num_threads=num_threads)


def load_exported(path: str | Path, threads: int | None = None) -> nn.Module:
    """An exported file by suffix: .onnx (onnxruntime), .torchscript, .tflite (TFLite interpreter)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from blazedistill.models.onnx_runtime import OnnxModel

        return OnnxModel(path, threads=threads)
    if suffix == ".torchscript":
        return TorchScriptModel(path)
    if suffix == ".tflite":
        return load_tflite_export(path, num_threads=threads)
    raise ExportedModelError(f"{path}: not an exported model (expected .onnx, .torchscript or .tflite)")


def _decode(name: bytes | str | None) -> str:
    return name.decode() if isinstance(name, bytes) else (name or "")
