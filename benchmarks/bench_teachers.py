"""Teachers, model only: PyTorch vs the TFLite interpreter (ai-edge-litert) on the same inputs, one process.

Latency at batch 1 (median over repeats, the two runtimes interleaved so machine load hits both alike) and
throughput at batch 32 (the interpreter runs the batch-1 graph 32 times). Prints a markdown table.

    python benchmarks/bench_teachers.py [--teachers front back ...] [--repeats 50] [--variants eager,jit]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from ai_edge_litert.interpreter import Interpreter

from blazedistill import hub, load_teacher
from blazedistill.specs import teacher_spec

TEACHERS = ["front", "back", "full_range", "full_range_sparse"]


class TFLiteRunner:
    """The bare interpreter: set input, invoke, read both outputs (no framework conversions)."""

    def __init__(self, name: str, threads: int):
        self.it = Interpreter(model_path=str(hub.model_file(teacher_spec(name).model_file)), num_threads=threads)
        self.it.allocate_tensors()
        self.inp = self.it.get_input_details()[0]["index"]
        self.outs = [d["index"] for d in self.it.get_output_details()]

    def __call__(self, nhwc: np.ndarray) -> list[list[np.ndarray]]:
        results = []
        for image in nhwc:
            self.it.set_tensor(self.inp, image[None])
            self.it.invoke()
            results.append([self.it.get_tensor(i) for i in self.outs])
        return results


def make_variant(name: str, variant: str, example: torch.Tensor) -> torch.nn.Module:
    """The teacher as `variant`: eager, jit (trace + freeze) or compile (torch.compile, inductor)."""
    model = load_teacher(name)
    if variant == "eager":
        return model
    if variant == "jit":
        with torch.no_grad():
            return torch.jit.freeze(torch.jit.trace(model, example, check_trace=False))
    if variant == "compile":
        return torch.compile(model, dynamic=False)
    raise ValueError(f"unknown variant {variant!r}")


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def bench(name: str, variants: list[str], repeats: int, batch: int, threads: int) -> list[dict]:
    size = teacher_spec(name).input_size
    g = torch.Generator().manual_seed(0)
    x1 = torch.rand(1, 3, size, size, generator=g) * 2 - 1
    xb = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    nhwc1, nhwcb = (x.permute(0, 2, 3, 1).contiguous().numpy() for x in (x1, xb))
    tfl = TFLiteRunner(name, threads)
    rows = []
    with torch.inference_mode():
        for variant in variants:
            model = make_variant(name, variant, x1)
            for _ in range(3):  # warm-up (and compilation) at both batch sizes
                model(x1), model(xb), tfl(nhwc1)
            ref = tfl(nhwc1)[0]
            diff = max(float(np.abs(o.numpy() - r).max()) for o, r in zip(model(x1), ref, strict=True))
            t_lat, f_lat = [], []
            for _ in range(repeats):
                t_lat.append(timed(model, x1))
                f_lat.append(timed(tfl, nhwc1))
            t_thr, f_thr = [], []
            for _ in range(max(3, repeats // 10)):
                t_thr.append(timed(model, xb))
                f_thr.append(timed(tfl, nhwcb))
            rows.append(
                {
                    "teacher": name,
                    "variant": variant,
                    "torch_ms": 1e3 * statistics.median(t_lat),
                    "tflite_ms": 1e3 * statistics.median(f_lat),
                    "torch_ips": batch / statistics.median(t_thr),
                    "tflite_ips": batch / statistics.median(f_thr),
                    "max_diff": diff,
                }
            )
            print(f"  done {name} {variant}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teachers", nargs="+", default=TEACHERS, choices=TEACHERS)
    ap.add_argument("--variants", default="eager", help="comma list of eager, jit, compile")
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="for both runtimes")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    rows = [r for name in args.teachers for r in bench(name, variants, args.repeats, args.batch, args.threads)]
    print(f"\nthreads={args.threads}, batch-1 median of {args.repeats}, batch {args.batch} throughput\n")
    print(
        "| teacher | PyTorch | batch 1: PyTorch ms | TFLite ms | PyTorch / TFLite | "
        f"batch {args.batch}: PyTorch img/s | TFLite img/s | PyTorch / TFLite | max abs diff (batch 1) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['teacher']} | {r['variant']} | {r['torch_ms']:.2f} | {r['tflite_ms']:.2f} | "
            f"{r['torch_ms'] / r['tflite_ms']:.2f}x | {r['torch_ips']:.0f} | {r['tflite_ips']:.0f} | "
            f"{r['torch_ips'] / r['tflite_ips']:.2f}x | {r['max_diff']:.1e} |"
        )


if __name__ == "__main__":
    main()
