"""Torch data pipeline over `gscodec.datasets.iter_samples`.

Splat batches are a padded float tensor [B, N, 8] (`gscodec.Splats.to_array`
rows) plus a bool mask [B, N] (True = real splat), so images with different
splat counts share a batch. RGB images go through open_clip's preprocessing.
Captions come from ``.txt`` (one caption per line; one is drawn per use) or,
for class-labelled data, from ``.cls`` + class names + prompt templates.
"""

from __future__ import annotations

import io
import logging
import os
import random
import tarfile
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from gscodec import Splats
from gscodec._io import read_class_names
from gscodec.datasets import expand_paths, expand_shards, iter_samples, plan_shards, stream_seed
from gscodec.datasets.shards import read_sizes
from gscodec.datasets.sources import CLASSES_FILE, IMAGE_EXTENSIONS
from gscodec.datasets.tario import count_tar_samples, member_key

__all__ = [
    "collate_splats",
    "collate_gs",
    "Captioner",
    "ShardStream",
    "TarIndex",
    "count_samples",
    "read_class_names",
    "iter_eval_samples",
    "decode_image",
    "dist_info",
]

Sample = dict[str, Any]
logger = logging.getLogger("gscodec.clip")


def dist_info() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def collate_splats(
    sets: Sequence[np.ndarray | torch.Tensor | Splats],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad splat sets ((N_i, 8) arrays or `Splats`) to ``([B, N, 8] float32, [B, N] bool)``.

    N is the largest N_i; padding rows are zero and masked out (the stem
    never lets them reach an output).
    """
    arrays = [
        torch.as_tensor(s.to_array() if isinstance(s, Splats) else s, dtype=torch.float32)
        for s in sets
    ]
    for i, a in enumerate(arrays):
        if a.ndim != 2 or a.shape[1] != 8:
            raise ValueError(f"splat set {i} must be (N, 8), got {tuple(a.shape)}")
    n = max((a.shape[0] for a in arrays), default=0)
    splats = torch.zeros(len(arrays), n, 8)
    mask = torch.zeros(len(arrays), n, dtype=torch.bool)
    for i, a in enumerate(arrays):
        splats[i, : a.shape[0]] = a
        mask[i, : a.shape[0]] = True
    return splats, mask


def collate_gs(batch: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
    """Collate ``(splats, *rest)`` items to ``(splats [B,N,8], mask [B,N], *rest batched)``."""
    splats, mask = collate_splats([item[0] for item in batch])
    rest = (
        torch.utils.data.default_collate([item[1:] for item in batch]) if len(batch[0]) > 1 else []
    )
    return (splats, mask, *rest)


def decode_image(sample: Sample) -> Image.Image:
    """The sample's image member (``jpg``, ``png``, ...) as an RGB PIL image."""
    ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
    if ext is None:
        raise KeyError(f"sample {sample.get('__key__')!r} has no image (members: {sorted(sample)})")
    return Image.open(io.BytesIO(sample[ext])).convert("RGB")


class Captioner:
    """Sample -> caption: a line of ``.txt``, else a template filled with the ``.cls`` name.

    Templates are format strings (``"a photo of a {}."``) or callables, as in open_clip.

    ``rng=None`` is deterministic (first caption, first template), for evaluation.
    """

    def __init__(
        self,
        class_names: Sequence[str] | None = None,
        templates: Sequence[str | Callable[[str], str]] = ("a photo of a {}.",),
    ):
        self.class_names = list(class_names) if class_names else None
        self.templates = list(templates)

    def __call__(self, sample: Sample, rng: random.Random | None = None) -> str:
        if "txt" in sample:
            lines = [line for line in sample["txt"].decode("utf-8").splitlines() if line.strip()]
            if lines:
                return lines[0] if rng is None else rng.choice(lines)
        if "cls" in sample and self.class_names:
            label = int(sample["cls"])
            template = self.templates[0] if rng is None else rng.choice(self.templates)
            name = self.class_names[label]
            return template(name) if callable(template) else template.format(name)
        raise KeyError(
            f"sample {sample.get('__key__')!r}: no .txt caption, and no .cls with class names"
        )


class ShardStream(IterableDataset):
    """Items ``transform(sample, rng)`` from tar shards, for a torch ``DataLoader``.

    Shards are split over distributed ranks and loader workers (each reads
    whole shards, so there must be at least ranks x workers shards). With
    ``shuffle``, shard order and samples are shuffled reproducibly from
    ``seed + epoch`` (call `set_epoch`), so a resumed run replays the same order.
    ``repeat`` restarts the stream (with a new seed) when it runs out, so
    every rank can take the same number of steps per epoch.
    """

    def __init__(
        self,
        paths: Any,
        transform: Callable[[Sample, random.Random], Any],
        *,
        shuffle: bool = True,
        repeat: bool = True,
        seed: int = 0,
        decode_gsi: bool = True,
        buffer_size: int = 1000,
    ):
        self.shards = expand_shards(paths)
        self.transform = transform
        self.shuffle = shuffle
        self.repeat = repeat
        self.seed = seed
        self.decode_gsi = decode_gsi
        self.buffer_size = buffer_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffle of ``epoch`` on the next pass (as a DistributedSampler does)."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[Any]:
        rank, world = dist_info()
        worker = get_worker_info()
        n_workers, worker_id = (worker.num_workers, worker.id) if worker else (1, 0)
        part, parts = rank * n_workers + worker_id, world * n_workers
        if len(self.shards) < parts:
            raise ValueError(
                f"{len(self.shards)} shards cannot feed {world} ranks x {n_workers} workers; "
                "use fewer workers or more shards"
            )
        # Distinct, reproducible streams per (epoch, reader): 1000 passes per epoch is plenty.
        for pass_index in range(1000 if self.repeat else 1):
            seed = stream_seed(self.seed, self.epoch * 1000 + pass_index, part, parts)
            rng = random.Random(seed)
            for sample in iter_samples(
                self.shards,
                decode_gsi=self.decode_gsi,
                shuffle=self.shuffle,
                seed=seed,
                rank=part,
                world_size=parts,
                buffer_size=self.buffer_size,
            ):
                yield self.transform(sample, rng)


class TarIndex:
    """Random access to one member type of uncompressed tar shards, by sample key.

    Pairs GS samples with their RGB originals (``key.jpg`` in other shards)
    whatever the shard layout or shuffle order; holds only
    ``key -> (shard, offset, size)`` in memory.
    """

    def __init__(self, paths: Any, extensions: Sequence[str] = IMAGE_EXTENSIONS):
        self.shards = expand_shards(paths)
        self.entries: dict[str, tuple[int, int, int, str]] = {}
        for shard_id, shard in enumerate(self.shards):
            with tarfile.open(shard, "r:") as tar:
                for member in tar:
                    parts = member_key(member.name) if member.isreg() else None
                    if parts and parts[1] in extensions and parts[0] not in self.entries:
                        self.entries[parts[0]] = (
                            shard_id,
                            member.offset_data,
                            member.size,
                            parts[1],
                        )
        self._handles: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, key: str) -> Sample:
        """``{"__key__": key, ext: bytes}`` for the indexed member of ``key``."""
        try:
            shard_id, offset, size, ext = self.entries[key]
        except KeyError:
            raise KeyError(
                f"sample {key!r} is not in the indexed shards ({len(self.shards)} shards)"
            ) from None
        handle = self._handles.get(shard_id)
        if handle is None:  # opened lazily, so each loader worker has its own handles
            handle = self._handles[shard_id] = open(self.shards[shard_id], "rb")
        handle.seek(offset)
        return {"__key__": key, ext: handle.read(size)}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handles": {}}


def count_samples(paths: Any) -> int:
    """Number of samples in tar shards, from the ``sizes.json`` next to them.

    ``gscodec encode-dataset`` writes ``sizes.json`` (as open_clip reads it);
    for shards made elsewhere without one, the tar headers are read instead.
    """
    shards = expand_shards(paths)
    sizes = read_sizes(shards)
    if sizes is not None:
        return sum(sizes.values())
    logger.warning("no sizes.json for all of %d shard(s): counting samples from tar headers "
                   "(pass --train-num-samples to skip this)", len(shards))
    return sum(count_tar_samples(shard) for shard in shards)


def _is_shard_input(path: str) -> bool:
    if os.path.isdir(path):
        return any(name.endswith(".tar") for name in os.listdir(path))
    return path.endswith(".tar")


def iter_eval_samples(
    paths: Any, decode_gsi: bool = True
) -> tuple[Iterator[Sample], list[str] | None]:
    """Samples of an evaluation set in a fixed order, and its class names if known.

    ``paths``: tar shards or folders of them (RGB or GS), or, for RGB, an
    image folder (``class/xxx.jpg``) or an ``image,caption`` CSV (read via
    `gscodec.datasets.plan_shards`). Class names come from the
    ``classes.txt`` next to the shards or made for the image folder.
    """
    inputs = expand_paths(paths)
    if all(_is_shard_input(p) for p in inputs):
        shards = expand_shards(inputs)
        names_file = os.path.join(os.path.dirname(shards[0]), CLASSES_FILE)
        names = read_class_names(names_file) if os.path.isfile(names_file) else None
        return iter_samples(shards, decode_gsi=decode_gsi), names
    plan = plan_shards(inputs, shard_size=1 << 30)
    names_bytes = plan.extra_files.get(CLASSES_FILE)
    names = read_class_names(names_bytes) if names_bytes else None

    def from_plan() -> Iterator[Sample]:
        for task in plan.tasks:
            for s in task.samples():
                if s.error is not None:
                    raise OSError(f"{task.name}: sample {s.key!r}: {s.error}")
                yield {"__key__": s.key, "jpg": s.image, **s.files}

    return from_plan(), names
