"""Who reads what: ranks from the environment, shard splits and the one shuffle-seed rule."""

from __future__ import annotations

import os
from typing import Mapping, Sequence, TypeVar

__all__ = ["rank_from_env", "split_shards", "stream_seed"]

T = TypeVar("T")


def rank_from_env(environ: Mapping[str, str] | None = None) -> tuple[int, int, int | None]:
    """``(rank, world_size, local_rank)`` from torchrun or SLURM variables.

    torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` win over SLURM's
    ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``; without either the
    answer is ``(0, 1, None)``.
    """
    env = os.environ if environ is None else environ
    for rank_var, world_var, local_var in (
        ("RANK", "WORLD_SIZE", "LOCAL_RANK"),
        ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
    ):
        if rank_var in env and world_var in env:
            try:
                rank, world = int(env[rank_var]), int(env[world_var])
                local = int(env[local_var]) if local_var in env else None
            except ValueError as exc:
                raise ValueError(f"environment {rank_var}/{world_var}/{local_var}: {exc}") from None
            return rank, world, local
    return 0, 1, None


def split_shards(shards: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Shards ``rank, rank + world_size, ...``: every shard read by exactly one reader.

    Raises `ValueError` unless ``0 <= rank < world_size``.
    """
    if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int)
            and 0 <= rank < world_size):
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
    return list(shards[rank::world_size])


def stream_seed(seed: int, epoch: int, reader: int = 0, readers: int = 1) -> int:
    """The shuffle seed of one reader's pass: ``(seed + epoch) * readers + reader``.

    Distinct for every reader of a pass and reproducible, so a resumed run
    replays the same order. ``epoch`` counts passes (a repeating stream uses
    ``epoch * passes_per_epoch + pass``).
    """
    return (seed + epoch) * readers + reader
