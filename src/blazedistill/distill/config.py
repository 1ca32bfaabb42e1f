"""The whole distillation run as plain data: defaults, YAML load/save, dotted overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from blazedistill.messages import first_line


class ConfigError(ValueError):
    """A config file or override names an unknown key or holds a value of the wrong type."""


@dataclass
class ModelConfig:
    teacher: str = "front"  # teacher name for blazedistill.load_teacher
    student: str | None = None  # registered student architecture; None = the registry's default
    student_kwargs: dict = field(default_factory=dict)  # extra arguments for create_student


@dataclass
class DataConfig:
    train: list = field(default_factory=list)  # image sources; empty = the built-in demo set
    val: list = field(default_factory=list)  # explicit validation sources; empty = split off the training data
    val_fraction: float = 0.1  # share of the training data held out when no val source is given
    val_size: int | None = None  # use a fixed (seeded) subset of this many validation images
    workers: int = 2  # DataLoader worker processes
    augment: str = "default"  # augmentation preset: default, seed (flip + rotation only) or none
    augment_overrides: dict = field(default_factory=dict)  # AugmentConfig fields changed from the preset
    demo_train: int = 512  # augmented samples per epoch of the built-in demo set (used without --data)
    demo_val: int = 64  # augmented validation samples of the demo set
    preview: list = field(default_factory=list)  # photos for side_by_side/; empty = some validation images
    preview_count: int = 8  # how many side-by-side pictures to draw


@dataclass
class LossConfig:
    name: str = "detection"  # detection (default) or seed (the original project's README loss)
    kwargs: dict = field(default_factory=dict)  # extra arguments for get_loss


@dataclass
class OptimConfig:
    lr: float = 2e-3  # peak learning rate of AdamW
    min_lr_ratio: float = 0.05  # the cosine schedule ends at lr * min_lr_ratio
    weight_decay: float = 0.01  # AdamW weight decay (not applied to biases and norm weights)
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int | None = None  # linear warm-up steps; None = 5% of the run (at most 500)
    grad_clip: float = 2.0  # max gradient norm; 0 = no clipping
    ema_decay: float | None = None  # keep an EMA of the student with this decay (e.g. 0.998); None = off


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32  # per process
    max_steps: int | None = None  # stop after this many optimizer steps (the schedule spans them)
    time_limit: float | None = None  # stop after this many minutes (checked between steps)
    seed: int = 0
    device: str = "auto"  # auto (cuda, mps, cpu), or any torch device string
    amp: bool = True  # bf16 autocast for the student on CUDA
    channels_last: bool = True  # NHWC memory format (a large speed-up for these convs on CPU)
    threads: int | None = None  # torch.set_num_threads; None = torch's default
    save_every_steps: int = 500  # also write last.pt every this many steps
    val_every_steps: int | None = None  # also validate (and write checkpoints, plots) every this many steps
    log_every: int = 10  # steps between train-loss log rows
    out: str | None = None  # run folder; None = runs/<timestamp>


@dataclass
class ValConfig:
    student_min_score: float = 0.05  # student detections kept for AP (low, to trace the whole PR curve)
    teacher_min_score: float | None = None  # teacher detections taken as ground truth; None = its spec's threshold
    iou: float = 0.5  # IoU for a student detection to match a teacher detection
    confident: float = 0.5  # anchors with teacher probability above this count as teacher-positive
    metric: str = "ap50"  # best.pt is the checkpoint with the highest value of this metric
    calibrate: bool = True  # checkpoints carry the validation-calibrated threshold as the student's min_score


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    val: ValConfig = field(default_factory=ValConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> RunConfig:
        cfg = cls()
        for key, value in _flatten(d, source).items():
            cfg.set(key, value, source)
        return cfg

    def set(self, dotted: str, value: Any, source: str = "override") -> None:
        """Set one value by its dotted name (e.g. "optim.lr"), checking the key and the value's type."""
        section_name, _, key = dotted.partition(".")
        section = getattr(self, section_name, None)
        if not dataclasses.is_dataclass(section) or key not in {f.name for f in dataclasses.fields(section)}:
            raise ConfigError(f"{source}: unknown config key {dotted!r}; known: {', '.join(known_keys())}")
        annotation = {f.name: f.type for f in dataclasses.fields(section)}[key]
        setattr(section, key, _coerce(value, str(annotation), dotted, source))


    def validate(self) -> None:
        """Refuse values of the right type but outside their range (ConfigError naming the key)."""

        def check(ok: bool, key: str, rule: str) -> None:
            if not ok:
                section, _, name = key.partition(".")
                value = getattr(getattr(self, section), name)
                raise ConfigError(f"{key} must be {rule}, got {value!r}")

        t, o, d = self.train, self.optim, self.data
        check(t.epochs >= 1, "train.epochs", ">= 1")
        check(t.batch_size >= 1, "train.batch_size", ">= 1")
        check(t.max_steps is None or t.max_steps >= 1, "train.max_steps", ">= 1 (or null for no limit)")
        check(t.time_limit is None or t.time_limit > 0, "train.time_limit", "> 0 minutes (or null)")
        check(t.threads is None or t.threads >= 1, "train.threads", ">= 1 (or null)")
        check(t.val_every_steps is None or t.val_every_steps >= 1, "train.val_every_steps", ">= 1 (or null)")
        check(d.workers >= 0, "data.workers", ">= 0")
        check(o.lr >= 0, "optim.lr", ">= 0")
        check(o.ema_decay is None or 0 < o.ema_decay < 1, "optim.ema_decay", "in (0, 1) (or null for no EMA)")
        check(
            len(o.betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in o.betas),
            "optim.betas",
            "two numbers in [0, 1)",
        )


def known_keys() -> list[str]:
    """Every dotted config key."""
    cfg = RunConfig()
    return [f"{s.name}.{f.name}" for s in dataclasses.fields(cfg) for f in dataclasses.fields(getattr(cfg, s.name))]


def _flatten(d: dict, source: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(d).__name__}")
    flat = {}
    for section, values in d.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {section!r} must be a mapping, got {type(values).__name__}")
        for key, value in values.items():
            flat[f"{section}.{key}"] = value
    return flat


_TYPES = {"bool": bool, "int": int, "float": float, "str": str, "list": list, "dict": dict}


def _coerce(value: Any, annotation: str, dotted: str, source: str) -> Any:
    """Check `value` against the field's annotation ("float", "int | None", ...); ints pass as floats."""
    optional = annotation.endswith("| None")
    kind = _TYPES[annotation.split("|")[0].strip()]
    if value is None and optional:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is list and isinstance(value, (tuple, str)):
        return list(value) if isinstance(value, tuple) else [value]
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    expected = f"{kind.__name__} or null" if optional else kind.__name__
    raise ConfigError(f"{source}: {dotted} must be {expected}, got {value!r}")


def load_config(path: str | Path) -> RunConfig:
    """Read a run config from YAML; missing keys keep their defaults, unknown keys are an error."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({first_line(exc)})") from None
    return RunConfig.from_dict(data, source=str(path))


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (readable back by load_config)."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
