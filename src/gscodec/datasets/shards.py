"""Shard manifests and ``sizes.json``: what marks a finished shard.

A shard ``NAME.tar`` is written through a unique partial file and renamed
when complete (`gscodec.datasets.tario.ShardWriter`); its manifest
``NAME.manifest.json`` is written atomically after the rename and is the mark
of a finished shard. A kill at any point leaves either no manifest (the shard
is redone) or a finished shard. ``sizes.json`` maps each finished shard's file
name to its sample count, as open_clip's trainer reads it. ``gsi.dict``, when
present, is the zstd dictionary the folder's ``.gsi`` files were written with
(``encode-dataset --dictionary``); readers of the folder's shards use it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import zstandard

from gscodec.errors import GSIError

__all__ = ["manifest_path", "read_manifest", "read_sizes", "read_dictionary", "SIZES_FILE",
           "DICTIONARY_FILE"]

MANIFEST_SUFFIX = ".manifest.json"
#: open_clip's per-folder sample counts: ``{"NAME.tar": count, ...}``.
SIZES_FILE = "sizes.json"
#: The zstd dictionary shared by the ``.gsi`` files of the shards in a folder.
DICTIONARY_FILE = "gsi.dict"


def manifest_path(shard: str | os.PathLike) -> Path:
    """``dir/NAME.tar`` -> ``dir/NAME.manifest.json``."""
    shard = Path(shard)
    return shard.with_name(shard.name[: -len(".tar")] + MANIFEST_SUFFIX)


def read_manifest(path: str | os.PathLike) -> dict | None:
    """Return a shard's manifest, or None if it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_sizes(shards: list[str]) -> dict[str, int] | None:
    """Sample count of each shard from the ``sizes.json`` next to it, or None if any lacks one."""
    counts: dict[str, int] = {}
    tables: dict[str, dict] = {}
    for shard in shards:
        folder, name = os.path.split(os.path.abspath(shard))
        if folder not in tables:
            try:
                tables[folder] = json.loads(Path(folder, SIZES_FILE).read_text())
            except (OSError, ValueError):
                return None
        count = tables[folder].get(name) if isinstance(tables[folder], dict) else None
        if not isinstance(count, int):
            return None
        counts[shard] = count
    return counts


def read_dictionary(folder: str | os.PathLike) -> zstandard.ZstdCompressionDict | None:
    """The zstd dictionary ``folder/gsi.dict``, or None when there is none.

    Raises `GSIError` when the file exists but is not a zstd dictionary with an id.
    """
    path = Path(folder, DICTIONARY_FILE)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    dictionary = zstandard.ZstdCompressionDict(data)
    # A zstd dictionary starts with its magic number and a non-zero id; raw
    # content would load as a "dictionary" of id 0 that no file can name.
    if not dictionary.dict_id():
        raise GSIError(f"{path}: not a zstd dictionary with an id")
    return dictionary
