"""A BlazeFace-contract module backed by the TFLite interpreter (ai-edge-litert): the reference runtime.

Needs the `litert` (or `test`) extra: ``pip install 'blazedistill[litert]'``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from blazedistill.hub import model_file, verify_model_file
from blazedistill.specs import TEACHER_SPECS, ModelSpec, teacher_spec


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise ImportError(
            "the TFLite runtime needs ai-edge-litert: pip install 'blazedistill[litert]' (or ai-edge-litert)"
        ) from exc
    return Interpreter


class TFLiteModel(torch.nn.Module):
    """Runs a BlazeFace .tflite file: forward((N, 3, S, S) in [-1, 1]) -> ((N, A, 16), (N, A, 1)) float32.

    `path_or_name` is a teacher name (its pinned file from the cache) or a .tflite path; `spec` defaults
    to the teacher's spec (required for a path whose name is not a known teacher file). The interpreter
    runs one image at a time (the published graphs hard-code batch 1 in their reshapes).
    """

    def __init__(self, path_or_name: str | os.PathLike, spec: ModelSpec | None = None, num_threads: int | None = None):
        super().__init__()
        name = str(path_or_name)
        if name in TEACHER_SPECS:
            spec = spec or teacher_spec(name)
            path = model_file(spec.model_file)
        else:
            path = Path(path_or_name)
            verify_model_file(path)
            if spec is None:
                known = [s for s in TEACHER_SPECS.values() if s.model_file == path.name]
                if not known:
                    raise ValueError(f"{path}: not a known teacher file name; pass spec=ModelSpec(...)")
                spec = known[0]
        self.spec = spec
        self.path = path
        self.interpreter = _interpreter_class()(model_path=str(path), num_threads=num_threads)
        self.interpreter.allocate_tensors()
        (inp,) = self.interpreter.get_input_details()
        expected = [1, spec.input_size, spec.input_size, 3]
        if list(inp["shape"]) != expected:
            raise ValueError(f"{path}: input shape {list(inp['shape'])} does not match spec {expected}")
        self._input_index = inp["index"]
        outputs = {int(d["shape"][-1]): d["index"] for d in self.interpreter.get_output_details()}
        if sorted(outputs) != [1, 16]:
            raise ValueError(f"{path}: expected outputs (1, A, 16) and (1, A, 1), got {sorted(outputs)}")
        self._regressor_index, self._classifier_index = outputs[16], outputs[1]
        self.eval()

    def forward(self, x: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(x, dtype=torch.float32)
        size = self.spec.input_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, size, size):
            raise ValueError(f"expected input (N, 3, {size}, {size}), got {tuple(x.shape)}")
        nhwc = x.detach().cpu().permute(0, 2, 3, 1).contiguous().numpy()
        regressors, logits = [], []
        for image in nhwc:
            self.interpreter.set_tensor(self._input_index, image[None])
            self.interpreter.invoke()
            regressors.append(self.interpreter.get_tensor(self._regressor_index)[0].copy())
            logits.append(self.interpreter.get_tensor(self._classifier_index)[0].copy())
        if not regressors:
            a = self.spec.num_anchors
            return torch.zeros(0, a, 16), torch.zeros(0, a, 1)
        return torch.from_numpy(np.stack(regressors)), torch.from_numpy(np.stack(logits))
