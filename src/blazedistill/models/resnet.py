"""Depthwise-free ResNet students: basic blocks with batch norm, a width multiplier, BN folding.

Only dense 3×3 and 1×1 convolutions, BN and ReLU, nearest upsampling and adds: the operators NPUs,
FPGAs and plain CPU GEMM kernels run well. The backbone is a 3×3 stride-2 stem and stride-2 stages of
basic blocks (3×3 conv-BN-ReLU → 3×3 conv-BN, plus the input or a 1×1 conv-BN projection, → ReLU)
until the grid is at most 8×8, then a light top-down path (1×1 conv-BN on the coarser map, nearest
upsample, add, ReLU) down to the finest anchor level, so the fine level sees the whole face. Widths
depend on the grid (16 channels at ≥48², 32 at ≥24², 64 at ≥12², 128 below) times ``width``.
Supports every layout: front/short_range (128), back (256) and full_range (192, one 48×48 level).
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from blazedistill.models.registry import register_student
from blazedistill.models.ssd import SSDStudent, anchor_levels
from blazedistill.specs import ModelSpec


class ConvBN(nn.Sequential):
    """Conv (no bias) → BatchNorm → optional ReLU; ``fold_batchnorm`` merges the first two."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, act: bool = True):
        super().__init__(
            OrderedDict(
                conv=nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
                bn=nn.BatchNorm2d(out_channels),
                act=nn.ReLU(inplace=True) if act else nn.Identity(),
            )
        )


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 conv-BN, identity or 1×1 conv-BN shortcut, ReLU after the add."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvBN(in_channels, out_channels, 3, stride)
        self.conv2 = ConvBN(out_channels, out_channels, 3, act=False)
        reshape = stride != 1 or in_channels != out_channels
        self.shortcut = ConvBN(in_channels, out_channels, 1, stride, act=False) if reshape else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


def grid_width(grid: int, width: float = 1.0) -> int:
    """Channels of a stage whose output grid is ``grid``, scaled by ``width``, rounded to a multiple of 8."""
    base = 16 if grid >= 48 else 32 if grid >= 24 else 64 if grid >= 12 else 128
    return max(8, int(base * width + 4) // 8 * 8)


class ResNetBackbone(nn.Module):
    """Stem + stride-2 stages of ``depth`` basic blocks + top-down merge; one feature map per anchor level."""

    def __init__(self, spec: ModelSpec, width: float = 1.0, depth: int = 1) -> None:
        super().__init__()
        if width <= 0 or depth < 1:
            raise ValueError(f"width must be > 0 and depth >= 1, got width={width}, depth={depth}")
        levels = anchor_levels(spec)
        size = spec.input_size
        self.level_strides = [level.stride for level in levels]
        stride = 2
        grid = -(-size // stride)
        channels = [grid_width(grid, width)]
        self.stem = ConvBN(3, channels[0], 3, stride=2)
        self.stages = nn.ModuleList()
        strides = [stride]
        while grid > 8 or stride < levels[-1].stride:
            stride, grid = stride * 2, -(-grid // 2)
            c_in, c_out = channels[-1], grid_width(grid, width)
            blocks = [BasicBlock(c_in, c_out, 2)] + [BasicBlock(c_out, c_out) for _ in range(depth - 1)]
            self.stages.append(nn.Sequential(*blocks))
            channels.append(c_out)
            strides.append(stride)
        if size % stride or any(level.stride not in strides for level in levels):
            raise ValueError(
                f"ResNet students need an input size divisible by {stride} and power-of-two anchor strides; "
                f"spec {spec.name!r} ({size}px, strides {self.level_strides}) is not supported"
            )
        self.stage_strides = strides
        finest = strides.index(levels[0].stride)
        # laterals[i] maps stage i+1's (merged) map onto stage i's channels, for finest <= i < last stage
        self.laterals = nn.ModuleDict(
            {str(i): ConvBN(channels[i + 1], channels[i], 1, act=False) for i in range(finest, len(strides) - 1)}
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = [self.stem(x)]
        for stage in self.stages:
            maps.append(stage(maps[-1]))
        merged = maps[-1]
        by_stride = {self.stage_strides[-1]: merged}
        for i in range(len(maps) - 2, -1, -1):
            if str(i) not in self.laterals:
                break
            top = F.interpolate(self.laterals[str(i)](merged), scale_factor=2.0, mode="nearest")
            merged = F.relu(maps[i] + top)
            by_stride[self.stage_strides[i]] = merged
        return [by_stride[s] for s in self.level_strides]


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """A copy of ``module`` in eval mode with every Conv2d → BatchNorm2d pair (inside nn.Sequential,
    e.g. ``ConvBN``) merged into one Conv2d with bias; the BN becomes ``nn.Identity``.

    Outputs equal the eval-mode original's up to float rounding.
    """
    folded = copy.deepcopy(module).eval()
    for parent in folded.modules():
        if not isinstance(parent, nn.Sequential):
            continue
        names = list(parent._modules)
        for conv_name, bn_name in zip(names, names[1:], strict=False):
            conv, bn = parent._modules[conv_name], parent._modules[bn_name]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                parent._modules[conv_name] = _folded_conv(conv, bn)
                parent._modules[bn_name] = nn.Identity()
    return folded


@torch.no_grad()
def _folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """conv followed by eval-mode bn, as one conv with bias."""
    if bn.running_var is None or bn.running_mean is None:
        raise ValueError("cannot fold a BatchNorm2d without running statistics")
    scale = bn.running_var.add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    fused = copy.deepcopy(conv)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = shift if conv.bias is None else conv.bias * scale + shift
    fused.bias = nn.Parameter(bias.to(conv.weight.dtype))
    return fused


def _resnet(spec: ModelSpec, width: float, depth: int) -> nn.Module:
    return SSDStudent(ResNetBackbone(spec, width, depth), spec)


@register_student("resnet10")
def resnet10(spec: ModelSpec, width: float = 1.0) -> nn.Module:
    """One basic block per stage (the default student)."""
    return _resnet(spec, width, 1)


@register_student("resnet10_w050")
def resnet10_w050(spec: ModelSpec) -> nn.Module:
    """resnet10 at half width."""
    return _resnet(spec, 0.5, 1)


@register_student("resnet10_w150")
def resnet10_w150(spec: ModelSpec) -> nn.Module:
    """resnet10 at 1.5× width."""
    return _resnet(spec, 1.5, 1)


@register_student("resnet18")
def resnet18(spec: ModelSpec, width: float = 1.0) -> nn.Module:
    """Two basic blocks per stage."""
    return _resnet(spec, width, 2)
