"""Map-style dataset over ImageRefs, epoch-aware sampling, skip-counting collate and the data loaders.

``FaceImageDataset[i]`` (or ``[(epoch, i)]``) decodes and augments one image into a ``Sample``, or returns an
``Unreadable`` marker. The collate function drops markers into ``Batch.skipped``; ``FaceLoader`` (a thin
wrapper over ``torch.utils.data.DataLoader``) reports each bad item once, in the main process, counts them
across workers and epochs, and yields only non-empty batches. ``EpochSampler`` sends (epoch, index) pairs to
the workers so augmentation follows the epoch even with persistent workers, and wraps a
``DistributedSampler`` so every rank sees its own shard of a seed-fixed shuffle.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm import tqdm

from .augment import AugmentConfig, augment, make_rng
from .data import ImageRef, UnreadableImage, read_image


class Sample(NamedTuple):
    """One decoded, augmented image and its dataset index."""

    index: int
    image: torch.Tensor  # (3, S, S) float32 in [-1, 1]


class Unreadable(NamedTuple):
    """Marker returned instead of a Sample for an item that cannot be decoded."""

    index: int
    key: str
    reason: str


@dataclass
class Batch:
    """Collated samples: images (N, 3, S, S), their dataset indices (N,), and the items skipped."""

    images: torch.Tensor
    indices: torch.Tensor
    skipped: list[Unreadable] = field(default_factory=list)

    def __len__(self) -> int:
        return self.images.shape[0]

    def pin_memory(self) -> Batch:
        return Batch(self.images.pin_memory(), self.indices.pin_memory(), self.skipped)


def collate_samples(items: Sequence[Sample | Unreadable]) -> Batch:
    """Stack the readable samples; unreadable markers go to ``Batch.skipped``."""
    samples = [s for s in items if isinstance(s, Sample)]
    skipped = [s for s in items if isinstance(s, Unreadable)]
    if samples:  # numpy's single-threaded copy: torch.stack's thread pool stalls when the cores are busy
        images = torch.from_numpy(np.stack([s.image.numpy() for s in samples]))
    else:
        images = torch.empty(0)
    indices = torch.tensor([s.index for s in samples], dtype=torch.int64)
    return Batch(images, indices, skipped)


class FaceImageDataset(Dataset):
    """Images named by ``refs``, decoded at reduced size and augmented into (3, S, S) tensors in [-1, 1].

    Indexing with an int uses the epoch set by ``set_epoch``; indexing with ``(epoch, index)`` (what
    ``EpochSampler`` yields) makes the sample independent of any worker's state. ``extras`` are the images
    used for canvas backgrounds and extra faces (default: ``refs`` themselves).
    """

    def __init__(
        self,
        refs: Sequence[ImageRef],
        input_size: int,
        augment_config: AugmentConfig | None = None,
        seed: int = 0,
        extras: Sequence[ImageRef] | None = None,
        decode_size: int | None = None,
    ) -> None:
        self.refs = list(refs)
        self.input_size = input_size
        self.augment_config = augment_config or AugmentConfig()
        self.seed = seed
        self.extras = list(extras) if extras is not None else self.refs
        self.decode_size = decode_size or 2 * input_size
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.refs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, key: int | tuple[int, int]) -> Sample | Unreadable:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        index = int(index)
        ref = self.refs[index]
        try:
            image = read_image(ref, self.decode_size)
        except UnreadableImage as e:
            return Unreadable(index, ref.key, str(e))
        rng = make_rng(self.seed, epoch, index)
        return Sample(index, augment(image, self.input_size, self.augment_config, rng, self._extra_source(rng)))

    def _extra_source(self, rng) -> Callable[[], Image.Image | None]:
        def extra() -> Image.Image | None:
            if not self.extras:
                return None
            try:
                return read_image(self.extras[int(rng.integers(len(self.extras)))], self.decode_size)
            except UnreadableImage:
                return None  # reported when it is drawn as a sample of its own

        return extra


class EpochSampler(Sampler):
    """Yields (epoch, index) pairs of a seed-fixed shuffle, one shard per distributed rank.

    Wraps ``DistributedSampler`` (with one replica when not distributed); ``set_epoch`` reshuffles.
    """

    def __init__(
        self, length: int, *, shuffle: bool, seed: int, num_replicas: int = 1, rank: int = 0, drop_last: bool = False
    ) -> None:
        self.base = DistributedSampler(
            range(length), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.base.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, i) for i in self.base)

    def __len__(self) -> int:
        return len(self.base)


def _print_note(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # workers decode with PIL; torch threads would only compete for the cores


class FaceLoader:
    """Batches of a FaceImageDataset; reports every unreadable item once and counts them (``skipped``).

    Iterating yields non-empty ``Batch`` objects. Call ``set_epoch(epoch)`` before each epoch.
    """

    def __init__(
        self,
        dataset: FaceImageDataset,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        workers: int = 0,
        distributed: bool | None = None,
        drop_last: bool = False,
        pin_memory: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if distributed is None:
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        replicas, rank = (torch.distributed.get_world_size(), torch.distributed.get_rank()) if distributed else (1, 0)
        self.dataset = dataset
        self.sampler = EpochSampler(len(dataset), shuffle=shuffle, seed=seed, num_replicas=replicas, rank=rank)
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=workers,
            collate_fn=collate_samples,
            pin_memory=pin_memory,
            drop_last=drop_last,
            persistent_workers=workers > 0,
            worker_init_fn=_worker_init if workers > 0 else None,
        )
        self.skipped: dict[str, str] = {}  # key -> reason, each reported once
        self.log = log or _print_note

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.loader:
            for bad in batch.skipped:
                if bad.key not in self.skipped:
                    self.skipped[bad.key] = bad.reason
                    self.log(f"skipped unreadable image {bad.key}: {bad.reason}")
            if len(batch):
                yield batch

    @property
    def skipped_count(self) -> int:
        """How many distinct items were unreadable so far."""
        return len(self.skipped)


@dataclass
class DataLoaders:
    """What ``build_dataloaders`` returns: the train and validation loaders and what data they hold."""

    train: FaceLoader
    val: FaceLoader | None
    demo: bool
    description: str


def build_dataloaders(
    data: Sequence[str] | None,
    *,
    val: Sequence[str] | None = None,
    val_fraction: float = 0.1,
    input_size: int = 128,
    batch_size: int = 64,
    workers: int = 2,
    seed: int = 0,
    augment_config: AugmentConfig | str = "default",
    val_augment_config: AugmentConfig | str = "none",
    video_fps: float = 1.0,
    device: torch.device | str = "cpu",
    distributed: bool | None = None,
    demo_samples: tuple[int, int] = (512, 64),
    log: Callable[[str], None] | None = None,
) -> DataLoaders:
    """Train and validation loaders from source specs (see ``data.parse_sources``), or the demo set.

    Validation: the ``val`` sources when given (items also in ``data`` are dropped from training), else a
    seed-fixed ``val_fraction`` of ``data`` (0: no validation loader). Training batches are shuffled by
    (seed, epoch) and sharded over ranks when torch.distributed is initialised (``distributed=None``);
    validation is not sharded (every rank sees all of it) and uses ``val_augment_config`` (default: the
    plain letterbox). The demo set validates on other augmented samples of its few photos (a fixed seed).
    """
    log = log or _print_note
    if isinstance(augment_config, str):
        augment_config = AugmentConfig.preset(augment_config)
    if isinstance(val_augment_config, str):
        val_augment_config = AugmentConfig.preset(val_augment_config)
    demo = not data
    if demo:
        train_refs, val_refs, description = _demo_split(*demo_samples, log)
        val_dataset = FaceImageDataset(val_refs, input_size, augment_config, seed + 1_000_003, extras=train_refs)
    else:
        train_refs, val_refs, description = _real_split(data, val, val_fraction, seed, video_fps, log)
        val_dataset = FaceImageDataset(val_refs, input_size, val_augment_config, seed)
    train_dataset = FaceImageDataset(train_refs, input_size, augment_config, seed)
    pin = torch.device(device).type == "cuda"
    train = FaceLoader(
        train_dataset, batch_size, shuffle=True, seed=seed, workers=workers, distributed=distributed,
        drop_last=len(train_refs) >= 2 * batch_size, pin_memory=pin, log=log,
    )
    val_loader = None
    if val_refs:
        val_loader = FaceLoader(
            val_dataset, batch_size, shuffle=False, seed=seed, workers=workers, distributed=False,
            pin_memory=pin, log=log,
        )
    return DataLoaders(train, val_loader, demo, description)


def _demo_split(num_train: int, num_val: int, log: Callable[[str], None]):
    from .demo import demo_message, demo_refs, find_demo_photos

    photos = find_demo_photos()
    log(demo_message(num_train, num_val, photos))
    return demo_refs(num_train, photos), demo_refs(num_val, photos), f"demo: {photos.describe()}"


def _real_split(data, val, val_fraction, seed, video_fps, log):
    from .data import parse_sources, split_refs

    refs = parse_sources(data, video_fps=video_fps, log=log)
    if val:
        val_refs = parse_sources(val, video_fps=video_fps, log=log)
        held_out = {r.key for r in val_refs}
        train_refs = [r for r in refs if r.key not in held_out]
        if len(train_refs) < len(refs):
            log(f"dropped {len(refs) - len(train_refs)} training items that are also in the validation sources")
        how = "explicit validation sources"
    else:
        train_refs, val_refs = split_refs(refs, val_fraction, seed)
        how = f"validation = {val_fraction:.0%} of the data, split by seed {seed}"
    if not train_refs:
        raise ValueError("no training images left after holding out the validation set")
    return train_refs, val_refs, f"{len(train_refs)} training and {len(val_refs)} validation images ({how})"
