"""Export a BlazeFace-contract model to ONNX, TorchScript or TFLite, and verify the file against PyTorch.

Every export is written to a temporary name, reloaded with its runtime (onnxruntime, torch.jit.load, the
TFLite interpreter) and compared with the PyTorch model on random inputs and on a real letterboxed photo.
Only a file whose outputs agree within `tolerance` is moved to `out`; a failing file is kept as
`out` + ".unverified" for inspection and `ExportError` is raised.

Agreement is measured per element as |Δ| / max(1, |PyTorch value|): an absolute error for values within
±1, a relative one beyond. The raw outputs reach hundreds (regressors in input pixels, logits down to
about -21,000), where float32 rounding alone differs by more than 1e-4 between two correct runtimes
(front teacher, onnxruntime: 2e-4 absolute on a logit of -340, i.e. 6e-7 relative).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from blazedistill.messages import first_line
from blazedistill.models.exported import (
    TORCHSCRIPT_EXTRA_FILE,
    TorchScriptModel,
    add_tflite_metadata,
    export_metadata,
    load_tflite_export,
    model_name,
)
from blazedistill.specs import ModelSpec

FORMATS = ("onnx", "torchscript", "tflite")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript", "tflite": ".tflite"}
TOLERANCE = 1e-4
UNVERIFIED_SUFFIX = ".unverified"
ONNX_OPSET = 18  # the dynamo exporter's native opset; its Pad cannot be down-converted to 17
INPUT_NAME, OUTPUT_NAMES = "input", ("regressors", "classificators")


class ExportError(RuntimeError):
    """An export failed, or its file does not reproduce the PyTorch model."""


@dataclass(frozen=True)
class OutputDiff:
    """How far one exported output is from PyTorch's: max |Δ| and max |Δ| / max(1, |reference|)."""

    max_abs: float
    max_scaled: float

    @classmethod
    def between(cls, expected: np.ndarray, found: np.ndarray) -> OutputDiff:
        if expected.shape != found.shape:
            raise ExportError(f"output shape {found.shape} differs from PyTorch's {expected.shape}")
        expected = expected.astype(np.float64)
        diff = np.abs(expected - found.astype(np.float64))
        diff = np.where(np.isnan(diff), np.inf, diff)  # a NaN never passes
        scaled = diff / np.maximum(1.0, np.abs(expected))
        return cls(float(np.max(diff, initial=0.0)), float(np.max(scaled, initial=0.0)))


@dataclass(frozen=True)
class ParityCheck:
    """Exported file vs PyTorch on one named input batch."""

    input_name: str
    batch: int
    regressors: OutputDiff
    classificators: OutputDiff

    @property
    def worst(self) -> float:
        return max(self.regressors.max_scaled, self.classificators.max_scaled)


@dataclass
class ExportReport:
    """Where the file went and what its verification measured."""

    path: Path
    format: str
    model: str
    spec: ModelSpec
    tolerance: float
    checks: list[ParityCheck] = field(default_factory=list)

    @property
    def worst(self) -> float:
        """The largest scaled difference over all checks (what `tolerance` bounds)."""
        return max((c.worst for c in self.checks), default=float("nan"))

    def lines(self) -> list[str]:
        """Human-readable summary, one line per verified input."""
        runtime = {"onnx": "onnxruntime", "torchscript": "torch.jit.load", "tflite": "TFLite interpreter"}
        layout = f" ({self.spec.name} layout)" if self.model != self.spec.name else ""
        size = self.path.stat().st_size
        out = [f"exported {self.model}{layout} to {self.path} ({self.format}, {size:,} bytes)"]
        out += [
            f"verified with {runtime[self.format]} on {c.input_name} (N={c.batch}): "
            f"regressors max |Δ| {c.regressors.max_abs:.2e} (scaled {c.regressors.max_scaled:.2e}), "
            f"classificators max |Δ| {c.classificators.max_abs:.2e} (scaled {c.classificators.max_scaled:.2e})"
            for c in self.checks
        ]
        out.append(f"passed: max |Δ| / max(1, |PyTorch|) {self.worst:.2e} <= tolerance {self.tolerance:.0e}")
        return out


def prepare_for_export(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode with batch norm folded into the convolutions and no gradients."""
    if not isinstance(getattr(model, "spec", None), ModelSpec):
        raise ExportError(f"{type(model).__name__} has no `spec: ModelSpec`; only BlazeFace-contract models export")
    if not any(True for _ in model.parameters()) and not any(True for _ in model.buffers()):
        raise ExportError(f"{type(model).__name__} holds no PyTorch weights (already an exported model?)")
    from blazedistill.models.resnet import fold_batchnorm

    prepared = fold_batchnorm(model)  # a copy, in eval mode
    for parameter in prepared.parameters():
        parameter.requires_grad_(False)
    return prepared


def sample_photo() -> Path:
    """matplotlib's photo of Grace Hopper: a real face photo present wherever blazedistill is installed."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def verification_inputs(spec: ModelSpec, dynamic_batch: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    """Named input batches: uniform noise in [-1, 1] (3 images when the batch is dynamic, else 1) and the
    letterboxed sample photo (1 image)."""
    from blazedistill.imageio import load_image
    from blazedistill.preprocess import letterbox

    size = spec.input_size
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(3 if dynamic_batch else 1, 3, size, size, generator=generator) * 2 - 1
    photo, _ = letterbox(load_image(sample_photo()), size)
    return {"random noise": noise, "grace_hopper letterboxed": photo.unsqueeze(0).float()}


def export_and_verify(
    model: nn.Module,
    format: str,
    out: str | Path,
    dynamic_batch: bool = False,
    tolerance: float = TOLERANCE,
) -> ExportReport:
    """Export `model` to `out` and verify it; returns the report or raises ExportError."""
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.suffix != SUFFIXES[format]:
        raise ExportError(f"{out}: a {format} export must be named *{SUFFIXES[format]}")
    if format == "tflite" and dynamic_batch:
        raise ExportError("TFLite exports have a fixed batch of 1 (the interpreter resizes inputs instead)")
    prepared = prepare_for_export(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    example = torch.zeros(2 if dynamic_batch else 1, 3, prepared.spec.input_size, prepared.spec.input_size)
    try:
        _WRITERS[format](prepared, example, partial, dynamic_batch)
    except ExportError:
        partial.unlink(missing_ok=True)
        raise
    except Exception as exc:
        partial.unlink(missing_ok=True)
        raise ExportError(f"{out}: {format} export failed: {_typed_first_line(exc)}") from exc

    report = ExportReport(out, format, model_name(prepared), prepared.spec, tolerance)
    try:
        exported = _LOADERS[format](partial)
        for name, batch in verification_inputs(prepared.spec, dynamic_batch).items():
            with torch.no_grad():
                expected = [t.numpy() for t in prepared(batch)]
            found = exported(batch.numpy())
            diffs = [OutputDiff.between(e, f) for e, f in zip(expected, found, strict=True)]
            report.checks.append(ParityCheck(name, len(batch), *diffs))
    except Exception as exc:
        bad = _keep_unverified(partial, out)
        raise ExportError(f"{out}: the exported file cannot be run ({_typed_first_line(exc)}); kept as {bad}") from exc
    if not report.worst <= tolerance:
        bad = _keep_unverified(partial, out)
        worst = max(report.checks, key=lambda c: c.worst)
        raise ExportError(
            f"{out}: verification failed: max |Δ| / max(1, |PyTorch|) {worst.worst:.3g} > tolerance {tolerance:g} "
            f"on {worst.input_name} (max |Δ| regressors {worst.regressors.max_abs:.3g}, classificators "
            f"{worst.classificators.max_abs:.3g}); the file was kept as {bad} for inspection"
        )
    os.replace(partial, out)
    return report


def export_model(model: nn.Module, format: str, out: str | Path, dynamic_batch: bool = False) -> Path:
    """Export `model` (eval, BN folded) to `out` as onnx | torchscript | tflite, verified; returns the path."""
    return export_and_verify(model, format, out, dynamic_batch).path


# --- writers: (prepared model, example input, path, dynamic_batch) -> file at path ---------------------------


def _write_onnx(model: nn.Module, example: torch.Tensor, path: Path, dynamic_batch: bool) -> None:
    import onnx

    dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    with _quiet():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=True,
            opset_version=ONNX_OPSET,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes=dynamic_shapes,
            external_data=False,
            verbose=False,
        )
    proto = onnx.load(str(path))
    for key, value in export_metadata(model).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _write_torchscript(model: nn.Module, example: torch.Tensor, path: Path, dynamic_batch: bool) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.freeze(torch.jit.trace(model, example))
    extra = {TORCHSCRIPT_EXTRA_FILE: json.dumps(export_metadata(model))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript; it still works
        torch.jit.save(traced, str(path), _extra_files=extra)


class _NHWCInput(nn.Module):
    """Takes (N, S, S, 3) like MediaPipe's .tflite files and feeds the model (N, 3, S, S)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(x.permute(0, 3, 1, 2))


def _write_tflite(model: nn.Module, example: torch.Tensor, path: Path, dynamic_batch: bool) -> None:
    if importlib.util.find_spec("litert_torch") is None:
        raise ExportError(
            "TFLite export needs litert-torch (pip install 'blazedistill[tflite-export]'; it needs no tensorflow)"
        )
    with _quiet(), _native_stderr_kept_for_errors():
        import litert_torch

        converted = litert_torch.convert(_NHWCInput(model).eval(), (example.permute(0, 2, 3, 1).contiguous(),))
        converted.export(str(path))
    add_tflite_metadata(path, export_metadata(model))


_WRITERS = {"onnx": _write_onnx, "torchscript": _write_torchscript, "tflite": _write_tflite}


# --- loaders for verification: path -> callable on a float32 (N, 3, S, S) array -> two arrays ----------------


def _load_onnx(path: Path):
    from blazedistill.models.onnx_runtime import OnnxModel

    return OnnxModel(path).run


def _load_torchscript(path: Path):
    model = TorchScriptModel(path)

    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [t.numpy() for t in model(torch.from_numpy(x))]

    return run


def _load_tflite(path: Path):
    model = load_tflite_export(path)

    def run(x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [t.numpy() for t in model(torch.from_numpy(x))]

    return run


_LOADERS = {"onnx": _load_onnx, "torchscript": _load_torchscript, "tflite": _load_tflite}


# --- helpers -----------------------------------------------------------------------------------------------


def _keep_unverified(partial: Path, out: Path) -> Path:
    bad = out.with_name(out.name + UNVERIFIED_SUFFIX)
    os.replace(partial, bad)
    return bad


def _typed_first_line(exc: BaseException) -> str:
    """'Type: first line of the message' (the exporters' messages rarely name the exception)."""
    return f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__


@contextlib.contextmanager
def _native_stderr_kept_for_errors():
    """Hold back what native code (the LiteRT converter) writes to stderr; show it only if an error follows."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' progress prints, log lines and warnings (errors still raise)."""
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        onnx_logger.setLevel(level)
