"""`blazedistill detect`: faces in image files and folders -> annotated copies and/or JSON.

Exit status: 0 all inputs processed, 1 some inputs failed (each reported on stderr as one line),
2 usage errors (bad arguments, unknown model, --out that would overwrite an input).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from blazedistill.cli.argtypes import positive_int, probability
from blazedistill.cli.outputs import output_dir_problem, output_file_problem, write_failure
from blazedistill.imageio import IMAGE_SUFFIXES, ImageLoadError, list_images, load_image

PROGRESS_MIN_FILES = 10


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "detect",
        help="detect faces in images (files and folders)",
        description="Detect faces in image files and folders (recursive; jpg, jpeg, png, bmp, webp, tif, tiff). "
        "Exit status 1 when some inputs could not be read, 2 for usage errors.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders")
    p.add_argument(
        "--model",
        default="front",
        help="teacher name (front, short_range, back, full_range, full_range_sparse), a student checkpoint "
        "(.pt) or an exported model (.onnx, .torchscript, .tflite); default: front",
    )
    p.add_argument("--model-file", type=Path, help="use this .tflite file for the named teacher")
    p.add_argument("--min-score", type=probability, help="score threshold (default: the model's own)")
    p.add_argument("--out", type=Path, help="write annotated copies here (same relative names)")
    p.add_argument("--json", metavar="FILE", help="write detections as JSON to FILE ('-' = stdout)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per model call (default 16)")
    p.add_argument("--workers", type=positive_int, default=min(4, os.cpu_count() or 1), help="image decoding threads")
    p.add_argument("--device", default=None, help="torch device: auto, cpu, cuda, cuda:1, mps (default: cpu)")
    p.set_defaults(func=run)


@dataclass
class _Item:
    path: Path
    out: Path | None


def _report(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _collect(paths: list[str], out_dir: Path | None) -> tuple[list[_Item], list[str]]:
    """Inputs in argument order with their annotated-copy paths; plus one line per missing path."""
    items: list[_Item] = []
    problems: list[str] = []
    seen: set[Path] = set()
    taken: set[Path] = set()
    for arg in paths:
        found, missing = list_images([arg])
        problems += missing
        root = Path(arg) if Path(arg).is_dir() else None
        for path in found:
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            out = None
            if out_dir is not None:
                rel = path.relative_to(root) if root is not None else Path(path.name)
                if rel.suffix.lower() not in IMAGE_SUFFIXES:
                    rel = rel.with_name(rel.name + ".png")
                out = out_dir / rel
                n = 2
                while out in taken:
                    out = out_dir / rel.with_name(f"{rel.stem}_{n}{rel.suffix}")
                    n += 1
                taken.add(out)
            items.append(_Item(path, out))
    return items, problems


def _save(image: np.ndarray, detections: list, out: Path) -> None:
    from blazedistill.draw import draw_detections

    out.parent.mkdir(parents=True, exist_ok=True)
    canvas = draw_detections(image, detections)
    tmp = out.with_name(f".{out.name}.part{out.suffix}")
    options = {"quality": 92} if out.suffix.lower() in (".jpg", ".jpeg", ".webp") else {}
    canvas.save(tmp, **options)
    os.replace(tmp, out)


def _write_json(records: list[dict], target: str) -> None:
    text = "[\n" + ",\n".join(json.dumps(record) for record in records) + "\n]" if records else "[]"
    if target == "-":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


def _finish_save(item: _Item, future: Future) -> bool:
    try:
        future.result()
    except (OSError, ValueError) as exc:
        _report(f"{item.out}: cannot write annotated copy ({exc})")
        return False
    return True


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from blazedistill.detector import Detector
    from blazedistill.models.loading import load_model

    items, problems = _collect(args.paths, args.out)
    inputs = {item.path.resolve() for item in items}
    for item in items:
        if item.out is not None and item.out.resolve() in inputs:
            print(f"error: --out {args.out} would overwrite the input {item.path}", file=sys.stderr)
            return 2
    problem = output_file_problem(args.json, "--json", inputs) or output_dir_problem(args.out, "--out")
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        model = load_model(args.model, model_file=args.model_file)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as exc:
        print(f"error: cannot load model {args.model}: {exc}", file=sys.stderr)
        return 2
    device = None
    if args.device is not None:
        from blazedistill.distill.runtime import pick_device

        try:
            device = pick_device(args.device)  # the device the detector runs on ("auto" resolved)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    detector = Detector(model, min_score=args.min_score, device=device)
    failed = len(problems)
    for line in problems:
        print(line, file=sys.stderr)
    if not items:
        print("no images found", file=sys.stderr)
        return 1

    keep_pixels = args.out is not None

    def prepare(item: _Item):
        pixels = load_image(item.path) if keep_pixels else None
        tensor, box = detector.prepare(pixels if keep_pixels else item.path)
        return tensor, box, pixels

    records: list[dict] = []
    saves: deque[tuple[_Item, Future]] = deque()
    window = 2 * args.batch_size
    with ThreadPoolExecutor(max_workers=args.workers) as pool, tqdm(
        total=len(items), unit="img", file=sys.stderr, disable=len(items) < PROGRESS_MIN_FILES
    ) as progress:
        pending: deque[tuple[_Item, Future]] = deque()
        queue = iter(items)

        def refill() -> None:
            while len(pending) < window:
                item = next(queue, None)
                if item is None:
                    return
                pending.append((item, pool.submit(prepare, item)))

        refill()
        while pending:
            batch = []
            while pending and len(batch) < args.batch_size:
                item, future = pending.popleft()
                try:
                    batch.append((item, *future.result()))
                except (ImageLoadError, ValueError, OSError) as exc:
                    failed += 1
                    _report(str(exc) if isinstance(exc, ImageLoadError) else f"{item.path}: {exc}")
                    progress.update(1)
                refill()
            if not batch:
                continue
            results = detector.detect_tensor(np.stack([b[1] for b in batch]), [b[2] for b in batch])
            for (item, _, box, pixels), detections in zip(batch, results, strict=True):
                records.append(
                    {
                        "image": str(item.path),
                        "width": box.width,
                        "height": box.height,
                        "detections": [d.to_dict(ndigits=4) for d in detections],
                    }
                )
                if item.out is not None:
                    saves.append((item, pool.submit(_save, pixels, detections, item.out)))
            progress.update(len(batch))
            while len(saves) > window:  # bounds the images held in memory
                failed += not _finish_save(*saves.popleft())
        while saves:
            failed += not _finish_save(*saves.popleft())
    json_failed = False
    if args.json:
        try:
            _write_json(records, args.json)
        except OSError as exc:
            print(f"error: {write_failure('--json', args.json, exc)}", file=sys.stderr)
            json_failed = True
    if not args.json and not args.out:  # nothing written: show the detections
        for record in records:
            print(_summary_line(record))
    faces = sum(len(record["detections"]) for record in records)
    print(f"{len(records)} image(s), {faces} face(s)", file=sys.stderr)
    if failed:
        given = len(items) + len(problems)  # images found, plus paths that named none
        print(f"{failed} input(s) failed; {len(records)} of {given} inputs processed", file=sys.stderr)
    return 1 if failed or json_failed else 0


def _summary_line(record: dict) -> str:
    """'path: N face(s): score [xmin, ymin, xmax, ymax], ...' with boxes in whole pixels."""
    faces = ", ".join(f"{d['score']:.3f} [{', '.join(str(round(v)) for v in d['box'])}]" for d in record["detections"])
    return f"{record['image']}: {len(record['detections'])} face(s)" + (f": {faces}" if faces else "")
