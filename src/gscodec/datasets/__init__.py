"""Datasets of splats: encode image datasets into ``.gsi`` tar shards and read them back.

- `encode_dataset`: webdataset tar shards, image folders (``class/xxx.jpg``)
  or ``image,caption`` CSVs in; tar shards of ``key.gsi`` + the input's side
  files (``.cls``, ``.txt``, ``.json``) out, with per-shard manifests and a
  run summary and open_clip's ``sizes.json``. Resumable, split across
  processes and torchrun/SLURM ranks.
  The ``gscodec encode-dataset`` command (`gscodec.datasets.cli`) wraps it.
- `iter_samples` / `GSIShardDataset`: webdataset-style sample dicts from any
  tar shards, with ``"gsi"`` decoded to `gscodec.Splats`. No torch needed.

Tar reading and writing go through webdataset (`gscodec.datasets.tario`);
gscodec keeps what is its own: partial files renamed on completion,
manifests, resume.
"""

from .pipeline import DEFAULT_ITERATIONS, encode_dataset
from .reader import GSIShardDataset, expand_shards, iter_samples
from .sources import expand_paths, plan_shards
from .split import rank_from_env, split_shards, stream_seed

__all__ = [
    "encode_dataset",
    "iter_samples",
    "GSIShardDataset",
    "expand_shards",
    "expand_paths",
    "plan_shards",
    "rank_from_env",
    "split_shards",
    "stream_seed",
    "DEFAULT_ITERATIONS",
]
