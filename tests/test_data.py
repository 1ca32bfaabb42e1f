"""Data sources, decoding, skipping of unreadable items, validation split, loaders and the demo set."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from blazedistill.distill.augment import AugmentConfig
from blazedistill.distill.data import (
    ImageRef,
    SourceError,
    UnreadableImage,
    expand_braces,
    parse_sources,
    read_image,
    split_refs,
)
from blazedistill.distill.dataset import (
    EpochSampler,
    FaceImageDataset,
    FaceLoader,
    build_dataloaders,
)
from blazedistill.distill.demo import demo_refs, find_demo_photos


def _image(seed: int, size=(40, 30)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _encoded(image: Image.Image, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def bad_shard(tmp_path: Path) -> Path:
    """5 good JPEGs, a corrupt one, a truncated one, a zero-byte one and a JSON sidecar."""
    members = {f"good{i}.jpg": _encoded(_image(i)) for i in range(5)}
    members["corrupt.jpg"] = b"this is not an image at all" * 10
    members["truncated.jpg"] = _encoded(_image(99, (200, 150)))[:400]
    members["empty.jpg"] = b""
    members["good0.json"] = b'{"label": 1}'
    return _write_tar(tmp_path / "bad-00000.tar", members)


def test_expand_braces():
    assert expand_braces("s-{00000..00002}.tar") == ["s-00000.tar", "s-00001.tar", "s-00002.tar"]
    assert expand_braces("{a,b}{1..2}") == ["a1", "a2", "b1", "b2"]
    assert expand_braces("x{1..7..3}") == ["x1", "x4", "x7"]
    assert expand_braces("x{3..1}") == ["x3", "x2", "x1"]
    assert expand_braces("{a,{b,c}}") == ["a", "b", "c"]
    assert expand_braces("plain{word}.jpg") == ["plain{word}.jpg"]
    assert expand_braces("open{1..2") == ["open{1..2"]


def test_folder_recursive_all_formats(tmp_path: Path):
    formats = {"a.jpg": "JPEG", "b.JPEG": "JPEG", "sub/c.png": "PNG", "sub/deeper/d.bmp": "BMP",
               "sub/e.webp": "WEBP", "f.tif": "TIFF", "g.tiff": "TIFF"}
    for i, (name, fmt) in enumerate(formats.items()):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        _image(i).save(tmp_path / name, format=fmt)
    (tmp_path / "notes.txt").write_text("not an image source inside a folder")
    (tmp_path / ".hidden.jpg").write_bytes(b"junk")
    refs = parse_sources([str(tmp_path)])
    assert sorted(os.path.relpath(r.path, tmp_path) for r in refs) == sorted(formats)
    for ref in refs:
        assert read_image(ref).size == (40, 30)


def test_tar_members_read_by_offset_without_extracting(tmp_path: Path, monkeypatch):
    originals = {f"k{i}.png": _image(i) for i in range(3)}
    members = {name: _encoded(im, "PNG") for name, im in originals.items()}
    members["../escape.jpg"] = _encoded(_image(7))
    shard = _write_tar(tmp_path / "shard.tar", members)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    refs = parse_sources([str(shard)])
    assert [r.member for r in refs] == [*originals, "../escape.jpg"]
    for ref in refs[:3]:
        assert ref.path == str(shard) and ref.size == len(members[ref.member])
        np.testing.assert_array_equal(np.asarray(read_image(ref)), np.asarray(originals[ref.member]))
    read_image(refs[3])
    assert list(work.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "shard.tar"]


def test_unreadable_tar_members(bad_shard: Path):
    notes = []
    refs = parse_sources([str(bad_shard)], log=notes.append)
    assert len(refs) == 8
    assert notes == [f"{bad_shard}: 1 non-image members ignored"]
    reasons = {}
    for ref in refs:
        try:
            read_image(ref)
        except UnreadableImage as e:
            reasons[ref.member] = str(e)
    assert set(reasons) == {"corrupt.jpg", "truncated.jpg", "empty.jpg"}
    assert reasons["empty.jpg"] == "empty (0 bytes)"
    assert reasons["corrupt.jpg"] == "not an image (unrecognised format)"
    assert reasons["truncated.jpg"].startswith("OSError: ")  # PIL: "Truncated File Read" or "image file is truncated"


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_skips_and_reports_once(bad_shard: Path, workers: int):
    refs = parse_sources([str(bad_shard)])
    notes: list[str] = []
    dataset = FaceImageDataset(refs, 32, AugmentConfig.preset("default"), seed=3)
    loader = FaceLoader(dataset, batch_size=3, shuffle=True, seed=3, workers=workers, log=notes.append)
    for epoch in range(2):
        loader.set_epoch(epoch)
        seen = [i for batch in loader for i in batch.indices.tolist()]
        assert sorted(refs[i].member for i in seen) == [f"good{i}.jpg" for i in range(5)]
    assert loader.skipped_count == 3
    assert sorted(notes) == sorted(
        f"skipped unreadable image {bad_shard}:{name}: {loader.skipped[f'{bad_shard}:{name}']}"
        for name in ("corrupt.jpg", "truncated.jpg", "empty.jpg")
    )


def test_brace_glob_and_list_sources(tmp_path: Path):
    for s in range(3):
        _write_tar(tmp_path / f"shard-{s:05d}.tar", {f"s{s}_{i}.jpg": _encoded(_image(10 * s + i)) for i in range(2)})
    braced = parse_sources([str(tmp_path / "shard-{00000..00002}.tar")])
    assert [r.member for r in braced] == ["s0_0.jpg", "s0_1.jpg", "s1_0.jpg", "s1_1.jpg", "s2_0.jpg", "s2_1.jpg"]
    assert parse_sources([str(tmp_path / "shard-*.tar")]) == braced
    with pytest.raises(SourceError, match="shard-00003.tar does not exist"):
        parse_sources([str(tmp_path / "shard-{00002..00003}.tar")])
    with pytest.raises(SourceError, match="matches no file"):
        parse_sources([str(tmp_path / "nothing-*.tar")])

    photos = tmp_path / "photos"
    photos.mkdir()
    _image(1).save(photos / "one.jpg")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "inner.txt").write_text("../photos/one.jpg\n")
    (lists / "all.txt").write_text("# comment\n\n../shard-00001.tar\n../photos/one.jpg\ninner.txt\n")
    refs = parse_sources([str(lists / "all.txt")])
    assert [r.key for r in refs] == [
        f"{tmp_path}/shard-00001.tar:s1_0.jpg", f"{tmp_path}/shard-00001.tar:s1_1.jpg",
        f"{photos}/one.jpg", f"{photos}/one.jpg",
    ]
    (lists / "broken.txt").write_text("../photos/one.jpg\n../photos/missing.jpg\n")
    with pytest.raises(SourceError, match=r"broken.txt:2: .*missing.jpg does not exist"):
        parse_sources([str(lists / "broken.txt")])


def test_bad_specs_are_clear_errors(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "data.csv").write_text("x")
    (tmp_path / "a.tar.gz").write_bytes(b"\x1f\x8b")
    (tmp_path / "fake.tar").write_bytes(b"not a tar" * 100)
    cases = {"empty": "holds no image", "data.csv": "unknown kind", "a.tar.gz": "compressed tar",
             "fake.tar": "not a readable uncompressed tar", "nope.jpg": "does not exist"}
    for name, message in cases.items():
        with pytest.raises(SourceError, match=message):
            parse_sources([str(tmp_path / name)])


def test_decode_at_reduced_size(tmp_path: Path):
    big = Image.fromarray(np.tile(np.linspace(0, 255, 2000, dtype=np.uint8), (1500, 1))).convert("RGB")
    big.save(tmp_path / "big.jpg", quality=90)
    big.save(tmp_path / "big.png")
    jpeg = read_image(ImageRef(str(tmp_path / "big.jpg")), 256)
    png = read_image(ImageRef(str(tmp_path / "big.png")), 256)
    assert jpeg.size == (500, 375)  # JPEG draft: 1/4 scale, the largest that keeps the long side >= 256
    assert png.size == (286, 215)  # integer box reduction by 7 (rounded up)
    assert read_image(ImageRef(str(tmp_path / "big.jpg"))).size == (2000, 1500)
    row = np.asarray(png)[100, :, 0].astype(int)
    assert row[0] <= 3 and row[-1] >= 252 and np.all(np.diff(row) >= 0)  # the same picture, smaller


def test_val_split_deterministic_and_disjoint(tmp_path: Path):
    refs = [ImageRef(f"/data/a/shard-{i // 50}.tar", f"{i}.jpg", 512 * i, 100) for i in range(200)]
    train, val = split_refs(refs, 0.1, seed=5)
    assert len(val) == 20 and len(train) == 180
    assert {r.key for r in train}.isdisjoint({r.key for r in val})
    assert set(train) | set(val) == set(refs)
    assert split_refs(refs, 0.1, seed=5) == (train, val)
    assert split_refs(refs, 0.1, seed=6)[1] != val
    moved = [ImageRef(r.path.replace("/data/a", "/elsewhere/mnt/a"), r.member, r.offset, r.size) for r in refs]
    assert [r.member for r in split_refs(moved, 0.1, seed=5)[1]] == [r.member for r in val]
    assert split_refs(refs[:3], 0.01, seed=0)[1] != []  # at least one held out
    assert split_refs(refs, 0.0, seed=0) == (refs, [])


def test_epoch_sampler_shards_and_reshuffles():
    ranks = [EpochSampler(10, shuffle=True, seed=1, num_replicas=2, rank=r) for r in range(2)]
    for s in ranks:
        s.set_epoch(4)
    pairs = [list(s) for s in ranks]
    assert all(e == 4 for p in pairs for e, _ in p)
    assert sorted(i for p in pairs for _, i in p) == list(range(10))
    again = EpochSampler(10, shuffle=True, seed=1, num_replicas=2, rank=0)
    again.set_epoch(4)
    assert list(again) == pairs[0]
    again.set_epoch(5)
    assert [i for _, i in again] != [i for _, i in pairs[0]]


def test_build_dataloaders_explicit_val(tmp_path: Path):
    for s in range(2):
        _write_tar(tmp_path / f"s-{s}.tar", {f"{s}_{i}.jpg": _encoded(_image(10 * s + i)) for i in range(6)})
    notes: list[str] = []
    loaders = build_dataloaders([str(tmp_path / "s-{0..1}.tar")], val=[str(tmp_path / "s-1.tar")],
                                input_size=64, batch_size=4, workers=0, log=notes.append)
    assert not loaders.demo and len(loaders.train.dataset) == 6 and len(loaders.val.dataset) == 6
    assert notes == ["dropped 6 training items that are also in the validation sources"]
    batch = next(iter(loaders.val))
    assert batch.images.shape == (4, 3, 64, 64) and batch.indices.tolist() == [0, 1, 2, 3]
    assert len(loaders.train) == 2  # under two full batches: the partial batch is kept


def test_demo_set():
    photos = find_demo_photos()
    assert any(Path(r.path).name == "grace_hopper.jpg" for r in photos.faces)
    refs = demo_refs(100, photos)
    assert len(refs) == 100 and 70 <= sum(r in photos.faces for r in refs) <= 90
    notes: list[str] = []
    loaders = build_dataloaders(None, batch_size=8, workers=0, demo_samples=(16, 8), log=notes.append)
    assert loaders.demo and notes[0].startswith("DEMO DATA:") and "--data" in notes[0]
    batch = next(iter(loaders.train))
    assert batch.images.shape == (8, 3, 128, 128)
    assert batch.images.min() >= -1 and batch.images.max() <= 1 and batch.images.std() > 0.1


def test_video_frames_sampled(tmp_path: Path):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for k in range(30):  # 3 s; frame k is flat grey 8k
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 8 * k, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    refs = parse_sources([str(path)], video_fps=2.0)
    assert [round(r.frame_time, 3) for r in refs] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    means = [np.asarray(read_image(r)).mean() for r in refs]
    np.testing.assert_allclose(means, [0, 40, 80, 120, 160, 200], atol=4)
    assert len(parse_sources([str(path)], video_fps=0)) == 30
    assert refs[1].key == f"{path}@0.500s"


def test_utkface_shard(shared_data: Path):
    shards = shared_data / "utkface"
    refs = parse_sources([str(shards / "utkface-0000{0..1}.tar")])
    assert 9000 < len(refs) < 10000
    malformed = [r for r in refs if r.member == "61_1_20170109142408075.jpg.chip.jpg"]
    assert len(malformed) == 1  # the file name with a missing field reads like any other
    sample = refs[:: len(refs) // 6][:6] + malformed
    for ref in sample:
        image = read_image(ref, 256)
        assert image.size == (200, 200) and image.mode == "RGB"
    dataset = FaceImageDataset(sample, 128, seed=0)
    images = torch.stack([dataset[i].image for i in range(len(sample))])
    assert images.shape == (7, 3, 128, 128) and images.min() >= -1 and images.max() <= 1
