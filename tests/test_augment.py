"""Augmentation: reproducibility, output contract, letterbox, zoom-out sizes, worker independence."""

from __future__ import annotations

import io
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from blazedistill.distill.augment import AugmentConfig, augment, make_rng
from blazedistill.distill.data import parse_sources
from blazedistill.distill.dataset import FaceImageDataset, FaceLoader
from blazedistill.preprocess import letterbox

PLAIN = AugmentConfig.none()


def _photo(seed: int, size=(90, 60)) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.BICUBIC)


def _sample(cfg: AugmentConfig, seed=0, epoch=0, index=0, size=64, image=None, extra=True) -> torch.Tensor:
    image = image if image is not None else _photo(index)
    rng = make_rng(seed, epoch, index)
    source = (lambda: _photo(int(rng.integers(1000)))) if extra else None
    return augment(image, size, cfg, rng, source)


def test_reproducible_from_seed_epoch_index():
    cfg = AugmentConfig.preset("default")
    for index in range(8):
        a = _sample(cfg, seed=1, epoch=2, index=index)
        assert torch.equal(a, _sample(cfg, seed=1, epoch=2, index=index))
    a = _sample(cfg, seed=1, epoch=2, index=3)
    assert not torch.equal(a, _sample(cfg, seed=1, epoch=2, index=4, image=_photo(3)))  # same picture, other index
    assert not torch.equal(a, _sample(cfg, seed=1, epoch=3, index=3))
    assert not torch.equal(a, _sample(cfg, seed=2, epoch=2, index=3))


@pytest.mark.parametrize("preset", ["default", "none", "seed"])
def test_output_shape_dtype_range(preset: str):
    cfg = AugmentConfig.preset(preset)
    for index, size in enumerate([(90, 60), (60, 90), (3, 2), (300, 300)]):
        out = _sample(cfg, index=index, image=_photo(index, size), size=128)
        assert out.shape == (3, 128, 128) and out.dtype == torch.float32
        assert out.min() >= -1.0 and out.max() <= 1.0


def test_none_preset_is_the_inference_letterbox():
    red = Image.new("RGB", (200, 100), (255, 0, 0))
    out = _sample(PLAIN, image=red, size=128, extra=False)
    # 200x100 -> 128x64 centred: rows 32..95 red, 32 black rows above and below
    assert torch.all(out[0, 32:96] == 1.0) and torch.all(out[1:, 32:96] == -1.0)
    assert torch.all(out[:, :32] == -1.0) and torch.all(out[:, 96:] == -1.0)
    for index, size in enumerate([(90, 60), (61, 97), (128, 128), (300, 40)]):
        photo = _photo(index, size)
        expected = letterbox(np.asarray(photo), 128)[0]
        assert torch.equal(_sample(PLAIN, index=index, image=photo, size=128), expected)


def test_zoom_out_pastes_at_the_configured_size():
    cfg = replace(PLAIN, canvas_p=1.0, face_scale=(0.25, 0.25), background_image_p=0.0, background_noise_p=0.0)
    white = Image.new("RGB", (100, 100), "white")
    for index in range(6):
        out = _sample(cfg, index=index, image=white, size=128, extra=False)
        is_white = (out == 1.0).all(dim=0)
        rows, cols = torch.nonzero(is_white, as_tuple=True)
        assert 0 < is_white.sum() <= 32 * 32
        assert rows.max() - rows.min() + 1 <= 32 and cols.max() - cols.min() + 1 <= 32
        background = out[:, 0, 0] if not is_white[0, 0] else out[:, -1, -1]
        assert torch.all(out[:, ~is_white] == background[:, None])  # a flat canvas outside the pasted image


def test_multi_face_canvas_draws_extra_images():
    cfg = replace(PLAIN, canvas_p=1.0, multi_p=1.0, max_faces=3, background_image_p=0.0)
    calls = []

    def extra():
        calls.append(1)
        return Image.new("RGB", (50, 50), "white")

    for index in range(10):
        calls.clear()
        augment(_photo(index), 64, cfg, make_rng(0, 0, index), extra)
        assert len(calls) in (1, 2)  # 2..3 faces: the sample itself plus 1..2 others


def test_rotation_fills_black_corners():
    cfg = replace(PLAIN, rotate_p=1.0, rotate_deg=20.0)
    out = _sample(cfg, image=Image.new("RGB", (64, 64), "white"), size=64, extra=False)
    assert torch.all(out[:, 0, 0] == -1.0) and torch.all(out[:, 32, 32] == 1.0)


def test_config_presets_and_dict_round_trip():
    cfg = AugmentConfig.preset("default")
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    assert AugmentConfig.preset("seed").rotate_p == 1.0 and AugmentConfig.preset("seed").canvas_p == 0.0
    with pytest.raises(ValueError, match="unknown augmentation preset"):
        AugmentConfig.preset("heavy")
    with pytest.raises(ValueError, match="unknown augmentation settings: zoom"):
        AugmentConfig.from_dict({"zoom": 2})


def test_same_samples_with_any_number_of_workers(tmp_path: Path):
    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tar:
        for i in range(10):
            buf = io.BytesIO()
            _photo(i).save(buf, format="JPEG")
            info = tarfile.TarInfo(f"{i}.jpg")
            info.size = buf.tell()
            buf.seek(0)
            tar.addfile(info, buf)
    dataset = FaceImageDataset(parse_sources([str(shard)]), 48, AugmentConfig(), seed=11)
    results = []
    for workers in (0, 2):
        loader = FaceLoader(dataset, batch_size=4, shuffle=True, seed=11, workers=workers)
        loader.set_epoch(1)
        batches = list(loader)
        results.append((torch.cat([b.indices for b in batches]), torch.cat([b.images for b in batches])))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    epoch0 = torch.stack([dataset[(0, i)].image for i in results[0][0].tolist()])
    assert not torch.equal(epoch0, results[0][1])
