"""Latency and throughput of models over runtimes (backends), model-only and end to end, side by side.

Backends (each gives a BlazeFace-contract module):
  torch        eager PyTorch, eval mode, batch norm folded
  torch-cl     the same in channels_last memory format
  torch-jit    the verified TorchScript export (traced, frozen), reloaded
  onnxruntime  the verified ONNX export (dynamic batch) in onnxruntime, all graph optimisations
  tflite       the TFLite interpreter (ai-edge-litert): a teacher's original file, or a verified TFLite
               export (litert-torch) of a student

"model" times the model call on a prepared (N, 3, S, S) batch; "end-to-end" times `Detector.detect_batch`
on N decoded uint8 images: letterbox, model, decoding, weighted NMS, mapping back to pixels. Backends are
timed round-robin (one call each, in turn), so load from other processes hits all of them alike.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from blazedistill.specs import TEACHER_SPECS

BACKENDS = ("torch", "torch-cl", "torch-jit", "onnxruntime", "tflite")
DEFAULT_BACKENDS = ("torch", "onnxruntime", "tflite")
MODES = ("model", "end-to-end")


class BackendUnavailable(RuntimeError):
    """A backend cannot run a given model here (reason in the message)."""


@dataclass(frozen=True)
class BenchRow:
    """One (model, backend, mode, batch) measurement; times are per call of `batch` images."""

    model: str
    backend: str
    mode: str
    batch: int
    p50_ms: float
    p95_ms: float
    images_per_s: float
    ratio: float  # time per image / that of the first row with the same mode and batch


@dataclass
class BenchResult:
    rows: list[BenchRow]
    skipped: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"settings": self.settings, "rows": [asdict(r) for r in self.rows], "skipped": self.skipped}

    def markdown(self) -> str:
        """The rows as a markdown table, then one line per skipped backend."""
        lines = [
            "| model | backend | mode | batch | p50 ms | p95 ms | images/s | time vs first row |",
            "|---|---|---|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r.model} | {r.backend} | {r.mode} | {r.batch} | {r.p50_ms:.2f} | {r.p95_ms:.2f} | "
            f"{r.images_per_s:.1f} | {r.ratio:.2f}× |"
            for r in self.rows
        ]
        lines += [f"skipped: {s}" for s in self.skipped]
        return "\n".join(lines)


def build_backend(source: str, model: nn.Module, backend: str, threads: int | None, workdir: Path) -> nn.Module:
    """`model` (loaded from `source`) running on `backend`; raises BackendUnavailable with the reason."""
    from blazedistill.export import ExportError, export_model, prepare_for_export
    from blazedistill.models.exported import TorchScriptModel, load_exported, load_tflite_export
    from blazedistill.models.onnx_runtime import OnnxModel

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    exported_path = getattr(model, "path", None)
    has_weights = any(True for _ in model.parameters()) or any(True for _ in model.buffers())
    stem = f"{Path(str(source)).stem}-{len(list(workdir.iterdir()))}"
    try:
        if backend == "onnxruntime" and isinstance(model, OnnxModel):
            return OnnxModel(model.path, threads=threads)
        if backend == "torch-jit" and isinstance(model, TorchScriptModel):
            return model
        if backend == "tflite" and exported_path is not None and Path(exported_path).suffix == ".tflite":
            return load_exported(exported_path, threads=threads)
        if backend == "tflite" and _is_teacher_source(source):
            from blazedistill.models.tflite_runtime import TFLiteModel

            name = source if source in TEACHER_SPECS else Path(source)
            return TFLiteModel(name, spec=model.spec, num_threads=threads)
        if not has_weights:
            raise BackendUnavailable(f"{source} is an exported file; it runs only on its own runtime")
        if backend == "torch":
            return prepare_for_export(model)
        if backend == "torch-cl":
            return _ChannelsLast(prepare_for_export(model))
        if backend == "torch-jit":
            return TorchScriptModel(export_model(model, "torchscript", workdir / f"{stem}.torchscript", True))
        if backend == "onnxruntime":
            return OnnxModel(export_model(model, "onnx", workdir / f"{stem}.onnx", True), threads=threads)
        return load_tflite_export(export_model(model, "tflite", workdir / f"{stem}.tflite"), num_threads=threads)
    except ExportError as exc:
        raise BackendUnavailable(str(exc)) from None
    except ImportError as exc:
        raise BackendUnavailable(f"{backend} is not installed ({exc})") from None


def benchmark(
    sources: Sequence[str],
    backends: Sequence[str] = DEFAULT_BACKENDS,
    batches: Sequence[int] = (1, 32),
    threads: int | None = None,
    repeats: int = 20,
    warmup: int = 3,
    modes: Sequence[str] = MODES,
    image: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Time every (source, backend) pair on the same inputs; rows grouped by mode and batch."""
    from blazedistill.detector import Detector
    from blazedistill.export import sample_photo
    from blazedistill.imageio import load_image
    from blazedistill.models.loading import load_model
    from blazedistill.preprocess import letterbox_batch

    if threads:
        torch.set_num_threads(threads)
    note = progress or (lambda message: None)
    pixels = load_image(image or sample_photo())
    result = BenchResult([], settings=_settings(threads, repeats, warmup, image or sample_photo()))
    with tempfile.TemporaryDirectory(prefix="blazedistill-bench-") as tmp:
        runners: list[tuple[str, str, nn.Module]] = []
        for source in sources:
            model = load_model(source)
            for backend in backends:
                note(f"preparing {source} on {backend}")
                try:
                    runners.append((str(source), backend, build_backend(source, model, backend, threads, Path(tmp))))
                except BackendUnavailable as exc:
                    result.skipped.append(f"{source} on {backend}: {exc}")
        sizes = {runner.spec.input_size for _, _, runner in runners}
        inputs = {(size, n): letterbox_batch([pixels] * n, size)[0] for size in sizes for n in batches}
        for mode in modes:
            for batch in batches:
                note(f"timing {mode}, batch {batch}")
                calls = []
                for _, _, runner in runners:
                    if mode == "model":
                        x = inputs[(runner.spec.input_size, batch)]
                        calls.append(lambda runner=runner, x=x: runner(x))
                    else:
                        detector = Detector(runner)
                        images = [pixels] * batch
                        calls.append(lambda d=detector, images=images: d.detect_batch(images, len(images)))
                times = _round_robin(calls, repeats, warmup)
                result.rows += _rows(runners, mode, batch, times)
    return result


def _round_robin(calls: list[Callable[[], object]], repeats: int, warmup: int) -> list[np.ndarray]:
    """Seconds per call: `warmup` untimed rounds, then `repeats` rounds calling each function once in turn."""
    times = [np.empty(repeats) for _ in calls]
    with torch.inference_mode():
        for round_index in range(-warmup, repeats):
            for call, record in zip(calls, times, strict=True):
                start = time.perf_counter()
                call()
                elapsed = time.perf_counter() - start
                if round_index >= 0:
                    record[round_index] = elapsed
    return times


def _rows(runners: list, mode: str, batch: int, times: list[np.ndarray]) -> list[BenchRow]:
    rows, reference = [], None
    for (source, backend, _), seconds in zip(runners, times, strict=True):
        p50, p95 = np.percentile(seconds, 50), np.percentile(seconds, 95)
        reference = reference or p50
        rows.append(BenchRow(source, backend, mode, batch, p50 * 1e3, p95 * 1e3, batch / p50, p50 / reference))
    return rows


class _ChannelsLast(nn.Module):
    """A torch model run in channels_last memory format."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last)
        self.spec = model.spec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(x.contiguous(memory_format=torch.channels_last))


def _is_teacher_source(source: str) -> bool:
    """A teacher name or one of the pinned MediaPipe .tflite files."""
    if source in TEACHER_SPECS:
        return True
    path = Path(source)
    if path.suffix.lower() != ".tflite" or not path.is_file():
        return False
    from blazedistill.hub import MODEL_SHA256, sha256_file

    return sha256_file(path) in MODEL_SHA256.values()


def _settings(threads: int | None, repeats: int, warmup: int, image: str | Path) -> dict:
    import onnxruntime

    return {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "threads": threads or torch.get_num_threads(),
        "repeats": repeats,
        "warmup": warmup,
        "image": str(Path(image).name),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def parse_batches(text: str) -> list[int]:
    """'1,32' -> [1, 32]; every batch >= 1."""
    batches = [int(part) for part in text.split(",") if part.strip()]
    if not batches or any(b < 1 for b in batches):
        raise ValueError(f"batches must be positive integers, got {text!r}")
    return batches
