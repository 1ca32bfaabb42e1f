"""Annotated copies of images: box, score and the 6 keypoints of every detection."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from blazedistill.detector import Detection
from blazedistill.imageio import ImageSource, load_image

BOX_COLOUR = (0, 255, 0)
#: right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion
KEYPOINT_COLOURS = ((255, 0, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255), (255, 128, 0))


@lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def draw_detections(image: ImageSource, detections: Sequence[Detection]) -> Image.Image:
    """An RGB copy of `image` with each detection's box, score and keypoints drawn (sizes scale with the image)."""
    canvas = Image.fromarray(load_image(image))
    pen = ImageDraw.Draw(canvas)
    extent = max(canvas.size)
    width = max(1, round(extent / 300))
    radius = max(2, round(extent / 200))
    for det in detections:
        xmin, ymin, xmax, ymax = (float(v) for v in det.box)
        pen.rectangle((xmin, ymin, xmax, ymax), outline=BOX_COLOUR, width=width)
        for (x, y), colour in zip(np.asarray(det.keypoints, dtype=float), KEYPOINT_COLOURS, strict=True):
            pen.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour, outline=(0, 0, 0))
        label = f"{det.score:.2f}"
        font = _font(round(min(max(10, (ymax - ymin) / 6), max(10, extent / 40))))  # fits the face and image
        _, _, text_w, text_h = pen.textbbox((0, 0), label, font=font)
        label_w, label_h = text_w + 2 * width, text_h + 2 * width
        lx = max(0.0, xmin)
        ly = ymin - label_h if ymin >= label_h else max(0.0, ymin)  # above the box, else inside it
        pen.rectangle((lx, ly, lx + label_w, ly + label_h), fill=BOX_COLOUR)
        pen.text((lx + width, ly + width), label, fill=(0, 0, 0), font=font)
    return canvas
