"""Ground-truth readers: dlib imglab XML, WIDER FACE ``*_bbx_gt.txt`` and COCO json.

Every reader returns ``{image path: GroundTruth}`` with boxes (n, 4) as continuous pixel coordinates
(xmin, ymin, xmax, ymax) = (x, y, x + w, y + h) and an ``ignore`` flag per box (don't-care regions).
Images listed with no face are kept (with no boxes): detections there are false positives.
Image paths are resolved against ``images_root`` (default: the annotation file's folder).
Malformed input raises `AnnotationError` with one line naming the file and the line or element.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from blazedistill.evaluation.metrics import GroundTruth

try:  # defusedxml refuses entity tricks outright; plain ElementTree (expat) never fetches external entities
    from defusedxml.ElementTree import ParseError, fromstring  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    from xml.etree.ElementTree import ParseError, fromstring

FORMATS = ("dlib", "wider", "coco")


class AnnotationError(ValueError):
    """An annotation file is missing or malformed."""


def _ground_truth(boxes: list[list[float]], ignore: list[bool]) -> GroundTruth:
    return GroundTruth(np.array(boxes, np.float64).reshape(-1, 4), np.array(ignore, bool))


def _xywh_to_xyxy(x: float, y: float, w: float, h: float) -> list[float]:
    return [x, y, x + w, y + h]


def _image_path(root: Path, name: str) -> Path:
    return (root / name).resolve()


def _read_text(path: Path, encoding: str | None = "utf-8") -> bytes | str:
    if not path.is_file():
        raise AnnotationError(f"{path}: no such annotation file")
    if encoding is None:
        return path.read_bytes()
    try:
        return path.read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path}: byte {exc.start}: not {encoding} text") from None


# ---------------------------------------------------------------- dlib imglab XML


def _number(path: Path, where: str, attrs: dict[str, str], key: str) -> float:
    if key not in attrs:
        raise AnnotationError(f"{path}: {where}: missing attribute {key!r}")
    try:
        value = float(attrs[key])
    except ValueError:
        raise AnnotationError(f"{path}: {where}: attribute {key}={attrs[key]!r} is not a number") from None
    if not np.isfinite(value):
        raise AnnotationError(f"{path}: {where}: attribute {key}={attrs[key]!r} is not finite")
    return value


def read_dlib_xml(path: str | Path, images_root: str | Path | None = None) -> dict[Path, GroundTruth]:
    """dlib imglab XML: ``<image file=...><box top left width height [ignore='1']/>``; parts are skipped."""
    path = Path(path)
    data = _read_text(path, encoding=None)
    if b"<!ENTITY" in data:
        raise AnnotationError(f"{path}: entity declarations are not accepted in annotation files")
    try:
        root = fromstring(data)
    except ParseError as exc:
        raise AnnotationError(f"{path}: line {exc.position[0]}: malformed XML ({exc.msg})") from None
    images = root.find("images") if root.tag != "images" else root
    if images is None:
        raise AnnotationError(f"{path}: no <images> element: not a dlib imglab file")
    base = Path(images_root) if images_root is not None else path.parent
    out: dict[Path, GroundTruth] = {}
    for i, image in enumerate(images.findall("image")):
        name = image.get("file")
        if not name:
            raise AnnotationError(f"{path}: <image> #{i + 1}: missing attribute 'file'")
        boxes, ignore = [], []
        for j, box in enumerate(image.findall("box")):
            where = f"image {name!r} box #{j + 1}"
            top, left, width, height = (_number(path, where, box.attrib, k) for k in ("top", "left", "width", "height"))
            if width < 0 or height < 0:
                raise AnnotationError(f"{path}: {where}: negative width or height")
            flag = box.get("ignore", "0").strip()
            if flag not in ("0", "1", ""):
                raise AnnotationError(f"{path}: {where}: ignore={flag!r} is neither 0 nor 1")
            boxes.append(_xywh_to_xyxy(left, top, width, height))
            ignore.append(flag == "1")
        key = _image_path(base, name)
        if key in out:
            raise AnnotationError(f"{path}: image {name!r} is listed twice")
        out[key] = _ground_truth(boxes, ignore)
    return out


# ---------------------------------------------------------------- WIDER FACE


def _numbers(line: str) -> list[float] | None:
    try:
        return [float(v) for v in line.split()]
    except ValueError:
        return None


def read_wider_txt(path: str | Path, images_root: str | Path | None = None) -> dict[Path, GroundTruth]:
    """WIDER FACE ``wider_face_*_bbx_gt.txt``: name, count, then ``x1 y1 w h blur expression illumination
    invalid occlusion pose`` per face; ``invalid=1`` faces are don't-care. A record with count 0 is
    followed by one line of zeros, which is skipped. Image paths are relative to ``images_root``
    (default: the file's folder; WIDER keeps them under ``WIDER_*/images``)."""
    path = Path(path)
    lines = _read_text(path).splitlines()
    base = Path(images_root) if images_root is not None else path.parent
    out: dict[Path, GroundTruth] = {}
    n = 0

    def next_line(peek: bool = False) -> tuple[int, str] | None:
        nonlocal n
        k = n
        while k < len(lines):
            k += 1
            if lines[k - 1].strip():
                n = n if peek else k
                return k, lines[k - 1].strip()
        return None

    while (item := next_line()) is not None:
        name_line, name = item
        if _numbers(name) is not None:
            raise AnnotationError(f"{path}: line {name_line}: expected an image file name, got {name!r}")
        item = next_line()
        count = _numbers(item[1]) if item else None
        if item is None or count is None or len(count) != 1 or count[0] < 0 or count[0] != int(count[0]):
            where = f"line {item[0]}" if item else "end of file"
            raise AnnotationError(f"{path}: {where}: expected the face count of {name!r}")
        boxes, ignore = [], []
        for _ in range(int(count[0])):
            item = next_line()
            values = _numbers(item[1]) if item else None
            if item is None or values is None or len(values) < 4:
                where = f"line {item[0]}" if item else "end of file"
                raise AnnotationError(f"{path}: {where}: expected 'x1 y1 w h ...' for a face of {name!r}")
            x, y, w, h = values[:4]
            if w < 0 or h < 0:
                raise AnnotationError(f"{path}: line {item[0]}: negative width or height")
            boxes.append(_xywh_to_xyxy(x, y, w, h))
            ignore.append(len(values) >= 8 and values[7] == 1)
        if count[0] == 0 and (item := next_line(peek=True)) and _numbers(item[1]) is not None:
            n = item[0]  # the zero-face record's line of zeros
        key = _image_path(base, name)
        if key in out:
            raise AnnotationError(f"{path}: line {name_line}: image {name!r} is listed twice")
        out[key] = _ground_truth(boxes, ignore)
    return out


# ---------------------------------------------------------------- COCO json


def _face_categories(path: Path, categories: list[dict], category: str | int | None) -> set | None:
    """Category ids to keep: ``category`` (name or id), else those named like 'face', else the only one."""
    if not categories:
        return None
    ids = {c.get("id") for c in categories}
    if category is not None:
        keep = {c.get("id") for c in categories if category in (c.get("id"), c.get("name"))}
        if not keep:
            raise AnnotationError(f"{path}: no category {category!r}; known: {sorted(map(str, ids))}")
        return keep
    keep = {c.get("id") for c in categories if re.search("face", str(c.get("name", "")), re.IGNORECASE)}
    if keep:
        return keep
    if len(ids) == 1:
        return ids
    names = ", ".join(str(c.get("name")) for c in categories)
    raise AnnotationError(
        f"{path}: no 'face' category among {names}: choose one with category= (--category on the command line)"
    )


def _records(path: Path, data: dict, key: str) -> Iterator[tuple[int, dict]]:
    items = data.get(key, [])
    if not isinstance(items, list):
        raise AnnotationError(f"{path}: {key!r} must be a list")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise AnnotationError(f"{path}: {key}[{i}] must be an object")
        yield i, item


def read_coco_json(
    path: str | Path, images_root: str | Path | None = None, category: str | int | None = None
) -> dict[Path, GroundTruth]:
    """COCO detection json: ``bbox`` is x, y, w, h; ``iscrowd`` (or ``ignore``) marks don't-care boxes;
    only face categories are kept (see `_face_categories`)."""
    path = Path(path)
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}: line {exc.lineno}: malformed JSON ({exc.msg})") from None
    if not isinstance(data, dict) or "images" not in data:
        raise AnnotationError(f"{path}: no 'images' list: not a COCO annotation file")
    keep = _face_categories(path, [c for _, c in _records(path, data, "categories")], category)
    base = Path(images_root) if images_root is not None else path.parent
    names: dict = {}
    seen: dict[Path, int] = {}
    for i, image in _records(path, data, "images"):
        if "id" not in image or not isinstance(image.get("file_name"), str):
            raise AnnotationError(f"{path}: images[{i}]: needs 'id' and 'file_name'")
        if image["id"] in names:
            raise AnnotationError(f"{path}: images[{i}]: image id {image['id']!r} is listed twice")
        key = _image_path(base, image["file_name"])
        if key in seen:
            raise AnnotationError(
                f"{path}: images[{i}]: image {image['file_name']!r} is listed twice (also images[{seen[key]}])"
            )
        seen[key] = i
        names[image["id"]] = image["file_name"]
    boxes: dict = {k: [] for k in names}
    ignore: dict = {k: [] for k in names}
    for i, ann in _records(path, data, "annotations"):
        if keep is not None and ann.get("category_id") not in keep:
            continue
        bbox = ann.get("bbox")
        if ann.get("image_id") not in names:
            raise AnnotationError(f"{path}: annotations[{i}]: unknown image_id {ann.get('image_id')!r}")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise AnnotationError(f"{path}: annotations[{i}]: bbox must be [x, y, w, h], got {bbox!r}")
        if bbox[2] < 0 or bbox[3] < 0 or not np.isfinite(bbox).all():
            raise AnnotationError(f"{path}: annotations[{i}]: bad width or height in {bbox!r}")
        boxes[ann["image_id"]].append(_xywh_to_xyxy(*bbox))
        ignore[ann["image_id"]].append(bool(ann.get("iscrowd", 0)) or bool(ann.get("ignore", 0)))
    return {_image_path(base, names[k]): _ground_truth(boxes[k], ignore[k]) for k in names}


# ---------------------------------------------------------------- dispatch


def guess_format(path: str | Path) -> str:
    """dlib for .xml, coco for .json, wider for .txt."""
    suffix = Path(path).suffix.lower()
    formats = {".xml": "dlib", ".json": "coco", ".txt": "wider"}
    if suffix not in formats:
        raise AnnotationError(f"{path}: cannot tell the annotation format from {suffix!r}; give one of {FORMATS}")
    return formats[suffix]


def read_annotations(
    path: str | Path,
    format: str | None = None,
    images_root: str | Path | None = None,
    category: str | int | None = None,
) -> dict[Path, GroundTruth]:
    """Read any supported annotation file; ``format`` defaults to a guess from the file name.

    ``category`` (a COCO category name or id) picks the face class of a COCO file with several.
    """
    format = format or guess_format(path)
    readers = {"dlib": read_dlib_xml, "wider": read_wider_txt, "coco": read_coco_json}
    if format not in readers:
        raise AnnotationError(f"{path}: unknown annotation format {format!r}; known: {', '.join(FORMATS)}")
    if category is not None:
        if format != "coco":
            raise AnnotationError(f"{path}: a category applies to COCO files only (this is {format})")
        return read_coco_json(path, images_root, category)
    return readers[format](path, images_root)
