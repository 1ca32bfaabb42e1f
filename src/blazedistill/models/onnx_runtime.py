"""An exported .onnx file as a BlazeFace-contract model, run by onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from blazedistill.messages import first_line
from blazedistill.models.exported import ExportedModelError, check_output_shapes, spec_from_metadata


def session_options(threads: int | None = None):
    """onnxruntime options used everywhere in the project: all graph optimisations, `threads` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return options


class OnnxModel(nn.Module):
    """`OnnxModel(path)(x)` -> (regressors (N, A, 16), classificators (N, A, 1)), spec read from the file.

    Files exported with a fixed batch of 1 accept any N (run image by image).
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError("onnxruntime is needed to run .onnx models: pip install 'blazedistill[onnx]'") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise ExportedModelError(f"{self.path}: no such file")
        try:
            self.session = ort.InferenceSession(
                str(self.path), session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
            raise ExportedModelError(f"{self.path}: onnxruntime cannot load it ({first_line(exc)})") from None
        self.spec = spec_from_metadata(self.session.get_modelmeta().custom_metadata_map, self.path)
        self.threads = threads
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        size = self.spec.input_size
        if len(inputs) != 1 or len(outputs) != 2 or list(inputs[0].shape[1:]) != [3, size, size]:
            raise ExportedModelError(
                f"{self.path}: expected one input (N, 3, {size}, {size}) and two outputs, found inputs "
                f"{[i.shape for i in inputs]} and {len(outputs)} outputs"
            )
        check_output_shapes(self.spec, outputs[0].shape, outputs[1].shape, self.path)
        self.input_name = inputs[0].name
        self.output_names = [o.name for o in outputs]
        self.fixed_batch = inputs[0].shape[0] if isinstance(inputs[0].shape[0], int) else None

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The raw outputs for a float32 (N, 3, S, S) array."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.fixed_batch is None or len(x) == self.fixed_batch:
            regressors, classificators = self.session.run(self.output_names, {self.input_name: x})
            return regressors, classificators
        if self.fixed_batch != 1:
            raise ValueError(f"{self.path}: exported for batches of {self.fixed_batch}, got {len(x)}")
        parts = [self.session.run(self.output_names, {self.input_name: x[i : i + 1]}) for i in range(len(x))]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        regressors, classificators = self.run(x.detach().cpu().numpy())
        return torch.from_numpy(regressors), torch.from_numpy(classificators)

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}, spec={self.spec.name!r}, threads={self.threads}"
