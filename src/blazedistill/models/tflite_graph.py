"""A PyTorch module that runs a TFLite graph's execution plan (see ``tflite_plan``).

Activations are NCHW tensors in channels_last memory; batch size is free. Each plan step becomes a small
module; ``forward`` is a flat loop over them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .tflite_plan import PLAN_FORMAT, build_plan
from .tflite_reader import TFLiteError, TFLiteGraph

_ACTIVATIONS = {  # in place: every step output they apply to is a fresh tensor
    "NONE": None,
    "RELU": torch.relu_,
    "RELU6": lambda y: y.clamp_(0.0, 6.0),
    "RELU_N1_TO_1": lambda y: y.clamp_(-1.0, 1.0),
    "TANH": torch.tanh_,
}


def _exporting() -> bool:
    """True while torch.export / ONNX / TorchScript tracing records the graph: take the plain ops then."""
    return torch.compiler.is_exporting() or torch.jit.is_tracing()


class _Step(nn.Module):
    """Base of the plan's steps: an optional fused activation."""

    def __init__(self, step: dict):
        super().__init__()
        name = step.get("activation", "NONE")
        if name not in _ACTIVATIONS:
            raise TFLiteError(f"fused activation {name} is not supported")
        self.act = _ACTIVATIONS[name]

    def activate(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.act is None else self.act(y)


class _Conv(_Step):
    def __init__(self, s: dict):
        super().__init__(s)
        shape = (s["out_channels"], s["in_channels"] // s["groups"], *s["kernel"])
        self.weight = nn.Parameter(torch.zeros(shape))
        self.bias = nn.Parameter(torch.zeros(s["out_channels"])) if s["bias"] else None
        self.stride, self.dilation, self.groups = tuple(s["stride"]), tuple(s["dilation"]), s["groups"]
        t, b, left, right = s["pad"]
        symmetric = t == b and left == right
        self.padding = (t, left) if symmetric else (0, 0)
        self.pre_pad = None if symmetric else (left, right, t, b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_pad is not None:
            x = F.pad(x, self.pre_pad)
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return self.activate(y)


class _MaxPool(_Step):
    def __init__(self, s: dict):
        super().__init__(s)
        self.kernel, self.stride = tuple(s["kernel"]), tuple(s["stride"])
        t, b, left, right = s["pad"]
        self.pre_pad = (left, right, t, b) if any(s["pad"]) else None
        self.tiled = self.pre_pad is None and self.kernel == self.stride  # non-overlapping windows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # elementwise maxima of strided views: faster than max_pool2d on channels_last
        if self.tiled and not _exporting():
            (kh, kw), (h, w) = self.kernel, x.shape[2:]
            h, w = h - h % kh, w - w % kw
            y = x[:, :, 0:h:kh, 0:w:kw].clone()
            for i in range(kh):
                for j in range(kw):
                    if i or j:
                        y = torch.maximum(y, x[:, :, i:h:kh, j:w:kw])
            return self.activate(y)
        if self.pre_pad is not None:  # TFLite ignores padded cells: pad with -inf
            x = F.pad(x, self.pre_pad, value=float("-inf"))
        return self.activate(F.max_pool2d(x, self.kernel, self.stride))


class _Add(_Step):
    """a + b; ``pad_channels`` (before, after): b is narrower and lands on a's channels [before, C - after)."""

    def __init__(self, s: dict):
        super().__init__(s)
        self.in_place = s["in_place"]
        self.channels = None if s["pad_channels"] is None else s["pad_channels"][0]

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        in_place = self.in_place and not a.requires_grad  # autograd may need `a` (e.g. a ReLU's output)
        if _exporting():  # graph-friendly: an explicit constant channel Pad, no in-place slice writes
            if self.channels is not None:
                b = F.pad(b, (0, 0, 0, 0, self.channels, a.shape[1] - self.channels - b.shape[1]))
            return self.activate(a + b)
        if self.channels is None:
            y = a.add_(b) if in_place else a + b
        else:
            y = a if in_place else a.clone()
            y[:, self.channels : self.channels + b.shape[1]] += b
        return self.activate(y)


class _Relu(_Step):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x)


class _Pad(_Step):
    def __init__(self, s: dict):
        super().__init__(s)
        self.pads = tuple(s["pads"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pads)


class _Reshape(_Step):
    def __init__(self, s: dict):
        super().__init__(s)
        self.shape, self.from_nchw, self.to_nchw = tuple(s["shape"]), s["from_nchw"], s["to_nchw"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.from_nchw:
            x = x.permute(0, 2, 3, 1)
        y = x.reshape(x.shape[0], *self.shape)
        return y.permute(0, 3, 1, 2) if self.to_nchw else y


class _Concat(_Step):
    def __init__(self, s: dict):
        super().__init__(s)
        self.axis = s["axis"]

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.activate(torch.cat(xs, dim=self.axis))


def bilinear_taps(in_size: int, out_size: int, align_corners: bool, half_pixel_centers: bool):
    """Source indices (lower, upper) and upper weights of TFLite's RESIZE_BILINEAR along one axis."""
    if align_corners and out_size > 1:
        scale = (in_size - 1) / (out_size - 1)
    else:
        scale = in_size / out_size
    dst = np.arange(out_size, dtype=np.float64)
    src = (dst + 0.5) * scale - 0.5 if half_pixel_centers else dst * scale
    lower = np.floor(src)
    weight = src - lower
    lo = np.clip(lower, 0, in_size - 1).astype(np.int64)
    hi = np.clip(lower + 1, 0, in_size - 1).astype(np.int64)
    return torch.from_numpy(lo), torch.from_numpy(hi), torch.from_numpy(weight.astype(np.float32))


class _ResizeBilinear(_Step):
    def __init__(self, s: dict):
        super().__init__(s)
        for axis, (n_in, n_out) in zip("yx", zip(s["in_size"], s["size"], strict=True), strict=True):
            lo, hi, w = bilinear_taps(n_in, n_out, s["align_corners"], s["half_pixel_centers"])
            self.register_buffer(f"{axis}_lo", lo, persistent=False)
            self.register_buffer(f"{axis}_hi", hi, persistent=False)
            self.register_buffer(f"{axis}_w", w, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wy, wx = self.y_w.view(1, 1, -1, 1), self.x_w.view(1, 1, 1, -1)
        x = torch.lerp(x.index_select(2, self.y_lo), x.index_select(2, self.y_hi), wy)
        return torch.lerp(x.index_select(3, self.x_lo), x.index_select(3, self.x_hi), wx)


class _DepthToSpace(_Step):
    def __init__(self, s: dict):
        super().__init__(s)
        self.block = s["block_size"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        r = self.block  # TFLite channel index = (row_in_block * r + col_in_block) * C_out + c
        y = x.reshape(n, r, r, c // (r * r), h, w).permute(0, 3, 4, 1, 5, 2)
        return y.reshape(n, c // (r * r), h * r, w * r)


_STEP_TYPES = {
    "conv": _Conv,
    "max_pool": _MaxPool,
    "add": _Add,
    "relu": _Relu,
    "pad": _Pad,
    "reshape": _Reshape,
    "concat": _Concat,
    "resize_bilinear": _ResizeBilinear,
    "depth_to_space": _DepthToSpace,
}


class TFLiteGraphModule(nn.Module):
    """Runs a plan from :func:`build_plan`: (N, C, H, W) float32 in, the graph's outputs out."""

    def __init__(self, plan: dict):
        super().__init__()
        if plan.get("format") != PLAN_FORMAT:
            raise ValueError(f"not a {PLAN_FORMAT} plan")
        self.plan = plan
        self.steps = nn.ModuleList(_STEP_TYPES[s["kind"]](s) for s in plan["steps"])
        self._wiring = [(tuple(s["inputs"]), s["output"]) for s in plan["steps"]]
        h, w, c = plan["input_shape"]
        self.input_chw = (c, h, w)

    @classmethod
    def from_graph(cls, graph: TFLiteGraph) -> TFLiteGraphModule:
        """Build the module and load the graph's weights."""
        plan, weights = build_plan(graph)
        module = cls(plan)
        module.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        return module

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_chw:
            expected = ", ".join(map(str, self.input_chw))
            raise ValueError(f"expected input of shape (N, {expected}), got {tuple(x.shape)}")
        values: list = [None] * self.plan["num_slots"]
        values[0] = x.contiguous(memory_format=torch.channels_last)
        for step, (ins, out) in zip(self.steps, self._wiring, strict=True):
            values[out] = step(*[values[i] for i in ins])
        outs = []
        for slot, nchw in zip(self.plan["output_slots"], self.plan["output_nchw"], strict=True):
            outs.append(values[slot].permute(0, 2, 3, 1) if nchw else values[slot])
        return tuple(outs)
