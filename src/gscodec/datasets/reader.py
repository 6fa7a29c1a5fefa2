"""Reading shards back: webdataset-style samples, with ``.gsi`` decoded to `Splats`.

Works on any webdataset tar (the ``.gsi`` shards written by `encode_dataset`
and plain image shards alike; samples are grouped by webdataset, see
`gscodec.datasets.tario`) and needs no torch; ``gscodec.clip.ShardStream``
builds its torch ``IterableDataset`` on `iter_samples`. Members that are not
sample data (links, unsafe names) are logged and skipped. ``.gsi`` files
written with a shared zstd dictionary are decoded with the ``gsi.dict`` found
beside their shard (see `gscodec.datasets.shards.read_dictionary`).
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any, Iterator, Sequence

from gscodec import format as gsi_format
from gscodec.errors import GSIError

from .shards import read_dictionary
from .sources import expand_paths
from .split import split_shards, stream_seed
from .tario import iter_tar_samples

__all__ = ["iter_samples", "GSIShardDataset", "expand_shards"]

logger = logging.getLogger("gscodec.datasets")


def expand_shards(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Shard paths from paths, globs and ``{00000..00009}`` ranges.

    A directory stands for the ``*.tar`` shards in it (sorted).
    """
    shards: list[str] = []
    for path in expand_paths(paths):
        if os.path.isdir(path):
            found = sorted(os.path.join(path, n) for n in os.listdir(path) if n.endswith(".tar"))
            if not found:
                raise FileNotFoundError(f"shard folder {path!r} holds no .tar files")
            shards += found
        else:
            shards.append(path)
    return shards


def _split(shards: list[str], rank: int | None, world_size: int | None) -> list[str]:
    if rank is None and world_size is None:
        return shards
    if rank is None or world_size is None:
        raise ValueError("give both rank and world_size, or neither")
    return split_shards(shards, rank, world_size)


def _samples(shards: list[str], decode_gsi: bool, on_error: str) -> Iterator[dict[str, Any]]:
    dictionaries: dict[str, Any] = {}  # folder -> its gsi.dict or None, read once
    for shard in shards:
        problems: list[tuple[str, str]] = []
        folder = os.path.dirname(os.path.abspath(shard))
        if decode_gsi and folder not in dictionaries:
            dictionaries[folder] = read_dictionary(folder)
        dictionary = dictionaries.get(folder)
        for sample in iter_tar_samples(shard, problems):
            if problems:
                _log_problems(shard, problems)
            key = sample["__key__"]
            if decode_gsi and "gsi" in sample:
                try:
                    sample["gsi"] = gsi_format.loads(sample["gsi"], dictionary)
                except GSIError as exc:
                    if on_error == "raise":
                        raise GSIError(f"{shard}: sample {key!r}: {exc}") from exc
                    logger.warning("%s: skipped sample %r: %s", shard, key, exc)
                    continue
            yield sample
        _log_problems(shard, problems)


def _log_problems(shard: str, problems: list[tuple[str, str]]) -> None:
    for name, reason in problems:
        logger.warning("%s: skipped member %r: %s", shard, name, reason)
    problems.clear()


def iter_samples(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    decode_gsi: bool = True,
    shuffle: bool = False,
    seed: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    buffer_size: int = 1000,
    on_error: str = "raise",
) -> Iterator[dict[str, Any]]:
    """Yield one dict per sample from webdataset tar shards.

    ``paths``: shard paths, globs, ``{00000..00009}`` ranges, or folders of
    ``*.tar``. Each sample is ``{"__key__": key, "__shard__": shard path,
    EXT: bytes, ...}`` for its tar members ``key.EXT`` (``"jpg"``, ``"cls"``,
    ``"txt"``, ``"json"``, ...), except that with ``decode_gsi`` the ``"gsi"``
    entry is the decoded `gscodec.Splats` (raw bytes otherwise), decoded with
    the ``gsi.dict`` beside the shard when there is one (a file that needs a
    dictionary it does not find raises `GSIError` naming the dictionary id).

    ``shuffle``: shuffle the shard order and the samples through a buffer of
    ``buffer_size``, reproducibly from ``seed`` (change the seed per epoch).
    ``rank``/``world_size``: read only shards ``rank, rank + world_size, ...``
    (split by shard, before shuffling the order, so ranks never overlap).
    ``on_error="skip"`` logs and skips samples whose ``.gsi`` fails to decode
    instead of raising `GSIError`.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
        raise ValueError(f"buffer_size must be a positive int, got {buffer_size!r}")
    # Checked now, not at the first next(): errors point at the call.
    shards = _split(expand_shards(paths), rank, world_size)
    if not shuffle:
        return _samples(shards, decode_gsi, on_error)
    rng = random.Random(seed)
    rng.shuffle(shards)
    return _buffer_shuffle(_samples(shards, decode_gsi, on_error), rng, buffer_size)


def _buffer_shuffle(samples: Iterator[dict[str, Any]], rng: random.Random,
                    buffer_size: int) -> Iterator[dict[str, Any]]:
    """Shuffle a stream through a buffer: each output is a random buffered sample."""
    buffer: list[dict[str, Any]] = []
    for sample in samples:
        if len(buffer) < buffer_size:
            buffer.append(sample)
            continue
        index = rng.randrange(len(buffer))
        buffer[index], sample = sample, buffer[index]
        yield sample
    rng.shuffle(buffer)
    yield from buffer


class GSIShardDataset:
    """An iterable over webdataset shards; each pass calls `iter_samples`.

    ``GSIShardDataset(paths, **options)`` takes the options of `iter_samples`.
    With ``shuffle=True`` each epoch reshuffles when `set_epoch` is called
    (the seed follows `gscodec.datasets.split.stream_seed`), as with a
    DistributedSampler.
    """

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike], **options: Any):
        self.shards = expand_shards(paths)
        self.options = dict(options)
        self.epoch = 0
        iter_samples(self.shards, **self.options)  # validates the options now

    def set_epoch(self, epoch: int) -> None:
        """Use a different shuffle for each epoch."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        options = dict(self.options)
        options["seed"] = stream_seed(options.get("seed", 0), self.epoch)
        return iter_samples(self.shards, **options)

    def __repr__(self) -> str:
        return f"GSIShardDataset({len(self.shards)} shards, {self.options})"
