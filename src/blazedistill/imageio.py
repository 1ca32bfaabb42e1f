"""Image reading: any path, PIL image or HWC numpy array -> HxWx3 uint8 RGB, with clear errors.

Conventions (documented contract of `load_image`):
- EXIF orientation is applied; alpha is dropped (not composited); palette, grayscale, CMYK, YCbCr and
  LAB images are converted to RGB.
- 16-bit images (PIL modes ``I;16*``, ``I``; numpy ``uint16``) are scaled by 255/65535, never clipped;
  a 32-bit integer image (mode ``I``) whose values all lie in 0..255 is taken as 8-bit data.
- Float images (PIL mode ``F``, numpy float arrays) are read as [0, 1] when every value lies in [0, 1],
  else as [0, 255]; NaN/inf or values outside [0, 255] are refused.
- Other integer arrays must hold values in [0, 255].
"""

from __future__ import annotations

import os
import struct
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from blazedistill.messages import first_line

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

ImageSource = str | os.PathLike | Image.Image | np.ndarray

_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA", "RGBX")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class ImageLoadError(ValueError):
    """A file could not be read as an image; `str()` is one line naming the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class LoadedImage:
    """Decoded pixels plus the original size; `reduction` = original pixels per decoded pixel (JPEG draft)."""

    pixels: np.ndarray
    width: int
    height: int
    reduction: float = 1.0


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    if not np.isfinite(values).all():
        raise ValueError("float image contains NaN or infinite values")
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if lo < 0.0 or hi > 255.0:
        raise ValueError(f"float image values span [{lo:g}, {hi:g}]; expected [0, 1] or [0, 255]")
    factor = 255.0 if hi <= 1.0 else 1.0
    return np.rint(values.astype(np.float32) * factor).astype(np.uint8)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Any numeric array -> uint8 following the module's range conventions."""
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * 255
    if values.dtype == np.uint16:
        return np.rint(values.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    if np.issubdtype(values.dtype, np.floating):
        return _float_to_uint8(values)
    if np.issubdtype(values.dtype, np.integer):
        lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
        if lo < 0 or hi > 255:
            raise ValueError(
                f"{values.dtype} image values span [{lo}, {hi}]; expected [0, 255] (use uint16 for 16-bit data)"
            )
        return values.astype(np.uint8)
    raise ValueError(f"unsupported image dtype {values.dtype}")


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    """A loaded PIL image of any mode -> HxWx3 uint8 RGB."""
    mode = img.mode
    if mode == "RGB":
        return np.array(img)
    if mode in _SIXTEEN_BIT_MODES:
        gray = np.asarray(img).astype(np.int64)
        if gray.min() < 0 or gray.max() > 65535:
            raise ValueError(f"mode {mode} values span [{gray.min()}, {gray.max()}]; expected 16-bit [0, 65535]")
        if mode != "I" or gray.max() > 255:  # 32-bit "I" holding 0..255 (e.g. some TIFFs) is 8-bit data
            gray = np.rint(gray * (255.0 / 65535.0))
        gray = gray.astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        gray = _float_to_uint8(np.asarray(img))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # avoids Pillow's palette-transparency warning; alpha dropped below
    if img.mode in _ALPHA_MODES:
        rgba = np.asarray(img.convert("RGBA"))
        return np.ascontiguousarray(rgba[:, :, :3])
    return np.array(img.convert("RGB"))


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    if array.ndim != 3 or array.shape[2] != 3:
        hint = ""
        if array.ndim == 2:
            hint = " (grayscale? stack it: np.stack([a] * 3, axis=-1))"
        elif array.ndim == 3 and array.shape[2] == 4:
            hint = " (RGBA? drop alpha: a[..., :3])"
        elif array.ndim == 3 and array.shape[0] == 3:
            hint = " (CHW? transpose: a.transpose(1, 2, 0))"
        raise ValueError(f"expected an HxWx3 RGB array, got shape {array.shape}{hint}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"empty image array of shape {array.shape}")
    return np.ascontiguousarray(_to_uint8(array))


def _open_file(path: Path, min_size: int | None) -> LoadedImage:
    if path.is_dir():
        raise ImageLoadError(path, "is a directory")
    if not path.exists():
        raise ImageLoadError(path, "no such file")
    if path.stat().st_size == 0:
        raise ImageLoadError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():  # past Pillow's warning size, but under its limit: fine to load
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except UnidentifiedImageError:
        raise ImageLoadError(path, "not a recognised image format") from None
    except PermissionError:
        raise ImageLoadError(path, "permission denied") from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(path, f"too many pixels ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageLoadError(path, f"truncated or corrupt image data ({first_line(exc)})") from None
    with img:
        width, height = img.size
        reduction = 1.0
        try:
            if min_size and img.format == "JPEG":
                request = (min(min_size, width), min(min_size, height))
                drafted = img.draft(img.mode if img.mode in ("RGB", "L") else None, request)
                if drafted is not None:
                    reduction = width / drafted[1][2]
            img.load()
            oriented = ImageOps.exif_transpose(img)
        except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
            raise ImageLoadError(path, f"truncated or corrupt image data ({first_line(exc)})") from None
        try:
            pixels = _pil_to_rgb(oriented)
        except ValueError as exc:
            raise ImageLoadError(path, str(exc)) from None
    if oriented.size != img.size:  # rotated by 90 degrees
        width, height = height, width
    return LoadedImage(pixels, width, height, reduction)


def read_image(src: ImageSource, min_size: int | None = None) -> LoadedImage:
    """Read `src` as RGB uint8; with `min_size`, JPEG files may be decoded at a reduced size
    (both sides still >= min_size) and `reduction` says how to map pixels back to the original."""
    if isinstance(src, np.ndarray):
        pixels = _array_to_rgb(src)
        return LoadedImage(pixels, pixels.shape[1], pixels.shape[0])
    if isinstance(src, Image.Image):
        src.load()
        pixels = _pil_to_rgb(ImageOps.exif_transpose(src))
        return LoadedImage(pixels, pixels.shape[1], pixels.shape[0])
    if isinstance(src, (str, os.PathLike)):
        return _open_file(Path(src), min_size)
    raise TypeError(f"expected a path, PIL image or HxWx3 numpy array, got {type(src).__name__}")


def load_image(src: ImageSource) -> np.ndarray:
    """`src` (path, PIL image or HxWx3 array) -> HxWx3 uint8 RGB at full size (see module conventions).

    Raises ImageLoadError for unreadable files, ValueError for arrays of the wrong shape or range.
    """
    return read_image(src).pixels


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _scan_folder(folder: Path, recursive: bool) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        found.extend(Path(root) / f for f in files if _is_image_name(Path(f)))
    return sorted(found)


def list_images(paths: Iterable[str | os.PathLike], recursive: bool = True) -> tuple[list[Path], list[str]]:
    """Expand files and folders into image files; returns (images, problems).

    Folders contribute their image files (jpg, jpeg, png, bmp, webp, tif, tiff, any case; hidden names
    skipped), sorted; files named explicitly are kept whatever their suffix. Argument order is kept and
    duplicates are dropped. `problems` holds one line per missing path.
    """
    images: list[Path] = []
    problems: list[str] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = _scan_folder(path, recursive)
        elif path.exists():
            found = [path]
        else:
            problems.append(f"{path}: no such file or directory")
            continue
        for p in found:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                images.append(p)
    return images, problems
