"""MediaPipe-style input preparation: keep-aspect letterbox to S x S, RGB in [-1, 1], and the way back.

Inputs are HxWx3 uint8 RGB arrays (as `blazedistill.imageio.load_image` returns). Float arrays are
refused on purpose: an image already scaled to [0, 1] would otherwise "work" with lowered scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class Letterbox:
    """Where an image of `width` x `height` pixels sits in the S x S model input.

    Model-input pixel u = scale_x * x + pad_x for an original-image pixel coordinate x (edges at integers).
    """

    size: int
    width: int
    height: int
    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int

    def to_pixels(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) coordinates normalised to the model input -> (x, y) in original-image pixels."""
        points = np.asarray(points, dtype=np.float64)
        x = (points[..., 0] * self.size - self.pad_x) / self.scale_x
        y = (points[..., 1] * self.size - self.pad_y) / self.scale_y
        return np.stack([x, y], axis=-1)

    def boxes_to_pixels(self, boxes: np.ndarray) -> np.ndarray:
        """(..., 4) normalised (xmin, ymin, xmax, ymax) -> original-image pixels."""
        boxes = np.asarray(boxes, dtype=np.float64)
        corners = self.to_pixels(boxes.reshape(*boxes.shape[:-1], 2, 2))
        return corners.reshape(boxes.shape)

    def rescaled(self, reduction: float, width: int, height: int) -> Letterbox:
        """The same letterbox for an image decoded `reduction` times smaller than its `width` x `height`."""
        return Letterbox(
            self.size, width, height, self.scale_x / reduction, self.scale_y / reduction, self.pad_x, self.pad_y
        )


def letterbox_params(width: int, height: int, size: int) -> Letterbox:
    """Scale the longer side to `size` (aspect kept, sides rounded, at least 1 px) and centre."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    scale = size / max(width, height)
    new_w = min(size, max(1, round(width * scale)))
    new_h = min(size, max(1, round(height * scale)))
    return Letterbox(size, width, height, new_w / width, new_h / height, (size - new_w) // 2, (size - new_h) // 2)


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected an HxWx3 uint8 numpy array, got {type(image).__name__}; use load_image()")
    if image.dtype != np.uint8:
        raise ValueError(
            f"expected uint8 pixels in [0, 255], got {image.dtype}; floats (e.g. already in [0, 1]) "
            "must go through blazedistill.imageio.load_image() or be converted explicitly"
        )
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"expected an HxWx3 RGB array, got shape {image.shape}")


def letterbox_into(out: np.ndarray, image: np.ndarray, size: int) -> Letterbox:
    """Write the letterboxed, normalised `image` into `out` ((3, size, size) float32); returns its Letterbox.

    Plain numpy (no torch threads), so it runs well in decoding worker threads.
    """
    _check_image(image)
    box = letterbox_params(image.shape[1], image.shape[0], size)
    new_w, new_h = round(box.scale_x * box.width), round(box.scale_y * box.height)
    if (new_w, new_h) != (box.width, box.height):
        image = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR))
    out.fill(-1.0)
    region = out[:, box.pad_y : box.pad_y + new_h, box.pad_x : box.pad_x + new_w]
    np.divide(image.transpose(2, 0, 1), np.float32(127.5), out=region, dtype=np.float32)
    region -= np.float32(1.0)
    return box


def letterbox(image: np.ndarray, size: int) -> tuple[torch.Tensor, Letterbox]:
    """HxWx3 uint8 RGB -> ((3, size, size) float32 in [-1, 1], black border = -1; Letterbox)."""
    out = np.empty((3, size, size), np.float32)
    box = letterbox_into(out, image, size)
    return torch.from_numpy(out), box


def letterbox_batch(images: Sequence[np.ndarray], size: int) -> tuple[torch.Tensor, list[Letterbox]]:
    """Several HxWx3 uint8 RGB images -> ((N, 3, size, size) float32, list of Letterbox)."""
    out = np.empty((len(images), 3, size, size), np.float32)
    boxes = [letterbox_into(out[i], image, size) for i, image in enumerate(images)]
    return torch.from_numpy(out), boxes
