"""Speed of every registered student against the teacher's architecture, as ratios from one run.

Measures, per model: multiply-adds and parameters; inference latency at batch 1 and batch 32
(eval mode, ``torch.inference_mode``, BN folded for BN students); and the time of one training step at
batch 64 (forward, detection loss against fixed targets, backward, AdamW step); all channels_last
unless ``--nchw``. Models are timed round-robin and the median is kept, so load drift on a shared machine
hits all of them alike. Inference is compared with the real teacher (``blazedistill.load_teacher``)
when this checkout has it, else with the ``blazeface`` student (the front teacher's exact topology and
widths); training steps are compared with ``blazeface`` (the teacher's topology trained from scratch).

    PYTHONPATH=src python benchmarks/bench_students.py [--teacher front] [--rounds 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from blazedistill.distill.losses import get_loss
from blazedistill.models.registry import create_student, list_students
from blazedistill.models.resnet import fold_batchnorm
from blazedistill.specs import teacher_spec


def count_macs(model: nn.Module, size: int) -> int:
    """Multiply-adds of the convolutions for one image."""
    total = 0

    def hook(conv: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = conv.kernel_size
        total += output[0].numel() * (conv.in_channels // conv.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.inference_mode():
        model.eval()(torch.zeros(1, 3, size, size))
    for handle in handles:
        handle.remove()
    return total


def load_reference(teacher: str) -> nn.Module | None:
    """The real teacher when this checkout has ``load_teacher``, else None."""
    try:
        from blazedistill import load_teacher
    except ImportError:
        return None
    return load_teacher(teacher)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def inference_step(model: nn.Module, batch: int, size: int, memory_format: torch.memory_format):
    model = model.eval().to(memory_format=memory_format)
    x = torch.rand(batch, 3, size, size).mul(2).sub(1).contiguous(memory_format=memory_format)

    def step() -> None:
        with torch.inference_mode():
            model(x)

    return step


def training_step(model: nn.Module, batch: int, size: int, memory_format: torch.memory_format):
    model = model.train().to(memory_format=memory_format)
    x = torch.rand(batch, 3, size, size).mul(2).sub(1).contiguous(memory_format=memory_format)
    a = model.spec.num_anchors
    target = (torch.randn(batch, a, 16) * 10, torch.randn(batch, a, 1) * 5)
    loss_fn = get_loss("detection", size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), target)["total"].backward()
        optimizer.step()

    return step


def run(teacher: str, rounds: int, threads: int | None, memory_format: torch.memory_format) -> str:
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec = teacher_spec(teacher)
    size = spec.input_size
    students: dict[str, nn.Module] = {}
    for name in list_students():
        try:
            students[name] = create_student(name, spec)
        except ValueError:
            continue
    real_teacher = load_reference(teacher)
    models = {f"teacher {teacher}": real_teacher, **students} if real_teacher is not None else students
    infer_ref = f"teacher {teacher}" if real_teacher is not None else "blazeface"
    macs = {name: count_macs(m, size) for name, m in models.items()}
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    has_bn = {name: any(isinstance(x, nn.BatchNorm2d) for x in m.modules()) for name, m in models.items()}
    deployed = {name: fold_batchnorm(m) if has_bn[name] else m for name, m in models.items()}
    benches = {
        "b1 ms": ({n: inference_step(m, 1, size, memory_format) for n, m in deployed.items()}, rounds * 5, infer_ref),
        "b32 ms": ({n: inference_step(m, 32, size, memory_format) for n, m in deployed.items()}, rounds, infer_ref),
        "train b64 ms": (
            {n: training_step(m, 64, size, memory_format) for n, m in students.items()},
            max(3, rounds // 3),
            "blazeface",
        ),
    }
    results: dict[str, dict[str, float]] = {}
    for column, (steps, reps, _) in benches.items():
        for step in steps.values():  # warm-up
            step()
            step()
        times: dict[str, list[float]] = {n: [] for n in steps}
        for _ in range(reps):
            for n, step in steps.items():
                times[n].append(timed(step))
        results[column] = {n: statistics.median(t) for n, t in times.items()}
    lines = [
        f"Layout {teacher} ({size}px), {torch.get_num_threads()} threads, {str(memory_format)[6:]}. "
        f"Inference ×ref: vs {infer_ref}"
        + ("" if real_teacher is not None else " (the front teacher's topology, as a proxy for the teacher)")
        + "; training ×ref: vs blazeface (the teacher's topology trained from scratch).",
        "",
        "| model | MMACs | params | b1 ms | ×ref | b32 ms | ×ref | train b64 ms | ×ref |",
        "|" + "---|" * 9,
    ]
    for name in models:
        row = [name, f"{macs[name] / 1e6:.1f}", f"{params[name]:,}"]
        for column, (_, _, ref) in benches.items():
            value = results[column].get(name)
            row += ["n/a", ""] if value is None else [f"{value:.2f}", f"{value / results[column][ref]:.2f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="front", help="layout to build the students for (default front)")
    parser.add_argument("--rounds", type=int, default=20, help="timing rounds (batch 1 runs 5x as many)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--nchw", action="store_true", help="contiguous NCHW tensors instead of channels_last")
    args = parser.parse_args()
    memory_format = torch.contiguous_format if args.nchw else torch.channels_last
    print(run(args.teacher, args.rounds, args.threads, memory_format))


if __name__ == "__main__":
    main()
