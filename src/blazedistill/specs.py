"""Per-model facts: input size, anchor layout and default score threshold (MediaPipe's settings)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class AnchorOptions:
    """Options of MediaPipe's SsdAnchorsCalculator (only the ones BlazeFace uses)."""

    input_size: int
    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float = 1.0
    anchor_offset: float = 0.5
    fixed_anchor_size: bool = True

    def to_dict(self) -> dict:
        return {**asdict(self), "strides": list(self.strides)}

    @classmethod
    def from_dict(cls, d: dict) -> AnchorOptions:
        return cls(**{**d, "strides": tuple(d["strides"])})


@dataclass(frozen=True)
class ModelSpec:
    """What a detector needs to know about a model with a BlazeFace output contract."""

    name: str
    input_size: int
    anchors: AnchorOptions
    min_score: float
    num_anchors: int
    nms_iou: float = 0.3
    model_file: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict:
        return {**asdict(self), "anchors": self.anchors.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        return cls(**{**d, "anchors": AnchorOptions.from_dict(d["anchors"])})


_FRONT_ANCHORS = AnchorOptions(input_size=128, strides=(8, 16, 16, 16))
_BACK_ANCHORS = AnchorOptions(input_size=256, strides=(16, 32, 32, 32))
_FULL_ANCHORS = AnchorOptions(input_size=192, strides=(4,), interpolated_scale_aspect_ratio=0.0)

TEACHER_SPECS: dict[str, ModelSpec] = {
    "front": ModelSpec("front", 128, _FRONT_ANCHORS, 0.75, 896, model_file="face_detection_front.tflite"),
    "short_range": ModelSpec(
        "short_range", 128, _FRONT_ANCHORS, 0.5, 896, model_file="face_detection_front.tflite"
    ),
    "back": ModelSpec("back", 256, _BACK_ANCHORS, 0.65, 896, model_file="face_detection_back.tflite"),
    "full_range": ModelSpec(
        "full_range", 192, _FULL_ANCHORS, 0.6, 2304, model_file="face_detection_full_range.tflite"
    ),
    "full_range_sparse": ModelSpec(
        "full_range_sparse",
        192,
        _FULL_ANCHORS,
        0.6,
        2304,
        model_file="face_detection_full_range_sparse.tflite",
    ),
}


def teacher_spec(name: str) -> ModelSpec:
    """The spec of a teacher by name; raises ValueError listing the known names."""
    try:
        return TEACHER_SPECS[name]
    except KeyError:
        raise ValueError(f"unknown teacher {name!r}; known: {', '.join(TEACHER_SPECS)}") from None
