"""A PyTorch module built by walking a TFLite graph's operators.

``build_plan`` turns a :class:`TFLiteGraph` into a plan (plain data: steps with slots and attributes,
savable with ``torch.save``) plus its weights in PyTorch layout; :class:`TFLiteGraphModule` runs the plan.
Activations run in NCHW (channels_last memory); TFLite's NHWC semantics are kept where layout matters
(reshape, concatenation axis, channel padding, depth-to-space). Batch size is free.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .tflite_reader import TFLiteError, TFLiteGraph

PLAN_FORMAT = "blazedistill-tflite-plan-v1"
_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}


def _same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after): the odd pixel goes after (bottom / right)."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _trim_after(size: int, before: int, after: int, kernel: int, stride: int, dilation: int) -> int:
    """Drop trailing padding no output window reaches (same outputs, less padding)."""
    effective = (kernel - 1) * dilation + 1
    out = (size + before + after - effective) // stride + 1
    last_end = (out - 1) * stride + effective  # exclusive end of the last window, in padded coordinates
    return max(0, min(after, last_end - before - size))


class _Graph:
    """Index helpers over a TFLiteGraph: producers, consumers, constants."""

    def __init__(self, graph: TFLiteGraph):
        self.g = graph
        self.consumers: dict[int, list[int]] = {}
        for k, op in enumerate(graph.operators):
            for t in op.inputs:
                self.consumers.setdefault(t, []).append(k)

    def const(self, t: int) -> np.ndarray:
        if t not in self.g.constants:
            raise TFLiteError(f"tensor {self.g.tensors[t].name!r} must be a constant")
        return self.g.constants[t]

    def shape(self, t: int) -> tuple[int, ...]:
        return self.g.tensors[t].shape

    def only_consumer(self, t: int) -> int | None:
        users = self.consumers.get(t, [])
        return users[0] if len(users) == 1 and t not in self.g.outputs else None


def _spatial_pad(pads: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) when an NHWC PAD touches only H and W, else None."""
    if pads.shape != (4, 2) or pads[0].any() or pads[3].any():
        return None
    return int(pads[1, 0]), int(pads[1, 1]), int(pads[2, 0]), int(pads[2, 1])


def build_plan(graph: TFLiteGraph) -> tuple[dict, dict[str, np.ndarray]]:
    """The executable plan of a graph (plain data) and its weights keyed by state-dict name."""
    G = _Graph(graph)
    ops = graph.operators
    if len(graph.inputs) != 1 or len(G.shape(graph.inputs[0])) != 4 or G.shape(graph.inputs[0])[0] != 1:
        raise TFLiteError("expected one NHWC input of batch 1")
    alias: dict[int, int] = {}  # tensor -> tensor that carries its value (folded ops)
    extra_pad: dict[int, tuple[int, int, int, int]] = {}  # conv op -> folded PAD (t, b, l, r)
    fused_act: dict[int, str] = {}  # producer op -> activation taken over from a RELU
    skipped: set[int] = set()

    for k, op in enumerate(ops):
        if op.type == "PAD":
            pads = _spatial_pad(G.const(op.inputs[1]))
            users = G.consumers.get(op.outputs[0], [])
            foldable = pads is not None and op.outputs[0] not in graph.outputs and users
            if foldable and all(ops[u].type in ("CONV_2D", "DEPTHWISE_CONV_2D") for u in users):
                if all(ops[u].inputs[0] == op.outputs[0] for u in users):
                    for u in users:
                        extra_pad[u] = pads
                    alias[op.outputs[0]] = op.inputs[0]
                    skipped.add(k)
        elif op.type == "RELU":
            src = op.inputs[0]
            producer = next((j for j, o in enumerate(ops) if src in o.outputs), None)
            if (
                producer is not None
                and G.only_consumer(src) == k
                and ops[producer].options.get("activation") == "NONE"
                and ops[producer].type in ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD")
            ):
                fused_act[producer] = "RELU"
                alias[op.outputs[0]] = src
                skipped.add(k)

    def real(t: int) -> int:
        while t in alias:
            t = alias[t]
        return t

    steps: list[dict] = []
    weights: dict[str, np.ndarray] = {}
    layout: dict[int, str] = {graph.inputs[0]: "nchw"}
    for k, op in enumerate(ops):
        if k in skipped:
            continue
        ins = [real(t) for t in op.inputs]
        out = op.outputs[0]
        x_shape = G.shape(op.inputs[0])
        step: dict = {"kind": "", "inputs": [ins[0]], "output": out}
        act = fused_act.get(k, op.options.get("activation", "NONE"))
        if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            kernel = G.const(op.inputs[1])
            if op.type == "CONV_2D":
                w = kernel.transpose(0, 3, 1, 2)  # O H W I -> O I H W
                groups = 1
            else:
                w = kernel.transpose(3, 0, 1, 2)  # 1 H W C -> C 1 H W
                groups = x_shape[3]
            bias = G.const(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
            t, b, left, right = extra_pad.get(k, (0, 0, 0, 0))
            (sh, sw), (dh, dw) = op.options["stride"], op.options["dilation"]
            kh, kw = w.shape[2:]
            if op.options["padding"] == "SAME":  # computed on the size the op sees (after a folded PAD)
                (t2, b2), (l2, r2) = _same_pads(x_shape[1], kh, sh, dh), _same_pads(x_shape[2], kw, sw, dw)
                t, b, left, right = t + t2, b + b2, left + l2, right + r2
            in_h, in_w = G.shape(ins[0])[1:3]
            b, right = _trim_after(in_h, t, b, kh, sh, dh), _trim_after(in_w, left, right, kw, sw, dw)
            name = f"steps.{len(steps)}"
            step.update(
                kind="conv",
                name=name,
                in_channels=int(x_shape[3]),
                out_channels=int(w.shape[0]),
                kernel=[int(kh), int(kw)],
                stride=[sh, sw],
                dilation=[dh, dw],
                groups=int(groups),
                pad=[t, b, left, right],
                bias=bias is not None,
                activation=act,
            )
            weights[f"{name}.weight"] = np.ascontiguousarray(w, dtype=np.float32)
            if bias is not None:
                weights[f"{name}.bias"] = bias.astype(np.float32)
        elif op.type == "MAX_POOL_2D":
            (kh, kw), (sh, sw) = op.options["kernel"], op.options["stride"]
            t = b = left = right = 0
            if op.options["padding"] == "SAME":
                (t, b), (left, right) = _same_pads(x_shape[1], kh, sh, 1), _same_pads(x_shape[2], kw, sw, 1)
            b, right = _trim_after(x_shape[1], t, b, kh, sh, 1), _trim_after(x_shape[2], left, right, kw, sw, 1)
            step.update(kind="max_pool", kernel=[kh, kw], stride=[sh, sw], pad=[t, b, left, right], activation=act)
        elif op.type == "ADD":
            if any(t in graph.constants for t in ins):
                raise TFLiteError(f"operator {k} (ADD) with a constant operand is not supported")
            step.update(kind="add", inputs=ins, activation=act)
        elif op.type == "RELU":
            step.update(kind="relu")
        elif op.type == "PAD":
            pads = G.const(op.inputs[1]).astype(int)
            if pads[0].any():
                raise TFLiteError(f"operator {k} (PAD) pads the batch dimension")
            if layout[ins[0]] == "nchw":  # F.pad order: W, H, C (last dimension first)
                pads = pads[[0, 3, 1, 2]]
            step.update(kind="pad", pads=[int(v) for v in pads[::-1].reshape(-1)])
        elif op.type == "RESHAPE":
            new_shape = op.options.get("new_shape") or tuple(int(v) for v in G.const(op.inputs[1]))
            out_shape = G.shape(out)
            if new_shape[0] not in (1, -1) or out_shape[0] != 1 or x_shape[0] != 1:
                raise TFLiteError(f"operator {k} (RESHAPE) does not keep the batch dimension")
            step.update(kind="reshape", shape=[int(v) for v in out_shape[1:]], from_nchw=layout[ins[0]] == "nchw")
            step["to_nchw"] = len(out_shape) == 4
        elif op.type == "CONCATENATION":
            axis = op.options["axis"] % len(x_shape)
            if axis == 0:
                raise TFLiteError(f"operator {k} (CONCATENATION) along the batch dimension is not supported")
            if layout[ins[0]] == "nchw":
                axis = _NHWC_TO_NCHW_AXIS[axis]
            step.update(kind="concat", inputs=ins, axis=axis, activation=act)
        elif op.type == "RESIZE_BILINEAR":
            size = [int(v) for v in G.const(op.inputs[1])]
            step.update(kind="resize_bilinear", size=size, in_size=[int(x_shape[1]), int(x_shape[2])])
            step.update(align_corners=op.options["align_corners"], half_pixel_centers=op.options["half_pixel_centers"])
        elif op.type == "DEPTH_TO_SPACE":
            step.update(kind="depth_to_space", block_size=op.options["block_size"])
        else:  # the reader already refuses anything else
            raise TFLiteError(f"operator {k} ({op.type}) is not supported")
        if any(layout.get(t) is None for t in step["inputs"]):
            raise TFLiteError(f"operator {k} ({op.type}) reads a tensor no earlier operator produced")
        layout[out] = "nchw" if len(G.shape(out)) == 4 else "plain"
        steps.append(step)

    outputs = [real(t) for t in graph.outputs]
    _assign_slots(steps, graph.inputs[0], outputs)
    plan = {
        "format": PLAN_FORMAT,
        "input_shape": [int(v) for v in G.shape(graph.inputs[0])[1:]],
        "input_slot": 0,
        "output_names": [graph.tensors[t].name for t in graph.outputs],
        "output_slots": _output_slots(steps, outputs),
        "output_nchw": [layout[t] == "nchw" for t in outputs],
        "num_slots": 1 + max((s["output"] for s in steps), default=0),
        "steps": steps,
    }
    return plan, weights


def _assign_slots(steps: list[dict], graph_input: int, outputs: list[int]) -> None:
    """Rewrite tensor indices into a few reusable slots, so dead activations are freed while running."""
    last_use: dict[int, int] = {}
    for i, s in enumerate(steps):
        for t in s["inputs"]:
            last_use[t] = i
    slot_of = {graph_input: 0}
    free: list[int] = []
    next_slot = 1
    for i, s in enumerate(steps):
        s["tensor"] = s["output"]
        s["inputs"] = [slot_of[t] for t in s["inputs"]]
        for t in {t for t, last in last_use.items() if last == i and t not in outputs and t in slot_of}:
            free.append(slot_of.pop(t))
        if free:
            slot_of[s["output"]] = free.pop()
        else:
            slot_of[s["output"]] = next_slot
            next_slot += 1
        s["output"] = slot_of[s["tensor"]]


def _output_slots(steps: list[dict], outputs: list[int]) -> list[int]:
    slot = {}
    for s in steps:
        slot[s["tensor"]] = s["output"]
    return [slot[t] for t in outputs]


_ACTIVATIONS = {
    "NONE": None,
    "RELU": F.relu,
    "RELU6": F.relu6,
    "RELU_N1_TO_1": lambda y: y.clamp(-1.0, 1.0),
    "TANH": torch.tanh,
}


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_pad is not None:  # TFLite ignores padded cells: pad with -inf
            x = F.pad(x, self.pre_pad, value=float("-inf"))
        return self.activate(F.max_pool2d(x, self.kernel, self.stride))


class _Add(_Step):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.activate(a + b)


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
