"""Build a run's parts from its config: teacher, student, loss, data loaders, preview photos."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from blazedistill.distill.config import RunConfig
from blazedistill.distill.loop import Parts


def build_parts(cfg: RunConfig, device: torch.device, announce: bool = True) -> Parts:
    """Teacher, student, loss and loaders named by `cfg` (fills in cfg.model.student when it is None)."""
    from blazedistill.distill.augment import AugmentConfig
    from blazedistill.distill.dataset import build_dataloaders
    from blazedistill.distill.losses import get_loss
    from blazedistill.models.registry import DEFAULT_STUDENT, create_student
    from blazedistill.models.teachers import load_teacher

    log = _note if announce else _quiet
    teacher = load_teacher(cfg.model.teacher)
    spec = teacher.spec
    cfg.model.student = cfg.model.student or DEFAULT_STUDENT
    student = create_student(cfg.model.student, spec, **cfg.model.student_kwargs)
    loss_fn = get_loss(cfg.loss.name, spec.input_size, **cfg.loss.kwargs)

    preset = AugmentConfig.preset(cfg.data.augment).to_dict()
    augment = AugmentConfig.from_dict({**preset, **cfg.data.augment_overrides})
    loaders = build_dataloaders(
        cfg.data.train,
        val=cfg.data.val,
        val_fraction=cfg.data.val_fraction,
        input_size=spec.input_size,
        batch_size=cfg.train.batch_size,
        workers=cfg.data.workers,
        seed=cfg.train.seed,
        augment_config=augment,
        device=device,
        demo_samples=(cfg.data.demo_train, cfg.data.demo_val),
        log=log,
    )
    if loaders.val is None:
        raise ValueError("no validation images: give --val SRC or a --val-fraction above 0")
    val_loader = _subset(loaders.val, cfg.data.val_size, cfg.train.seed) if cfg.data.val_size else loaders.val
    return Parts(
        teacher=teacher,
        student=student,
        loss_fn=loss_fn,
        train_loader=loaders.train,
        val_loader=val_loader,
        preview=preview_images(cfg.data.preview, val_loader.dataset.refs, cfg.data.preview_count, log),
        data_note=f"data: {loaders.description}"
        + (f"; validating on a fixed subset of {len(val_loader.dataset)}" if cfg.data.val_size else ""),
    )


def preview_images(sources: list[str], val_refs: list, count: int, log=None) -> list[tuple[str, object]]:
    """(name, image) pairs for side_by_side/: the images under `sources`, else the first validation images."""
    from blazedistill.distill.data import UnreadableImage, read_image
    from blazedistill.imageio import list_images

    if sources:
        paths, problems = list_images(sources)
        for problem in problems:
            (log or _note)(f"preview: {problem}")
        return [(p.name, p) for p in paths[:count] if p.is_file()]
    pictures = []
    unique = list({ref.key: ref for ref in val_refs}.values())  # the demo set repeats its few photos
    for ref in unique[:count]:
        try:
            pictures.append((Path(ref.member or ref.path).name, read_image(ref)))
        except UnreadableImage as exc:
            (log or _note)(f"preview: skipped {ref.key}: {exc}")
    return pictures


def _subset(loader, size: int, seed: int):
    """The same validation loader over a seed-fixed subset of `size` of its images (kept in their order)."""
    from blazedistill.distill.dataset import FaceImageDataset, FaceLoader

    dataset = loader.dataset
    if size >= len(dataset):
        return loader
    chosen = sorted(random.Random(seed).sample(range(len(dataset)), size))
    subset = FaceImageDataset(
        [dataset.refs[i] for i in chosen],
        dataset.input_size,
        dataset.augment_config,
        dataset.seed,
        extras=dataset.extras,
        decode_size=dataset.decode_size,
    )
    return FaceLoader(
        subset,
        loader.loader.batch_size,
        shuffle=False,
        seed=seed,
        workers=loader.loader.num_workers,
        distributed=False,
        pin_memory=loader.loader.pin_memory,
        log=loader.log,
    )


def _note(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def _quiet(message: str) -> None:
    pass
