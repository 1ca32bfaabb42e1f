"""Data-loading throughput of the distillation input pipeline (images/s), against references in the same run.

References: (1) plain decoding of the same shard members in the main process, no augmentation; (2) with
--train-steps, a stand-in training step (a small conv net, forward + backward) timed on a synthetic batch
and then fed by the loader; (3) for large photos, full-size against reduced-size decoding (JPEG draft).

    python benchmarks/data_throughput.py --data '../shared/data/utkface/utkface-0000{0..4}.tar' \
        --photos ../shared/data/wild --workers 0 1 2 --batches 30 --train-steps 20
"""

from __future__ import annotations

import argparse
import time

import torch

from blazedistill.distill.augment import AugmentConfig
from blazedistill.distill.data import parse_sources, read_image
from blazedistill.distill.dataset import FaceImageDataset, FaceLoader


def loader_rate(refs, preset: str, workers: int, batches: int, batch_size: int, size: int) -> tuple[float, float]:
    """(steady-state images/s, seconds to the first batch) over ``batches`` batches after the first."""
    dataset = FaceImageDataset(refs, size, AugmentConfig.preset(preset), seed=0)
    loader = FaceLoader(dataset, batch_size, shuffle=True, seed=0, workers=workers)
    loader.set_epoch(0)
    start = time.perf_counter()
    it = iter(loader)
    next(it)
    first = time.perf_counter() - start
    images, t0 = 0, time.perf_counter()
    for _ in range(batches):
        images += len(next(it))
    return images / (time.perf_counter() - t0), first


def training_stand_in() -> torch.nn.Module:
    """A small conv net whose training step on 64 images at 128 px takes a few hundred ms on 2 cores."""
    layers, width = [], 3
    for out in (16, 24, 32, 48, 48):
        layers += [torch.nn.Conv2d(width, out, 3, 2 if out != width else 1, 1), torch.nn.ReLU()]
        width = out
    return torch.nn.Sequential(*layers).to(memory_format=torch.channels_last)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor) -> None:
    optimizer.zero_grad()
    model(images.contiguous(memory_format=torch.channels_last)).square().mean().backward()
    optimizer.step()


def with_training(refs, workers: int, steps: int, batch_size: int, size: int) -> tuple[float, float, float]:
    """(ms per step with synthetic data, ms per step with the loader, ms of it waiting for data)."""
    model = training_stand_in()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    fake = torch.rand(batch_size, 3, size, size) * 2 - 1
    for _ in range(2):
        train_step(model, optimizer, fake)
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, fake)
    alone = (time.perf_counter() - t0) / steps
    loader = FaceLoader(FaceImageDataset(refs, size, AugmentConfig(), seed=0), batch_size, shuffle=True,
                        workers=workers)
    loader.set_epoch(0)
    it = iter(loader)
    train_step(model, optimizer, next(it).images)
    waiting, t0 = 0.0, time.perf_counter()
    for _ in range(steps):
        w = time.perf_counter()
        batch = next(it)
        waiting += time.perf_counter() - w
        train_step(model, optimizer, batch.images)
    total = (time.perf_counter() - t0) / steps
    return 1000 * alone, 1000 * total, 1000 * waiting / steps


def decode_rate(refs, count: int, min_long_side: int | None) -> float:
    t0 = time.perf_counter()
    for ref in refs[:count]:
        read_image(ref, min_long_side)
    return count / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", required=True, help="training sources (e.g. UTKFace shards)")
    parser.add_argument("--photos", nargs="*", default=[], help="large photos for the reduced-decoding check")
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--presets", nargs="+", default=["default", "none"])
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--train-steps", type=int, default=0, help="also time N stand-in training steps")
    args = parser.parse_args()

    t0 = time.perf_counter()
    refs = parse_sources(args.data)
    print(f"indexed {len(refs)} images in {time.perf_counter() - t0:.2f} s")
    reference = decode_rate(refs, args.batches * args.batch_size // 2, 2 * args.size)
    print(f"reference: decode only, main process: {reference:.0f} images/s")
    print("| augmentation | workers | images/s | × decode-only | ms per batch of", args.batch_size, "| first batch s |")
    print("|---|---|---|---|---|---|")
    for preset in args.presets:
        for workers in args.workers:
            rate, first = loader_rate(refs, preset, workers, args.batches, args.batch_size, args.size)
            print(f"| {preset} | {workers} | {rate:.0f} | {rate / reference:.2f} | "
                  f"{1000 * args.batch_size / rate:.0f} | {first:.2f} |")
    if args.train_steps:
        print(f"\nwith a stand-in training step in the main process ({torch.get_num_threads()} threads), default "
              "augmentation:")
        print("| workers | step alone ms | step with loader ms | × alone | waiting for data ms |")
        print("|---|---|---|---|---|")
        for workers in args.workers:
            alone, total, waiting = with_training(refs, workers, args.train_steps, args.batch_size, args.size)
            print(f"| {workers} | {alone:.0f} | {total:.0f} | {total / alone:.2f} | {waiting:.0f} |")
    if args.photos:
        photos = parse_sources(args.photos)
        full = decode_rate(photos, len(photos), None)
        reduced = decode_rate(photos, len(photos), 2 * args.size)
        print(f"large photos ({len(photos)}): full-size decode {full:.1f} images/s, reduced (draft) "
              f"{reduced:.1f} images/s: {reduced / full:.1f}× faster")


if __name__ == "__main__":
    main()
