"""`blazedistill bench`: latency and throughput of models over backends, model-only and end to end.

Exit status: 0 measured (backends that cannot run a model are listed as skipped), 2 usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from blazedistill.cli.argtypes import positive_int
from blazedistill.cli.outputs import output_file_problem, write_failure


def _batches(text: str) -> list[int]:
    from blazedistill.bench import parse_batches

    try:
        return parse_batches(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    from blazedistill.bench import BACKENDS, DEFAULT_BACKENDS, MODES

    p = subparsers.add_parser(
        "bench",
        help="time models on several backends, model-only and end to end",
        description="p50/p95 latency per call and images/s for each model on each backend, on the same inputs "
        "in one run (timed round-robin), with each row's time per image relative to the first row of its "
        f"group. Backends: {', '.join(BACKENDS)}.",
    )
    p.add_argument(
        "--model",
        nargs="+",
        required=True,
        metavar="MODEL",
        help="teacher names, student checkpoints (.pt) or exports (.onnx, .torchscript, .tflite)",
    )
    p.add_argument(
        "--backend",
        default=",".join(DEFAULT_BACKENDS),
        help=f"comma-separated backends (default {','.join(DEFAULT_BACKENDS)})",
    )
    p.add_argument("--batch", type=_batches, default=[1, 32], help="comma-separated batch sizes (default 1,32)")
    p.add_argument("--threads", type=positive_int, help="threads for every backend (default: torch's default)")
    p.add_argument("--repeats", type=positive_int, default=20, help="timed calls per row (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per row first (default 3)")
    p.add_argument("--mode", default=",".join(MODES), help=f"comma-separated modes (default {','.join(MODES)})")
    p.add_argument("--image", type=Path, help="photo to use (default: matplotlib's grace_hopper.jpg)")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON to FILE")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from blazedistill.bench import BACKENDS, MODES, benchmark

    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    modes = [m.strip() for m in args.mode.split(",") if m.strip()]
    unknown = [b for b in backends if b not in BACKENDS] + [m for m in modes if m not in MODES]
    if unknown or not backends or not modes:
        print(
            f"error: unknown backend or mode {', '.join(unknown) or '(none given)'}; backends: "
            f"{', '.join(BACKENDS)}; modes: {', '.join(MODES)}",
            file=sys.stderr,
        )
        return 2
    problem = output_file_problem(args.json, "--json", [args.image.resolve()] if args.image else [])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        result = benchmark(
            args.model,
            backends,
            args.batch,
            args.threads,
            args.repeats,
            args.warmup,
            modes,
            args.image,
            progress=lambda message: print(message, file=sys.stderr, flush=True),
        )
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = result.settings
    print(
        f"{settings['cpu']}, {settings['threads']} threads of {settings['cores']} cores; torch "
        f"{settings['torch']}, onnxruntime {settings['onnxruntime']}; {args.repeats} repeats after "
        f"{args.warmup} warm-up; image {settings['image']}"
    )
    print(result.markdown())
    if args.json:
        from blazedistill.jsonsafe import json_safe

        try:
            Path(args.json).write_text(json.dumps(json_safe(result.to_dict()), indent=2, allow_nan=False) + "\n")
        except OSError as exc:
            print(f"error: {write_failure('--json', args.json, exc)}", file=sys.stderr)
            return 1
    return 0
