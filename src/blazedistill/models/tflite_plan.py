"""Lower a TFLite graph into an execution plan: plain-data steps over reusable slots, plus PyTorch weights.

The plan runs in NCHW (channels_last memory) and keeps TFLite's NHWC meaning where layout matters
(reshape, concatenation axis, channel padding, depth-to-space). Exact rewrites make it cheaper: PAD folded
into the following convolutions, TensorFlow's asymmetric SAME padding turned into symmetric padding with
a zero-extended kernel, RELU fused into its producer, a channel-padded skip added into the wider tensor in
place, and slots reused so dead activations are freed while running.
"""

from __future__ import annotations

import numpy as np

from .tflite_reader import TFLiteError, TFLiteGraph

PLAN_FORMAT = "blazedistill-tflite-plan-v2"
_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}
_CONVS = ("CONV_2D", "DEPTHWISE_CONV_2D")
#: steps whose output is a new tensor (never a view of another): safe to overwrite when used once
_FRESH = ("conv", "add", "max_pool", "pad", "concat", "resize_bilinear")


def same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after): the odd pixel goes after (bottom / right)."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def trim_after(size: int, before: int, after: int, kernel: int, stride: int, dilation: int) -> int:
    """Trailing padding giving the same outputs, as close to ``before`` as possible (symmetric is cheapest).

    Windows never reach padding beyond the last one's end, so any amount between that and ``after`` works.
    """
    effective = (kernel - 1) * dilation + 1
    out = (size + before + after - effective) // stride + 1
    last_end = (out - 1) * stride + effective  # exclusive end of the last window, in padded coordinates
    needed = max(0, min(after, last_end - before - size))
    return min(max(before, needed), after)


def symmetric_kernel(w: np.ndarray, pad: list[int], dilation: tuple[int, int]) -> tuple[np.ndarray, list[int]]:
    """Equal padding on both sides by extending the kernel with zeros on the side that had less padding.

    Windows then start earlier (or end later) by exactly the added zero taps, so every output is the same
    sum of the same products. ``w`` is O×I×H×W; ``pad`` is (top, bottom, left, right).
    """
    t, b, left, right = pad
    dh, dw = dilation
    if (b - t) % dh or (right - left) % dw:
        return w, pad
    grow = [(max(b - t, 0) // dh, max(t - b, 0) // dh), (max(right - left, 0) // dw, max(left - right, 0) // dw)]
    return np.pad(w, [(0, 0), (0, 0), *grow]), [max(t, b)] * 2 + [max(left, right)] * 2


def _spatial_pad(pads: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) when an NHWC PAD touches only H and W, else None."""
    if pads.shape != (4, 2) or pads[0].any() or pads[3].any():
        return None
    return int(pads[1, 0]), int(pads[1, 1]), int(pads[2, 0]), int(pads[2, 1])


class _Lowering:
    """Walks the operators once and emits plan steps (tensor indices still TFLite's)."""

    def __init__(self, graph: TFLiteGraph):
        self.g = graph
        self.ops = graph.operators
        self.consumers: dict[int, list[int]] = {}
        self.producer: dict[int, int] = {}
        for k, op in enumerate(self.ops):
            for t in op.inputs:
                self.consumers.setdefault(t, []).append(k)
            for t in op.outputs:
                self.producer[t] = k
        self.alias: dict[int, int] = {}  # tensor -> tensor carrying its value (folded op)
        self.extra_pad: dict[int, tuple[int, int, int, int]] = {}  # conv op -> folded PAD
        self.fused_act: dict[int, str] = {}  # producer op -> activation of a folded RELU
        self.skipped: set[int] = set()
        self.layout: dict[int, str] = {graph.inputs[0]: "nchw"}

    def const(self, t: int) -> np.ndarray:
        if t not in self.g.constants:
            raise TFLiteError(f"tensor {self.g.tensors[t].name!r} must be a constant")
        return self.g.constants[t]

    def shape(self, t: int) -> tuple[int, ...]:
        return self.g.tensors[t].shape

    def real(self, t: int) -> int:
        while t in self.alias:
            t = self.alias[t]
        return t

    def fold(self) -> None:
        """Fold spatial PADs into the convolutions that read them, and RELUs into their producer."""
        for k, op in enumerate(self.ops):
            out = op.outputs[0]
            users = self.consumers.get(out, [])
            if not users or out in self.g.outputs:
                continue
            if op.type == "PAD":
                pads = _spatial_pad(self.const(op.inputs[1]))
                if pads and all(self.ops[u].type in _CONVS and self.ops[u].inputs[0] == out for u in users):
                    self.extra_pad.update({u: pads for u in users})
                    self.alias[out] = op.inputs[0]
                    self.skipped.add(k)
            elif op.type == "RELU":
                src = op.inputs[0]
                p = self.producer.get(src)
                if p is None or self.consumers[src] != [k] or src in self.g.outputs:
                    continue
                if self.ops[p].type in (*_CONVS, "ADD") and self.ops[p].options["activation"] == "NONE":
                    self.fused_act[p] = "RELU"
                    self.alias[out] = src
                    self.skipped.add(k)

    def steps(self) -> list[dict]:
        steps = []
        for k, op in enumerate(self.ops):
            if k in self.skipped:
                continue
            ins = [self.real(t) for t in op.inputs]
            step = {"kind": "", "inputs": [ins[0]], "output": op.outputs[0]}
            step["activation"] = self.fused_act.get(k, op.options.get("activation", "NONE"))
            getattr(self, "_" + op.type.lower())(k, op, ins, step)
            if any(t not in self.layout for t in step["inputs"]):
                raise TFLiteError(f"operator {k} ({op.type}) reads a tensor no earlier operator produced")
            self.layout[step["output"]] = "nchw" if len(self.shape(step["output"])) == 4 else "plain"
            steps.append(step)
        return steps

    def _conv(self, k, op, ins, step) -> None:
        x_shape = self.shape(op.inputs[0])  # what the op sees (after a folded PAD)
        kernel = self.const(op.inputs[1])
        if op.type == "CONV_2D":
            w, groups = kernel.transpose(0, 3, 1, 2), 1  # O H W I -> O I H W
        else:
            w, groups = kernel.transpose(3, 0, 1, 2), x_shape[3]  # 1 H W C -> C 1 H W
        t, b, left, right = self.extra_pad.get(k, (0, 0, 0, 0))
        (sh, sw), (dh, dw) = op.options["stride"], op.options["dilation"]
        kh, kw = w.shape[2:]
        if op.options["padding"] == "SAME":
            (t2, b2), (l2, r2) = same_pads(x_shape[1], kh, sh, dh), same_pads(x_shape[2], kw, sw, dw)
            t, b, left, right = t + t2, b + b2, left + l2, right + r2
        in_h, in_w = self.shape(ins[0])[1:3]
        b, right = trim_after(in_h, t, b, kh, sh, dh), trim_after(in_w, left, right, kw, sw, dw)
        w, pad = symmetric_kernel(w, [t, b, left, right], (dh, dw))
        has_bias = len(op.inputs) > 2 and op.inputs[2] >= 0
        step.update(kind="conv", in_channels=int(x_shape[3]), out_channels=int(w.shape[0]), groups=int(groups))
        step.update(kernel=list(w.shape[2:]), stride=[sh, sw], dilation=[dh, dw], pad=pad, bias=has_bias)
        step["_weight"] = np.ascontiguousarray(w, dtype=np.float32)
        if has_bias:
            step["_bias"] = self.const(op.inputs[2]).astype(np.float32)

    _conv_2d = _depthwise_conv_2d = _conv

    def _max_pool_2d(self, k, op, ins, step) -> None:
        x_shape = self.shape(ins[0])
        (kh, kw), (sh, sw) = op.options["kernel"], op.options["stride"]
        t = b = left = right = 0
        if op.options["padding"] == "SAME":
            (t, b), (left, right) = same_pads(x_shape[1], kh, sh, 1), same_pads(x_shape[2], kw, sw, 1)
        b, right = trim_after(x_shape[1], t, b, kh, sh, 1), trim_after(x_shape[2], left, right, kw, sw, 1)
        step.update(kind="max_pool", kernel=[kh, kw], stride=[sh, sw], pad=[t, b, left, right])

    def _add(self, k, op, ins, step) -> None:
        if any(t in self.g.constants for t in ins):
            raise TFLiteError(f"operator {k} (ADD) with a constant operand is not supported")
        if self.shape(ins[0]) != self.shape(ins[1]):
            raise TFLiteError(f"operator {k} (ADD) with broadcasting is not supported")
        step.update(kind="add", inputs=ins, pad_channels=None, in_place=None)

    def _relu(self, k, op, ins, step) -> None:
        step["kind"] = "relu"

    def _pad(self, k, op, ins, step) -> None:
        pads = self.const(op.inputs[1]).astype(int)
        if pads[0].any():
            raise TFLiteError(f"operator {k} (PAD) pads the batch dimension")
        if self.layout[ins[0]] == "nchw":
            pads = pads[[0, 3, 1, 2]]
        step.update(kind="pad", pads=[int(v) for v in pads[::-1].reshape(-1)])  # F.pad: last dimension first

    def _reshape(self, k, op, ins, step) -> None:
        new_shape = op.options.get("new_shape") or tuple(int(v) for v in self.const(op.inputs[1]))
        out_shape, x_shape = self.shape(op.outputs[0]), self.shape(ins[0])
        if new_shape[0] not in (1, -1) or out_shape[0] != 1 or x_shape[0] != 1:
            raise TFLiteError(f"operator {k} (RESHAPE) does not keep the batch dimension")
        step.update(kind="reshape", shape=[int(v) for v in out_shape[1:]], from_nchw=self.layout[ins[0]] == "nchw")
        step["to_nchw"] = len(out_shape) == 4

    def _concatenation(self, k, op, ins, step) -> None:
        axis = op.options["axis"] % len(self.shape(ins[0]))
        if axis == 0:
            raise TFLiteError(f"operator {k} (CONCATENATION) along the batch dimension is not supported")
        if self.layout[ins[0]] == "nchw":
            axis = _NHWC_TO_NCHW_AXIS[axis]
        step.update(kind="concat", inputs=ins, axis=axis)

    def _resize_bilinear(self, k, op, ins, step) -> None:
        x_shape = self.shape(ins[0])
        step.update(kind="resize_bilinear", size=[int(v) for v in self.const(op.inputs[1])])
        step.update(in_size=[int(x_shape[1]), int(x_shape[2])], align_corners=op.options["align_corners"])
        step["half_pixel_centers"] = op.options["half_pixel_centers"]

    def _depth_to_space(self, k, op, ins, step) -> None:
        step.update(kind="depth_to_space", block_size=op.options["block_size"])


def _uses(steps: list[dict], outputs: list[int]) -> dict[int, int]:
    count: dict[int, int] = {t: 1 for t in outputs}
    for s in steps:
        for t in s["inputs"]:
            count[t] = count.get(t, 0) + 1
    return count


def _fuse_channel_pad_add(steps: list[dict], outputs: list[int]) -> list[dict]:
    """A channel-only zero PAD read by one ADD becomes that ADD's ``pad_channels`` (no padded copy)."""
    uses = _uses(steps, outputs)
    pads = {
        s["output"]: s
        for s in steps
        if s["kind"] == "pad" and len(s["pads"]) == 8 and not any(s["pads"][:4]) and uses[s["output"]] == 1
    }
    dropped = set()
    for s in steps:
        if s["kind"] == "add" and s["pad_channels"] is None:
            for i, t in enumerate(s["inputs"]):
                other = s["inputs"][1 - i]
                if t in pads and other not in pads:
                    s["inputs"] = [other, pads[t]["inputs"][0]]  # wide operand first, then the narrow skip
                    s["pad_channels"] = pads[t]["pads"][4:6]
                    dropped.add(id(pads[t]))
                    break
    return [s for s in steps if id(s) not in dropped]


def _mark_in_place(steps: list[dict], graph_input: int, outputs: list[int]) -> None:
    """Let an ADD overwrite its first operand when nothing else reads it and it is a fresh tensor."""
    uses = _uses(steps, outputs)
    kind_of = {s["output"]: s["kind"] for s in steps}
    for s in steps:
        if s["kind"] != "add":
            continue
        for i in (0,) if s["pad_channels"] else (0, 1):
            t = s["inputs"][i]
            if t != graph_input and uses[t] == 1 and kind_of.get(t) in _FRESH:
                if i == 1:
                    s["inputs"] = s["inputs"][::-1]
                s["in_place"] = True
                break
        else:
            s["in_place"] = False


def _assign_slots(steps: list[dict], graph_input: int, outputs: list[int]) -> list[int]:
    """Rename tensors to a few reusable slots (0 is the input); return the outputs' slots."""
    last_use = {}
    for i, s in enumerate(steps):
        for t in s["inputs"]:
            last_use[t] = i
    slot_of, free, next_slot = {graph_input: 0}, [], 1
    for i, s in enumerate(steps):
        s["inputs"] = [slot_of[t] for t in s["inputs"]]
        for t in [t for t, last in last_use.items() if last == i and t not in outputs and t in slot_of]:
            free.append(slot_of.pop(t))
        slot_of[s["output"]] = free.pop() if free else next_slot
        next_slot = max(next_slot, slot_of[s["output"]] + 1)
        s["output"] = slot_of[s["output"]]
    return [slot_of[t] for t in outputs]


def build_plan(graph: TFLiteGraph) -> tuple[dict, dict[str, np.ndarray]]:
    """The executable plan of a graph (plain data) and its weights keyed by state-dict name."""
    if len(graph.inputs) != 1 or len(graph.tensors[graph.inputs[0]].shape) != 4:
        raise TFLiteError("expected one NHWC image input")
    if graph.tensors[graph.inputs[0]].shape[0] != 1:
        raise TFLiteError("expected an input of batch 1")
    lowering = _Lowering(graph)
    lowering.fold()
    steps = lowering.steps()
    outputs = [lowering.real(t) for t in graph.outputs]
    steps = _fuse_channel_pad_add(steps, outputs)
    _mark_in_place(steps, graph.inputs[0], outputs)
    weights = {}
    for i, s in enumerate(steps):
        for key in ("weight", "bias"):
            if f"_{key}" in s:
                weights[f"steps.{i}.{key}"] = s.pop(f"_{key}")
    output_nchw = [lowering.layout[t] == "nchw" for t in outputs]
    output_slots = _assign_slots(steps, graph.inputs[0], outputs)
    plan = {
        "format": PLAN_FORMAT,
        "input_shape": [int(v) for v in graph.tensors[graph.inputs[0]].shape[1:]],
        "output_names": [graph.tensors[t].name for t in graph.outputs],
        "output_slots": output_slots,
        "output_nchw": output_nchw,
        "num_slots": 1 + max([s["output"] for s in steps] + [0]),
        "steps": steps,
    }
    return plan, weights
