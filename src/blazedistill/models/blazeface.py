"""BlazeFace-topology students: ``blazeface`` (the front teacher's topology) and ``resnet_blazeface``.

``resnet_blazeface`` is the original distillation project's student: the front model's BlazeBlocks
and widths plus extra ResNet-style skips across blocks, each adding the input of its first block
(through a bias-free 1×1 conv where widths differ) to the post-ReLU output of its last block:
24→28 over blocks 0–1 (64²), 32→42 over 3–4 (32²), 48→80 over 6–9 (16²), and at 8² the output of
the stride-2 block 11 joins the outputs of blocks 13 and 15 (identity), as in the original code.

Layouts: 128 (front, short_range) as in the front model; 256 (back) gets one extra stride-2
BlazeBlock (24→24) after the stem, so the same blocks then run at the same resolutions as at 128 and
the outputs keep the 896-anchor layout. full_range (192, 2304 anchors) is not supported: use a
ResNet student.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blazedistill.models.registry import register_student
from blazedistill.models.ssd import SSDStudent, anchor_levels
from blazedistill.specs import ModelSpec

#: (in, out, stride) of the front model's BlazeBlocks; feature A is the output of block 10, B the last
FRONT_BLOCKS: tuple[tuple[int, int, int], ...] = (
    (24, 24, 1), (24, 28, 1),
    (28, 32, 2), (32, 36, 1), (36, 42, 1),
    (42, 48, 2), (48, 56, 1), (56, 64, 1), (64, 72, 1), (72, 80, 1), (80, 88, 1),
    (88, 96, 2), (96, 96, 1), (96, 96, 1), (96, 96, 1), (96, 96, 1),
)  # fmt: skip
FEATURE_A_BLOCK = 10
#: (first, last) block of each extra skip in resnet_blazeface: input of `first` joins output of `last`
RESNET_SKIPS: tuple[tuple[int, int], ...] = ((0, 1), (3, 4), (6, 9), (12, 13), (12, 15))


class BlazeBlock(nn.Module):
    """Depthwise 3×3 → pointwise 1×1 → add skip → ReLU; stride 2 pads (0, 2, 0, 2) and max-pools the skip."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        if stride not in (1, 2) or out_channels < in_channels:
            raise ValueError(f"BlazeBlock {in_channels}->{out_channels} stride {stride} is not supported")
        self.stride = stride
        self.extra_channels = out_channels - in_channels
        padding = 1 if stride == 1 else 0
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, stride, padding, groups=in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            branch, skip = F.pad(x, (0, 2, 0, 2)), F.max_pool2d(x, 2)
        else:
            branch, skip = x, x
        if self.extra_channels:
            skip = F.pad(skip, (0, 0, 0, 0, 0, self.extra_channels))
        return F.relu(self.pointwise(self.depthwise(branch)) + skip)


class BlazeFaceBackbone(nn.Module):
    """Front-topology backbone returning [16×16×88, 8×8×96]; optional cross-block ResNet skips.

    ``extra_stride2`` BlazeBlocks (24→24, stride 2) after the stem adapt larger inputs (1 for 256).
    """

    def __init__(self, extra_stride2: int = 0, skips: tuple[tuple[int, int], ...] = ()) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 24, 5, stride=2)
        self.downsample = nn.Sequential(*(BlazeBlock(24, 24, 2) for _ in range(extra_stride2)))
        self.blocks = nn.ModuleList(BlazeBlock(c_in, c_out, s) for c_in, c_out, s in FRONT_BLOCKS)
        self.skips = {last: first for first, last in skips}  # keyed by the skip's last block
        if len(self.skips) != len(skips):
            raise ValueError(f"two skips end at the same block: {skips}")
        self.projections = nn.ModuleDict()  # 1×1 conv without bias where widths differ, else Identity
        for first, last in skips:
            if not first <= last or any(FRONT_BLOCKS[i][2] != 1 for i in range(first, last + 1)):
                raise ValueError(f"skip over blocks {first}..{last} is empty or crosses a stride-2 block")
            c_in, c_out = FRONT_BLOCKS[first][0], FRONT_BLOCKS[last][1]
            self.projections[str(last)] = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.downsample(F.relu(self.stem(F.pad(x, (1, 2, 1, 2)))))
        block_inputs: list[torch.Tensor] = []
        features = []
        for i, block in enumerate(self.blocks):
            block_inputs.append(x)
            x = block(x)
            if i in self.skips:
                x = x + self.projections[str(i)](block_inputs[self.skips[i]])
            if i == FEATURE_A_BLOCK:
                features.append(x)
        features.append(x)
        return features


def _extra_stride2_for(spec: ModelSpec, student: str) -> int:
    """Extra stride-2 stages so the 16×16 / 8×8 (2 + 6 anchors) layout comes out; ValueError otherwise."""
    grids = [(level.grid, level.anchors_per_cell) for level in anchor_levels(spec)]
    extra = {128: 0, 256: 1}.get(spec.input_size)
    if grids != [(16, 2), (8, 6)] or extra is None:
        raise ValueError(
            f"student {student!r} supports the 128 and 256 layouts with 896 anchors (front, short_range, back); "
            f"spec {spec.name!r} ({spec.input_size}px, {spec.num_anchors} anchors) is not supported"
        )
    return extra


@register_student("blazeface")
def blazeface(spec: ModelSpec) -> nn.Module:
    """The front teacher's own topology and widths, from scratch (no extra skips)."""
    return SSDStudent(BlazeFaceBackbone(_extra_stride2_for(spec, "blazeface")), spec)


@register_student("resnet_blazeface")
def resnet_blazeface(spec: ModelSpec) -> nn.Module:
    """The original project's student: front topology plus cross-block ResNet skips."""
    extra = _extra_stride2_for(spec, "resnet_blazeface")
    return SSDStudent(BlazeFaceBackbone(extra, RESNET_SKIPS), spec)
