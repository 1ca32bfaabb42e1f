"""Augmentation applied before the teacher sees an image (the teacher labels the result, so no label transforms).

Per image: random crop, horizontal flip, rotation and colour jitter; then either the keep-aspect letterbox
(black borders, as at inference) or, for zoom-out, pasting onto a larger canvas (a crop of another image,
smooth noise or a flat colour) at a random size and position, optionally with several faces; then blur,
noise and grayscale; finally normalisation to [-1, 1]. Every random choice comes from a generator seeded by
(seed, epoch, index), so a sample does not depend on the number of workers or the process rank.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

from ..preprocess import letterbox

ExtraImage = Callable[[], "Image.Image | None"]
"""Returns another decoded image of the data set (for backgrounds and extra faces), or None."""


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities (``*_p``) and ranges of each augmentation; ``AugmentConfig.preset(name)`` for presets."""

    crop_p: float = 0.3
    crop_scale: tuple[float, float] = (0.6, 1.0)  # side of the crop / side of the image
    flip_p: float = 0.5
    rotate_p: float = 0.4
    rotate_deg: float = 20.0
    canvas_p: float = 0.6  # zoom-out: paste onto a canvas instead of the plain letterbox
    face_scale: tuple[float, float] = (0.15, 1.0)  # longer side of a pasted image / canvas side, log-uniform
    multi_p: float = 0.3  # of canvas samples: paste 2..max_faces images
    max_faces: int = 4
    background_image_p: float = 0.5  # canvas background: a crop of another image, else noise or flat colour
    background_noise_p: float = 0.3
    color_p: float = 0.8
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    blur_p: float = 0.15
    blur_radius: tuple[float, float] = (0.3, 1.5)
    noise_p: float = 0.15
    noise_std: tuple[float, float] = (2.0, 10.0)  # in 0..255 units
    grayscale_p: float = 0.1

    @classmethod
    def preset(cls, name: str) -> AugmentConfig:
        """``default`` (training), ``none`` (validation: letterbox only) or ``seed`` (the original project's
        flip + rotation ±20°)."""
        if name == "default":
            return cls()
        if name == "none":
            return cls.none()
        if name == "seed":
            return replace(cls.none(), flip_p=0.5, rotate_p=1.0, rotate_deg=20.0)
        raise ValueError(f"unknown augmentation preset {name!r}; known: default, none, seed")

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation: the keep-aspect letterbox and normalisation only."""
        return cls(**{f.name: 0.0 for f in fields(cls) if f.name.endswith("_p")})

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> AugmentConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown augmentation settings: {', '.join(sorted(unknown))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def make_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for one sample: a function of (seed, epoch, index) only."""
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, index])


def augment(
    image: Image.Image,
    size: int,
    cfg: AugmentConfig,
    rng: np.random.Generator,
    extra: ExtraImage | None = None,
) -> torch.Tensor:
    """One training sample: float32 tensor (3, size, size) in [-1, 1] from an RGB image."""
    on_canvas = _happens(rng, cfg.canvas_p)
    image = _crop_flip(image, cfg, rng)
    if on_canvas:
        out = _compose_canvas(image, size, cfg, rng, extra)
    else:
        out = _degrade(_colour(_rotate(_fit(image, size), cfg, rng, expand=False), cfg, rng), cfg, rng)
    return letterbox(np.asarray(out), size)[0]  # the inference letterbox: black border, x / 127.5 - 1


# ----------------------------------------------------------------------------- pieces


def _happens(rng: np.random.Generator, p: float) -> bool:
    return p > 0 and rng.random() < p


def _fit(image: Image.Image, size: int) -> Image.Image:
    """Resize so the longer side is ``size`` (aspect kept)."""
    scale = size / max(image.size)
    new = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image if new == image.size else image.resize(new, Image.BILINEAR)


def _crop_flip(image: Image.Image, cfg: AugmentConfig, rng: np.random.Generator) -> Image.Image:
    if _happens(rng, cfg.crop_p):
        w, h = image.size
        side = rng.uniform(*cfg.crop_scale)
        cw, ch = max(1, round(w * side)), max(1, round(h * side))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        image = image.crop((x, y, x + cw, y + ch))
    if _happens(rng, cfg.flip_p):
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return image


def _rotate(image: Image.Image, cfg: AugmentConfig, rng: np.random.Generator, expand: bool) -> Image.Image:
    """Rotation about the centre; corners rotated in are black, or transparent (RGBA) with ``expand``."""
    if expand:
        image = image.convert("RGBA")
    if _happens(rng, cfg.rotate_p):
        angle = rng.uniform(-cfg.rotate_deg, cfg.rotate_deg)
        image = image.rotate(angle, resample=Image.BILINEAR, expand=expand)
    return image


def _colour(image: Image.Image, cfg: AugmentConfig, rng: np.random.Generator) -> Image.Image:
    """Brightness, contrast and saturation jitter in random order (alpha kept)."""
    if not _happens(rng, cfg.color_p):
        return image
    alpha = image.getchannel("A") if image.mode == "RGBA" else None
    rgb = image.convert("RGB")
    ops = [(ImageEnhance.Brightness, cfg.brightness), (ImageEnhance.Contrast, cfg.contrast),
           (ImageEnhance.Color, cfg.saturation)]
    for k in rng.permutation(len(ops)):
        enhancer, amount = ops[k]
        if amount > 0:
            rgb = enhancer(rgb).enhance(rng.uniform(1 - amount, 1 + amount))
    if alpha is not None:
        rgb.putalpha(alpha)
    return rgb


def _degrade(image: Image.Image, cfg: AugmentConfig, rng: np.random.Generator) -> Image.Image:
    """Blur, sensor noise, grayscale (RGB in, RGB out)."""
    if _happens(rng, cfg.blur_p):
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(*cfg.blur_radius)))
    if _happens(rng, cfg.noise_p):
        array = np.asarray(image, dtype=np.float32) + _gaussian_noise(image.size, rng.uniform(*cfg.noise_std), rng)
        image = Image.fromarray(np.clip(array + 0.5, 0, 255).astype(np.uint8))
    if _happens(rng, cfg.grayscale_p):
        image = image.convert("L").convert("RGB")
    return image


def _compose_canvas(
    image: Image.Image, size: int, cfg: AugmentConfig, rng: np.random.Generator, extra: ExtraImage | None
) -> Image.Image:
    """Zoom-out: the image (and maybe others) pasted at random sizes and positions onto a background."""
    canvas = _background(size, cfg, rng, extra)
    n_faces = int(rng.integers(2, cfg.max_faces + 1)) if cfg.max_faces >= 2 and _happens(rng, cfg.multi_p) else 1
    lo, hi = cfg.face_scale
    if n_faces > 1:
        hi = min(hi, max(lo, 0.6))
    sprites = [image]
    for _ in range(n_faces - 1):
        other = extra() if extra is not None else None
        if other is not None:
            sprites.append(_crop_flip(other, cfg, rng))
    for sprite in sprites:
        long_side = max(2, round(size * math.exp(rng.uniform(math.log(lo), math.log(hi)))))
        sprite = _colour(_rotate(_fit(sprite, long_side), cfg, rng, expand=True), cfg, rng)
        x = int(rng.integers(-sprite.width // 10, max(1, size - sprite.width + sprite.width // 10 + 1)))
        y = int(rng.integers(-sprite.height // 10, max(1, size - sprite.height + sprite.height // 10 + 1)))
        canvas.paste(sprite, (x, y), sprite)
    return _degrade(canvas, cfg, rng)


def _background(size: int, cfg: AugmentConfig, rng: np.random.Generator, extra: ExtraImage | None) -> Image.Image:
    """A crop of another image, smooth coloured noise, or a flat colour."""
    u = rng.random()
    if u < cfg.background_image_p and extra is not None:
        other = extra()
        if other is not None:
            w, h = other.size
            side = rng.uniform(0.3, 1.0) * min(w, h)
            x, y = rng.uniform(0, w - side), rng.uniform(0, h - side)
            crop = other.crop((round(x), round(y), round(x + side), round(y + side)))
            if _happens(rng, 0.5):
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            if _happens(rng, 0.5):  # out of focus, as behind a subject: through a smaller size
                blurred = max(4, round(size / rng.uniform(2.0, 6.0)))
                crop = crop.resize((blurred, blurred), Image.BILINEAR)
            return crop.resize((size, size), Image.BILINEAR)
    if u < cfg.background_image_p + cfg.background_noise_p:
        cells = int(rng.integers(2, 17))
        coarse = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
        smooth = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
        fine = _gaussian_noise((size, size), rng.uniform(0, 12), rng)
        return Image.fromarray(np.clip(np.asarray(smooth, dtype=np.float32) + fine, 0, 255).astype(np.uint8))
    return Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 256, 3)))


_NOISE_BANK: dict[int, np.ndarray] = {}


def _gaussian_noise(wh: tuple[int, int], std: float, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float32 N(0, std²) noise: a random window of a fixed bank (cheaper than fresh normals)."""
    w, h = wh
    side = 2 * max(w, h, 64)
    side = 1 << (side - 1).bit_length()
    bank = _NOISE_BANK.get(side)
    if bank is None:
        bank = _NOISE_BANK[side] = np.random.default_rng(0).standard_normal((side, side, 3), dtype=np.float32)
    y, x = int(rng.integers(0, side - h + 1)), int(rng.integers(0, side - w + 1))
    window = bank[y : y + h, x : x + w]
    if _happens(rng, 0.5):
        window = window[:, ::-1]
    return window * np.float32(std)
