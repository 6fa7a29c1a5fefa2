"""Output shards: a deterministic tar writer that only publishes complete files.

A shard ``NAME.tar`` is written as ``NAME.tar.partial`` and renamed when
complete; its manifest ``NAME.manifest.json`` is written (also atomically)
after the rename and is the mark of a finished shard. A kill at any point
leaves either no manifest (the shard is redone) or a finished shard.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import uuid
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "ShardWriter",
    "manifest_path",
    "read_manifest",
    "write_bytes_atomic",
    "write_json_atomic",
]

PARTIAL_SUFFIX = ".partial"
MANIFEST_SUFFIX = ".manifest.json"


def manifest_path(shard: str | os.PathLike) -> Path:
    """``dir/NAME.tar`` -> ``dir/NAME.manifest.json``."""
    shard = Path(shard)
    return shard.with_name(shard.name[: -len(".tar")] + MANIFEST_SUFFIX)


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a unique temporary file and a rename."""
    path = Path(path)
    # Unique per process (ranks may write the same summary); "x" keeps umask permissions.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically (see `write_bytes_atomic`)."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_manifest(path: str | os.PathLike) -> dict | None:
    """Return a shard's manifest, or None if it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class ShardWriter:
    """Write samples into ``path`` (a ``.tar``) through ``path + ".partial"``.

    Members are written in the order given, with fixed metadata (mtime 0,
    uid/gid 0, mode 0644), so the same samples always give the same bytes.
    Use as a context manager: `commit` publishes the file; leaving the block
    without committing removes the partial file.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        self._file = open(self.partial, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.GNU_FORMAT)
        self._keys: set[str] = set()
        self.count = 0

    def add(self, key: str, files: Mapping[str, bytes]) -> None:
        """Add one sample: ``key.EXT`` for each ``EXT -> bytes`` in ``files`` (in order)."""
        if key in self._keys:
            raise ValueError(f"{self.path}: duplicate sample key {key!r}")
        self._keys.add(key)
        for ext, data in files.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            self._tar.addfile(info, io.BytesIO(data))
        self.count += 1

    def commit(self) -> tuple[int, str]:
        """Finish the tar, make it durable and rename it; return (bytes, sha256)."""
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        digest = hashlib.sha256()
        with open(self.partial, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        size = self.partial.stat().st_size
        os.replace(self.partial, self.path)
        _fsync_dir(self.path.parent)
        return size, digest.hexdigest()

    def abort(self) -> None:
        """Drop the partial file."""
        if not self._file.closed:
            self._tar.close()
            self._file.close()
        self.partial.unlink(missing_ok=True)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.partial.exists():
            self.abort()
