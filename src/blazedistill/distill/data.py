"""Image sources for distillation: folders, .tar shards, path lists and videos, read into RGB images.

A source spec is a string: an image file, a folder (searched recursively), an uncompressed WebDataset-style
``.tar`` shard (members indexed once by header offset and read by seeking, never extracted), a text file
listing one spec per line (relative to the list file), or a video (frames sampled at ``video_fps``). Specs
may use brace patterns (``shard-{00000..00004}.tar``, ``{a,b}``) and globs (``*``, ``?``, ``[...]``, ``**``).
``parse_sources`` turns specs into cheap picklable ``ImageRef``s; ``read_image`` decodes one at reduced size.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import re
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .. import imageio

IMAGE_EXTENSIONS = frozenset(imageio.IMAGE_SUFFIXES)
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv"})
LIST_EXTENSIONS = frozenset({".txt", ".lst", ".list"})
COMPRESSED_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst")
_GLOB_CHARS = re.compile(r"[*?\[]")
_MAX_LIST_DEPTH = 8


class SourceError(ValueError):
    """A data source spec that cannot be used (missing file, unknown kind, no matches)."""


class UnreadableImage(Exception):
    """One item that cannot be decoded into an image; the message is the reason."""


@dataclass(frozen=True, slots=True)
class ImageRef:
    """Names one image: a file, a member of a .tar shard (data offset and size), or a frame of a video."""

    path: str
    member: str | None = None
    offset: int = 0
    size: int = -1
    frame_pts: int | None = None
    frame_time: float = 0.0

    @property
    def key(self) -> str:
        """A readable unique name: ``path``, ``shard.tar:member`` or ``video.mp4@12.500s``."""
        if self.member is not None:
            return f"{self.path}:{self.member}"
        if self.frame_pts is not None:
            return f"{self.path}@{self.frame_time:.3f}s"
        return self.path


# ----------------------------------------------------------------------------- spec expansion


def expand_braces(pattern: str) -> list[str]:
    """Bash-style brace expansion: ``{00000..00004}`` (zero-padded ranges, optional step) and ``{a,b}``."""
    start = pattern.find("{")
    if start < 0:
        return [pattern]
    depth, end, commas = 0, -1, []
    for i in range(start, len(pattern)):
        c = pattern[i]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                end = i
                break
        elif c == "," and depth == 1:
            commas.append(i)
    if end < 0:
        return [pattern]  # unbalanced: taken literally
    head, body, tail = pattern[:start], pattern[start + 1 : end], pattern[end + 1 :]
    if commas:
        cuts = [start, *commas, end]
        options = [pattern[a + 1 : b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        options = [o for opt in options for o in expand_braces(opt)]
    else:
        options = _expand_range(body)
        if options is None:  # not a range: keep the braces literally, expand what follows
            return [head + "{" + body + "}" + rest for rest in expand_braces(tail)]
    return [head + opt + rest for opt in options for rest in expand_braces(tail)]


def _expand_range(body: str) -> list[str] | None:
    m = re.fullmatch(r"(-?\d+)\.\.(-?\d+)(?:\.\.(-?\d+))?", body)
    if not m:
        return None
    a, b = int(m[1]), int(m[2])
    step = abs(int(m[3])) if m[3] else 1
    step = step or 1
    padded = any(re.match(r"-?0\d", s) for s in (m[1], m[2]))
    width = max(len(m[1]), len(m[2])) if padded else 0
    values = range(a, b + 1, step) if a <= b else range(a, b - 1, -step)
    return [str(v).zfill(width) if padded else str(v) for v in values]


# ----------------------------------------------------------------------------- parsing


def parse_sources(
    specs: Sequence[str] | str,
    *,
    video_fps: float = 1.0,
    log: Callable[[str], None] | None = None,
) -> list[ImageRef]:
    """All images named by the specs, in a fixed order; raises SourceError for a spec that names nothing.

    ``video_fps`` is how many frames per second of video to sample (0 or less: every frame). ``log``
    receives one-line notes (e.g. non-image members ignored in a shard, a truncated shard).
    """
    if isinstance(specs, str):
        specs = [specs]
    refs: list[ImageRef] = []
    for spec in specs:
        refs.extend(_parse_spec(str(spec), Path.cwd(), video_fps, log or (lambda _msg: None), 0))
    return refs


def _parse_spec(spec: str, base: Path, video_fps: float, log: Callable[[str], None], depth: int) -> list[ImageRef]:
    spec = os.path.expanduser(spec.strip())
    paths: list[str] = []
    for pattern in expand_braces(spec):
        full = os.path.normpath(pattern if os.path.isabs(pattern) else str(base / pattern))
        if _GLOB_CHARS.search(pattern) and not os.path.exists(full):
            matches = sorted(glob.glob(full, recursive=True))
            if not matches:
                raise SourceError(f"{spec}: the pattern {pattern!r} matches no file")
            paths.extend(matches)
        else:
            paths.append(full)
    refs: list[ImageRef] = []
    for path in paths:
        refs.extend(_parse_path(path, spec, video_fps, log, depth))
    return refs


def _parse_path(path: str, spec: str, video_fps: float, log: Callable[[str], None], depth: int) -> list[ImageRef]:
    lower = path.lower()
    suffix = os.path.splitext(lower)[1]
    if not os.path.exists(path):
        raise SourceError(f"{spec}: {path} does not exist")
    if os.path.isdir(path):
        refs = [ImageRef(str(p)) for p in imageio.list_images([path])[0]]
        if not refs:
            raise SourceError(f"{path}: the folder holds no image ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        return refs
    if lower.endswith(COMPRESSED_TAR_SUFFIXES):
        raise SourceError(f"{path}: compressed tar shards cannot be read by seeking; use an uncompressed .tar")
    if suffix == ".tar":
        return index_tar(path, log)
    if suffix in IMAGE_EXTENSIONS:
        return [ImageRef(path)]
    if suffix in VIDEO_EXTENSIONS:
        return index_video(path, video_fps)
    if suffix in LIST_EXTENSIONS:
        if depth >= _MAX_LIST_DEPTH:
            raise SourceError(f"{path}: path lists nested more than {_MAX_LIST_DEPTH} deep")
        return _parse_list(path, video_fps, log, depth + 1)
    raise SourceError(
        f"{path}: unknown kind of source (expected a folder, .tar, a path list {sorted(LIST_EXTENSIONS)}, "
        f"an image {sorted(IMAGE_EXTENSIONS)} or a video {sorted(VIDEO_EXTENSIONS)})"
    )


def _parse_list(path: str, video_fps: float, log: Callable[[str], None], depth: int) -> list[ImageRef]:
    base = Path(path).parent
    refs: list[ImageRef] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                refs.extend(_parse_spec(line, base, video_fps, log, depth))
            except SourceError as e:
                raise SourceError(f"{path}:{lineno}: {e}") from None
    return refs


def index_tar(path: str, log: Callable[[str], None] | None = None) -> list[ImageRef]:
    """Image members of an uncompressed tar, by data offset and size (headers are read, nothing extracted)."""
    refs: list[ImageRef] = []
    ignored = 0
    try:
        with tarfile.open(path, mode="r:") as tar:
            while (member := tar.next()) is not None:
                tar.members.clear()  # the index is ours; tarfile need not keep every header too
                if not member.isreg():
                    continue
                if os.path.splitext(member.name.lower())[1] in IMAGE_EXTENSIONS:
                    refs.append(ImageRef(path, member.name, member.offset_data, member.size))
                else:
                    ignored += 1
    except tarfile.ReadError as e:
        if not refs:
            raise SourceError(f"{path}: not a readable uncompressed tar ({e})") from None
        if log:
            log(f"{path}: truncated or damaged after {len(refs)} image members ({e}); using those")
    if ignored and log:
        log(f"{path}: {ignored} non-image members ignored")
    return refs


def index_video(path: str, fps: float = 1.0) -> list[ImageRef]:
    """Frames of a video sampled at ``fps`` per second (every frame when ``fps <= 0``); needs PyAV."""
    av = _import_av(path)
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise SourceError(f"{path}: no video stream")
            stream = container.streams.video[0]
            base = stream.time_base
            pts = sorted({p.pts for p in container.demux(stream) if p.pts is not None and p.size > 0})
    except av.FFmpegError as e:
        raise SourceError(f"{path}: cannot read the video ({e})") from None
    if not pts:
        raise SourceError(f"{path}: the video has no frames")
    times = [float(p * base) for p in pts]
    chosen = range(len(pts)) if fps <= 0 else _sample_frames(times, fps)
    return [ImageRef(path, frame_pts=pts[i], frame_time=times[i] - times[0]) for i in chosen]


def _sample_frames(times: list[float], fps: float) -> list[int]:
    """Index of the first frame at or after each tick t0 + k / fps."""
    chosen, k, t0 = [], 0, times[0]
    for i, t in enumerate(times):
        if t - t0 >= k / fps - 1e-6:
            chosen.append(i)
            k = int((t - t0) * fps + 1e-6) + 1
    return chosen


def _import_av(path: str):
    try:
        import av
    except ImportError:
        raise SourceError(f"{path}: reading videos needs PyAV: pip install 'blazedistill[video]'") from None
    return av


# ----------------------------------------------------------------------------- reading


def read_image(ref: ImageRef, min_long_side: int | None = None) -> Image.Image:
    """Decode one image as RGB, reduced while its longer side stays >= ``min_long_side`` (JPEG: draft mode).

    Raises UnreadableImage with a one-line reason for anything that is not a complete image.
    """
    try:
        if ref.frame_pts is not None:
            return _reduce(_read_frame(ref), min_long_side)
        if ref.member is not None:
            if ref.size == 0:
                raise UnreadableImage("empty (0 bytes)")
            with open(ref.path, "rb") as f:
                f.seek(ref.offset)
                data = f.read(ref.size)
            if len(data) != ref.size:
                raise UnreadableImage(f"truncated shard: {len(data)} of {ref.size} bytes")
            return decode_image(io.BytesIO(data), min_long_side)
        if os.path.getsize(ref.path) == 0:
            raise UnreadableImage("empty (0 bytes)")
        return decode_image(ref.path, min_long_side)
    except UnreadableImage:
        raise
    except UnidentifiedImageError:
        raise UnreadableImage("not an image (unrecognised format)") from None
    except Exception as e:  # any decoder failure is a property of the item, not of the run
        raise UnreadableImage(f"{type(e).__name__}: {e}") from None


def decode_image(source: str | io.BytesIO, min_long_side: int | None = None) -> Image.Image:
    """Open, fully decode and EXIF-rotate an image as RGB (``imageio`` conventions), reduced towards
    ``min_long_side``."""
    with Image.open(source) as im:
        if min_long_side and im.format == "JPEG":
            w, h = im.size
            scale = min_long_side / max(w, h)
            if scale < 0.5:
                im.draft("RGB", (max(1, round(w * scale)), max(1, round(h * scale))))
        pixels = imageio.read_image(im).pixels  # EXIF rotation and every mode -> RGB, as at inference
    return _reduce(Image.fromarray(pixels), min_long_side)


def _reduce(image: Image.Image, min_long_side: int | None) -> Image.Image:
    if not min_long_side:
        return image
    factor = max(image.size) // min_long_side
    return image.reduce(factor) if factor >= 2 else image


def _read_frame(ref: ImageRef) -> Image.Image:
    av = _import_av(ref.path)
    with av.open(ref.path) as container:
        stream = container.streams.video[0]
        container.seek(ref.frame_pts, stream=stream, backward=True)
        for frame in container.decode(stream):
            if frame.pts is not None and frame.pts >= ref.frame_pts:
                return frame.to_image().convert("RGB")
    raise UnreadableImage(f"frame at {ref.frame_time:.3f}s not found")


# ----------------------------------------------------------------------------- validation split


def split_refs(refs: Sequence[ImageRef], val_fraction: float, seed: int) -> tuple[list[ImageRef], list[ImageRef]]:
    """(train, val): a held-out fraction chosen by a seeded hash of each item's key.

    The same seed gives the same split, wherever the data lies (the hash uses the last two parts of the
    path, the shard member and the video frame, not the absolute location). At least one item stays in each side when
    there are two or more.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = round(len(refs) * val_fraction)
    if val_fraction > 0 and len(refs) >= 2:
        n_val = min(max(n_val, 1), len(refs) - 1)
    ranked = sorted(range(len(refs)), key=lambda i: (_seeded_hash(_split_key(refs[i]), seed), i))
    val_ids = set(ranked[:n_val])
    train = [r for i, r in enumerate(refs) if i not in val_ids]
    val = [r for i, r in enumerate(refs) if i in val_ids]
    return train, val


def _split_key(ref: ImageRef) -> str:
    """The key without the data's location: the last two path parts, member and frame."""
    tail = "/".join(Path(ref.path).parts[-2:])
    return f"{tail}:{ref.member or ''}:{'' if ref.frame_pts is None else ref.frame_pts}"


def _seeded_hash(key: str, seed: int) -> bytes:
    return hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8, salt=_seed_salt(seed)).digest()


def _seed_salt(seed: int) -> bytes:
    return (seed & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little") + b"bdsplit!"
