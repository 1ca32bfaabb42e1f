"""`blazedistill export`: a teacher or student checkpoint -> a verified ONNX, TorchScript or TFLite file.

Exit status: 0 exported and verified, 1 export or verification failed (a file that fails verification is kept
as FILE.unverified), 2 usage errors (unknown model, unreadable checkpoint, wrong file suffix).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from blazedistill.cli.argtypes import non_negative_float


def register(subparsers: argparse._SubParsersAction) -> None:
    from blazedistill.export import FORMATS, SUFFIXES, TOLERANCE

    p = subparsers.add_parser(
        "export",
        help="export a model to ONNX, TorchScript or TFLite, verified against PyTorch",
        description="Export a teacher or a student checkpoint (eval mode, batch norm folded) and verify the file "
        "with its own runtime on random inputs and a real photo: the command fails unless every output element "
        "agrees with PyTorch within tolerance x max(1, |value|). Suffixes: "
        + ", ".join(f"{k} {v}" for k, v in SUFFIXES.items())
        + ". TFLite needs the tflite-export extra (litert-torch).",
    )
    p.add_argument("--model", required=True, help="teacher name (front, back, ...) or student checkpoint (.pt)")
    p.add_argument("--format", required=True, choices=FORMATS, help="file format")
    p.add_argument("--out", required=True, type=Path, metavar="FILE", help="where to write the exported file")
    p.add_argument("--dynamic-batch", action="store_true", help="accept any batch size (onnx, torchscript)")
    p.add_argument(
        "--tolerance", type=non_negative_float, default=TOLERANCE, help=f"parity tolerance (default {TOLERANCE:g})"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from blazedistill.export import SUFFIXES, ExportError, export_and_verify
    from blazedistill.models.loading import load_model

    if args.out.suffix != SUFFIXES[args.format]:
        print(f"error: {args.out}: a {args.format} export must be named *{SUFFIXES[args.format]}", file=sys.stderr)
        return 2
    if Path(str(args.model)).suffix.lower() in (".onnx", ".tflite", ".torchscript"):
        print(f"error: {args.model}: already an exported file; export a teacher name or a checkpoint", file=sys.stderr)
        return 2
    try:
        model = load_model(args.model)
    except (ValueError, OSError, RuntimeError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        report = export_and_verify(
            model, args.format, args.out, dynamic_batch=args.dynamic_batch, tolerance=args.tolerance
        )
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(report.lines()))
    return 0
