"""Letterbox: placement, normalisation, exact mapping back to original pixels, and input guards."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blazedistill.preprocess import Letterbox, letterbox, letterbox_batch, letterbox_params


def _solid(width: int, height: int, colour=(255, 0, 51)) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (height, width, 3)).copy()


def test_landscape_is_centred_with_black_border():
    tensor, box = letterbox(_solid(100, 50), 128)
    assert tensor.shape == (3, 128, 128) and tensor.dtype == torch.float32
    assert (box.pad_x, box.pad_y, box.scale_x, box.scale_y) == (0, 32, 1.28, 1.28)
    assert (tensor[:, :32] == -1).all() and (tensor[:, 96:] == -1).all()  # black = -1 after normalisation
    content = tensor[:, 32:96]
    assert torch.equal(content[0], torch.full((64, 128), 1.0))  # 255 / 127.5 - 1
    assert torch.equal(content[1], torch.full((64, 128), -1.0))
    assert torch.allclose(content[2], torch.full((64, 128), 51 / 127.5 - 1))


def test_portrait_pads_left_and_right():
    tensor, box = letterbox(_solid(30, 60), 64)
    assert (box.pad_x, box.pad_y) == (16, 0)
    assert (tensor[:, :, :16] == -1).all() and (tensor[:, :, 48:] == -1).all()
    assert (tensor[0, :, 16:48] == 1).all()


def test_to_pixels_inverts_the_letterbox():
    box = letterbox_params(100, 50, 128)
    assert np.allclose(box.to_pixels(np.array([0.5, 0.5])), [50, 25])
    assert np.allclose(box.to_pixels(np.array([[0.0, 0.25], [1.0, 0.75]])), [[0, 0], [100, 50]])
    points = np.array([[3.0, 7.0], [99.0, 0.5], [-20.0, 60.0]])  # outside the image maps linearly too
    normalised = np.stack(
        [(points[:, 0] * box.scale_x + box.pad_x) / 128, (points[:, 1] * box.scale_y + box.pad_y) / 128], -1
    )
    assert np.allclose(box.to_pixels(normalised), points)
    boxes = box.boxes_to_pixels(np.array([[0.0, 0.25, 1.0, 0.75]]))
    assert np.allclose(boxes, [[0, 0, 100, 50]])


def test_rounded_sizes_map_exactly():
    box = letterbox_params(49, 30, 128)  # 30 * 128 / 49 = 78.37 -> 78 rows: the y scale is 78 / 30
    assert (box.scale_x, box.scale_y, box.pad_x, box.pad_y) == (128 / 49, 78 / 30, 0, 25)
    assert np.allclose(box.to_pixels(np.array([1.0, (25 + 78) / 128])), [49, 30])


def test_rescaled_for_reduced_decoding():
    reduced = letterbox_params(1000, 750, 256)
    full = reduced.rescaled(8.0, 8000, 6000)
    assert (full.width, full.height) == (8000, 6000)
    assert np.allclose(full.to_pixels(np.array([0.5, 0.5])), [4000, 3000])
    assert np.allclose(full.to_pixels(np.array([0.5, 0.5])), reduced.to_pixels(np.array([0.5, 0.5])) * 8)


@pytest.mark.parametrize("size", [(1, 1), (49, 49), (1000, 1), (1, 700)])
def test_tiny_and_extreme_sizes(size):
    tensor, box = letterbox(_solid(*size), 128)
    assert tensor.shape == (3, 128, 128)
    assert (tensor[0] == 1).sum() >= 128 and tensor.min() == -1
    assert np.allclose(box.to_pixels(np.array([[0.5, 0.5]])), [[size[0] / 2, size[1] / 2]], atol=0.5 / box.scale_x)


def test_resized_content_is_bilinear_average():
    image = np.zeros((2, 2, 3), np.uint8)
    image[:, 1] = 255
    tensor, _ = letterbox(image, 4)  # 2x upscale: left column black, right white, interpolated between
    row = ((tensor[0, 0] + 1) * 127.5).round()
    assert row[0] == 0 and row[-1] == 255 and 0 < row[1] < row[2] < 255


def test_float_images_are_refused():
    with pytest.raises(ValueError, match=r"uint8.*\[0, 1\]"):
        letterbox(np.full((10, 10, 3), 0.5, np.float32), 128)
    with pytest.raises(ValueError, match="HxWx3"):
        letterbox(np.zeros((10, 10, 4), np.uint8), 128)
    with pytest.raises(TypeError, match="load_image"):
        letterbox(torch.zeros(10, 10, 3, dtype=torch.uint8), 128)


def test_read_only_and_non_contiguous_inputs():
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    view = image[:, ::-1]
    view.flags.writeable = False
    a, _ = letterbox(view, 64)
    b, _ = letterbox(np.ascontiguousarray(image[:, ::-1]), 64)
    assert torch.equal(a, b)


def test_batch_matches_single():
    images = [_solid(100, 50), _solid(20, 80, (0, 128, 255)), _solid(64, 64, (1, 2, 3))]
    batch, boxes = letterbox_batch(images, 64)
    assert batch.shape == (3, 3, 64, 64)
    for i, image in enumerate(images):
        single, box = letterbox(image, 64)
        assert torch.equal(batch[i], single) and box == boxes[i]
    assert isinstance(boxes[0], Letterbox)
