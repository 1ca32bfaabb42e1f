"""`blazedistill evaluate`: a model against a reference teacher (agreement) and against ground truth.

Exit status: 0 every image evaluated, 1 some images could not be read (one line each on stderr; the
rest is evaluated), 2 usage errors (unknown model, unreadable annotations, nothing to evaluate).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from blazedistill.cli.argtypes import non_negative_int, positive_int, probability
from blazedistill.cli.outputs import output_dir_problem, output_file_problem, write_failure
from blazedistill.messages import first_line
from blazedistill.specs import TEACHER_SPECS


def register(subparsers: argparse._SubParsersAction) -> None:
    from blazedistill.evaluation.annotations import FORMATS

    p = subparsers.add_parser(
        "evaluate",
        help="measure a model against a reference teacher and against ground truth",
        description="Agreement of --model with --reference (AP50, AP[.50:.95], precision/recall/F1, mean IoU, "
        "keypoint NME, count agreement, raw-output MAE) and, with --annotations, AP of both against ground "
        "truth. Exit status 1 when some images could not be read, 2 for usage errors.",
    )
    p.add_argument("--model", required=True, help="teacher name, student checkpoint (.pt) or ONNX export (.onnx)")
    p.add_argument(
        "--reference",
        help="reference model (default: the model's own teacher: the checkpoint's teacher, or the teacher itself)",
    )
    p.add_argument("--data", nargs="+", default=[], metavar="SRC", help="image files and folders")
    p.add_argument("--annotations", type=Path, metavar="FILE", help="ground truth (default images: all it lists)")
    p.add_argument("--format", choices=FORMATS, help="annotation format (default: from the file suffix)")
    p.add_argument("--category", help="COCO category (name or id) holding the faces, for files with several")
    p.add_argument("--images-root", type=Path, help="folder the annotation's image names are relative to")
    p.add_argument("--json", metavar="FILE", help="write the full report as JSON to FILE ('-' = stdout)")
    p.add_argument("--out", type=Path, metavar="DIR", help="write pr_curve.png and worst-disagreement pictures")
    p.add_argument(
        "--worst", type=non_negative_int, default=8, help="how many side-by-side pictures in --out (default 8)"
    )
    p.add_argument("--min-score", type=probability, help="the model's operating threshold (default: its own)")
    p.add_argument("--reference-min-score", type=probability, help="the reference's threshold (default: its own)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per model call (default 16)")
    p.set_defaults(func=run)


def default_reference(model_arg: str, model) -> str:
    """The teacher a model should be compared with: itself for a teacher, the checkpoint's teacher for a
    student, else the teacher its spec was made for."""
    if model_arg in TEACHER_SPECS:
        return model_arg
    if Path(model_arg).suffix.lower() == ".pt":
        from blazedistill.distill.checkpoint import load_checkpoint

        teacher = load_checkpoint(model_arg).get("teacher")
        if teacher in TEACHER_SPECS:
            return teacher
    name = getattr(model, "teacher", None) or model.spec.name
    if name in TEACHER_SPECS:
        return name
    raise ValueError(f"cannot tell which teacher {model_arg} was distilled from; pass --reference NAME")


def _fail(message: str, status: int = 2) -> int:
    """Print one error line; returns `status` (2: usage, 1: a failure after the work)."""
    print(f"blazedistill evaluate: error: {message}", file=sys.stderr)
    return status


def run(args: argparse.Namespace) -> int:
    from blazedistill.detector import Detector
    from blazedistill.evaluation.annotations import AnnotationError, read_annotations
    from blazedistill.evaluation.evaluate import evaluate
    from blazedistill.evaluation.report import format_table, plot_precision_recall, save_worst_pictures
    from blazedistill.imageio import list_images
    from blazedistill.models.loading import load_model

    if not args.data and args.annotations is None:
        return _fail("give --data SRC... and/or --annotations FILE")
    try:
        truth = None
        if args.annotations is not None:
            truth = read_annotations(args.annotations, args.format, args.images_root, _category(args.category))
        model = load_model(args.model)
        reference_arg = args.reference or default_reference(args.model, model)
        reference = model if reference_arg == args.model else load_model(reference_arg)
    except (AnnotationError, ValueError, FileNotFoundError, OSError) as exc:
        return _fail(first_line(exc))
    paths, failures = list_images(args.data) if args.data else (sorted(truth), [])
    if not paths:
        where = " ".join(args.data) if args.data else f"{args.annotations} (it lists none)"
        return _fail("no images found in " + where)
    inputs = {Path(p).resolve() for p in paths}
    problem = output_file_problem(args.json, "--json", inputs) or output_dir_problem(args.out, "--out")
    if problem:
        return _fail(problem)
    model_det = Detector(model, min_score=args.min_score)
    reference_det = Detector(reference, min_score=args.reference_min_score)
    result = evaluate(model_det, reference_det, paths, truth, args.model, reference_arg, args.batch_size)
    result.failures = failures + result.failures
    for line in result.failures:
        print(line, file=sys.stderr)

    table_stream = sys.stderr if args.json == "-" else sys.stdout
    print(format_table(result), file=table_stream)
    if args.json:
        text = json.dumps(result.to_dict(), indent=2)
        if args.json == "-":
            print(text)
        else:
            try:
                Path(args.json).write_text(text + "\n")  # its folder was made by output_file_problem
            except OSError as exc:
                return _fail(write_failure("--json", args.json, exc), status=1)
    if args.out is not None:
        try:
            written = [plot_precision_recall(result, args.out / "pr_curve.png")]
            written += save_worst_pictures(result, args.out, args.worst)
        except OSError as exc:
            return _fail(write_failure("--out", args.out, exc), status=1)
        print(f"wrote {len(written)} files to {args.out}", file=table_stream)
    return 1 if result.failures else 0


def _category(value: str | None) -> str | int | None:
    """A COCO category from the command line: digits are an id, anything else a name."""
    return int(value) if value is not None and value.isdigit() else value
