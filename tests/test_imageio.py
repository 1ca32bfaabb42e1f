"""Image reading: every mode, orientation, range and broken-file case, on images generated here."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from blazedistill.imageio import ImageLoadError, list_images, load_image, read_image


def _quadrants(width: int = 40, height: int = 20) -> np.ndarray:
    """Red left half, blue right half (stored orientation)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (255, 0, 0)
    image[:, width // 2 :] = (0, 0, 255)
    return image


def _save_with_orientation(path, pixels: np.ndarray, orientation: int) -> None:
    img = Image.fromarray(pixels)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, exif=exif, quality=95)


# ---- EXIF orientation ----------------------------------------------------------------------------------


def test_exif_orientation_6_rotates_clockwise(tmp_path):
    path = tmp_path / "rotated.jpg"
    _save_with_orientation(path, _quadrants(), 6)  # display = stored rotated 90 degrees clockwise
    image = load_image(path)
    assert image.shape == (40, 20, 3)
    top, bottom = image[:15].reshape(-1, 3).mean(0), image[25:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 50  # the stored left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 50


def test_exif_orientation_3_and_pil_input(tmp_path):
    path = tmp_path / "upside_down.jpg"
    _save_with_orientation(path, _quadrants(), 3)  # rotated 180 degrees
    for src in (path, Image.open(path)):
        image = load_image(src)
        assert image.shape == (20, 40, 3)
        assert image[:, :15, 2].mean() > 200 and image[:, 25:, 0].mean() > 200


def test_exif_rotation_reports_display_size_with_draft(tmp_path):
    path = tmp_path / "big_rotated.jpg"
    _save_with_orientation(path, np.full((600, 1000, 3), 90, np.uint8), 6)
    loaded = read_image(path, min_size=100)
    assert (loaded.width, loaded.height) == (600, 1000)
    assert loaded.reduction == 4.0
    assert loaded.pixels.shape == (250, 150, 3)


# ---- PIL modes -----------------------------------------------------------------------------------------


def test_grayscale_and_one_bit(tmp_path):
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(gray).save(tmp_path / "g.png")
    image = load_image(tmp_path / "g.png")
    assert image.shape == (16, 16, 3)
    assert (image == gray[:, :, None]).all()
    bits = Image.fromarray(gray > 127).convert("1")
    assert set(np.unique(load_image(bits))) == {0, 255}


def test_palette_with_and_without_transparency(tmp_path):
    rgb = _quadrants()
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    pal.save(tmp_path / "p.png")
    assert (load_image(tmp_path / "p.png") == rgb).all()
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pt.png", transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no palette-transparency warning from Pillow
        image = load_image(tmp_path / "pt.png")
    assert (image == rgb).all()  # alpha dropped, colours kept


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_dropped_not_composited(tmp_path, mode):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 0  # fully transparent: compositing would change the colour, dropping keeps 200
    img = Image.fromarray(rgba, "RGBA").convert(mode)
    img.save(tmp_path / "a.png")
    assert (load_image(tmp_path / "a.png") == 200).all()


def test_cmyk_jpeg_and_tiff(tmp_path):
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red
    for name in ("c.jpg", "c.tif"):
        cmyk.save(tmp_path / name, quality=100)
        image = load_image(tmp_path / name).astype(int)
        assert image.shape == (16, 16, 3)
        assert image[..., 0].min() > 240 and image[..., 1:].max() < 15, name


@pytest.mark.parametrize("suffix", ["png", "tif"])
def test_sixteen_bit_is_scaled_not_clipped(tmp_path, suffix):
    values = np.array([[0, 1000, 32768, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / f"g16.{suffix}")
    image = load_image(tmp_path / f"g16.{suffix}")
    assert image.dtype == np.uint8 and image.shape == (1, 4, 3)
    assert image[0, :, 0].tolist() == [0, 4, 128, 255]  # clipping would give 255 for 1000


def test_thirty_two_bit_integer_mode():
    img = Image.fromarray(np.array([[0, 65535]], np.int32), "I")
    assert load_image(img)[0, :, 1].tolist() == [0, 255]
    with pytest.raises(ValueError, match="16-bit"):
        load_image(Image.fromarray(np.array([[0, 70000]], np.int32), "I"))


def test_thirty_two_bit_tiff_holding_eight_bit_values_is_not_darkened(tmp_path):
    Image.fromarray(np.array([[0, 100, 255]], np.int32), "I").save(tmp_path / "i32.tif")
    assert load_image(tmp_path / "i32.tif")[0, :, 0].tolist() == [0, 100, 255]


def test_float_tiff_in_both_ranges(tmp_path):
    unit = np.array([[0.0, 0.5, 1.0]], np.float32)
    Image.fromarray(unit, "F").save(tmp_path / "unit.tif")
    assert load_image(tmp_path / "unit.tif")[0, :, 0].tolist() == [0, 128, 255]
    Image.fromarray(unit * 200, "F").save(tmp_path / "byte.tif")
    assert load_image(tmp_path / "byte.tif")[0, :, 0].tolist() == [0, 100, 200]
    Image.fromarray(np.array([[0.0, 300.0]], np.float32), "F").save(tmp_path / "bad.tif")
    with pytest.raises(ImageLoadError, match=r"bad\.tif: float image values span \[0, 300\]"):
        load_image(tmp_path / "bad.tif")


# ---- numpy input ---------------------------------------------------------------------------------------


def test_uint8_array_passes_through():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert (load_image(rgb) == rgb).all()


@pytest.mark.parametrize(
    "view",
    [lambda a: a[::2, ::3], lambda a: a[:, :, ::-1], lambda a: a[::-1], lambda a: a.transpose(1, 0, 2)],
    ids=["strided", "bgr", "flipped", "transposed"],
)
def test_non_contiguous_views(view):
    rgb = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    v = view(rgb)
    assert not v.flags.c_contiguous
    out = load_image(v)
    assert out.flags.c_contiguous and (out == np.ascontiguousarray(v)).all()


@pytest.mark.parametrize(
    ("shape", "hint"), [((10, 10), "grayscale"), ((10, 10, 4), "RGBA"), ((3, 10, 10), "CHW"), ((10, 10, 1), "")]
)
def test_wrong_array_shapes_raise(shape, hint):
    with pytest.raises(ValueError, match=rf"HxWx3.*{hint}"):
        load_image(np.zeros(shape, np.uint8))


def test_array_dtypes():
    assert load_image(np.full((2, 2, 3), 0.5, np.float32))[0, 0, 0] == 128
    assert load_image(np.full((2, 2, 3), 65535, np.uint16))[0, 0, 0] == 255
    assert load_image(np.full((2, 2, 3), 42, np.int64))[0, 0, 0] == 42
    with pytest.raises(ValueError, match="NaN"):
        load_image(np.full((2, 2, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match="span"):
        load_image(np.full((2, 2, 3), -0.5, np.float64))
    with pytest.raises(ValueError, match="uint16"):
        load_image(np.full((2, 2, 3), 300, np.int32))
    with pytest.raises(TypeError):
        load_image([[1, 2, 3]])


# ---- sizes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1), (49, 49)])
def test_tiny_images(tmp_path, size):
    Image.new("RGB", size, (10, 20, 30)).save(tmp_path / "t.png")
    image = load_image(tmp_path / "t.png")
    assert image.shape == (size[1], size[0], 3) and (image == (10, 20, 30)).all()


def test_large_jpeg_full_and_draft(tmp_path):
    path = tmp_path / "huge.jpg"
    big = Image.new("RGB", (8000, 6000), (120, 60, 30))
    big.paste((250, 250, 250), (4000, 3000, 8000, 6000))
    big.save(path, quality=90)
    full = read_image(path)
    assert full.pixels.shape == (6000, 8000, 3) and full.reduction == 1.0
    small = read_image(path, min_size=256)
    assert (small.width, small.height) == (8000, 6000)
    assert small.reduction == 8.0 and small.pixels.shape == (750, 1000, 3)
    # the bright quadrant starts at original pixel 4000 = decoded pixel 500
    assert small.pixels[600, 490:495, 0].max() < 160 and small.pixels[600, 505:510, 0].min() > 240
    assert small.pixels[360:370, 700, 0].max() < 160 and small.pixels[380:390, 700, 0].min() > 240


# ---- broken files --------------------------------------------------------------------------------------


def _assert_one_line_error(path, reason: str) -> None:
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)) and reason in message
    assert info.value.path == str(path)


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    _assert_one_line_error(tmp_path / "empty.jpg", "empty file")


def test_non_image_file(tmp_path):
    (tmp_path / "notes.jpg").write_text("this is not a picture\n")
    _assert_one_line_error(tmp_path / "notes.jpg", "not a recognised image format")


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp", "tif", "bmp"])
def test_truncated_files(tmp_path, fmt):
    pixels = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / f"full.{fmt}")
    data = (tmp_path / f"full.{fmt}").read_bytes()
    (tmp_path / f"cut.{fmt}").write_bytes(data[: len(data) // 2])
    _assert_one_line_error(tmp_path / f"cut.{fmt}", "corrupt")


def test_missing_file_and_directory(tmp_path):
    _assert_one_line_error(tmp_path / "nope.png", "no such file")
    _assert_one_line_error(tmp_path, "is a directory")


# ---- listing -------------------------------------------------------------------------------------------


def test_list_images(tmp_path):
    for rel in ["b.JPG", "a.png", "sub/c.Tiff", "sub/deeper/d.webp", "sub/e.bmp", "x.txt", ".hidden.jpg", "f.jpeg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    (tmp_path / "odd.gif").write_bytes(b"x")
    images, problems = list_images([tmp_path, tmp_path / "odd.gif", tmp_path / "missing", tmp_path / "a.png"])
    names = [p.relative_to(tmp_path).as_posix() for p in images]
    assert names == ["a.png", "b.JPG", "f.jpeg", "sub/c.Tiff", "sub/deeper/d.webp", "sub/e.bmp", "odd.gif"]
    assert problems == [f"{tmp_path / 'missing'}: no such file or directory"]
    flat, _ = list_images([tmp_path], recursive=False)
    assert [p.name for p in flat] == ["a.png", "b.JPG", "f.jpeg"]


def test_image_past_the_decompression_warning_size_loads_without_a_warning(tmp_path):
    import warnings

    side = int((Image.MAX_IMAGE_PIXELS + 1) ** 0.5) + 1  # just past Pillow's warning size, under its limit
    Image.new("RGB", (side, side), (90, 120, 150)).save(tmp_path / "big.jpg", quality=50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = load_image(tmp_path / "big.jpg")
    assert image.shape[2] == 3 and image[0, 0].tolist() == pytest.approx([90, 120, 150], abs=3)
