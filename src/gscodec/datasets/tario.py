"""Tar shards through webdataset: samples in, samples out, counts.

Grouping members into samples (``key.EXT`` -> ``{"__key__": key, EXT: bytes}``)
and writing samples are webdataset's own (`group_by_keys`, `TarWriter`), so
our shards read and write exactly as open_clip's trainer expects. gscodec adds
what webdataset leaves out and a codec that reads files from strangers needs:
members that are not data (symlinks, hard links, devices, unsafe names such as
``../x`` or ``/etc/x``, names without an extension) are reported with a reason
instead of being dropped silently, and a tar that stops inside a header is an
error, not a quiet end.

``import webdataset`` imports torch whenever torch is installed (its
``webdataset/pytorch.py``), and the codec core never imports torch; the two
webdataset modules used here need nothing of torch, so while torch is not
loaded they are loaded from webdataset's files under a private package name
with a torch-free stand-in for ``webdataset.pytorch``. Once torch is loaded
(``gscodec.clip``) the real webdataset is used.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
import secrets
import socket
import sys
import tarfile
import types
from glob import escape as glob_escape
from pathlib import Path
from typing import Any, Iterator, Mapping

from .._io import fsync_dir

__all__ = [
    "ShardWriter",
    "remove_stale_partials",
    "iter_tar_samples",
    "count_tar_samples",
    "member_key",
]

_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")  # gzip, bzip2, xz
_PRIVATE = "gscodec._webdataset"


@functools.lru_cache(maxsize=None)
def _webdataset(module: str) -> types.ModuleType:
    """``webdataset.<module>``, without importing torch when torch is not loaded yet."""
    if "torch" in sys.modules or "webdataset" in sys.modules:
        return importlib.import_module(f"webdataset.{module}")
    if _PRIVATE not in sys.modules:
        spec = importlib.util.find_spec("webdataset")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("gscodec.datasets needs webdataset (pip install webdataset)")
        package = types.ModuleType(_PRIVATE)
        package.__path__ = list(spec.submodule_search_locations)
        stand_in = types.ModuleType(f"{_PRIVATE}.pytorch")
        for name in ("IterableDataset", "DataLoader", "TorchTensor"):  # never used by us
            setattr(stand_in, name, type(name, (), {}))
        sys.modules[_PRIVATE] = package
        sys.modules[stand_in.__name__] = stand_in
    return importlib.import_module(f"{_PRIVATE}.{module}")


def member_key(name: str) -> tuple[str, str] | None:
    """Split a member name into ``(key, extension)`` as webdataset does, or None.

    The key is the path up to the first dot of the file name; the extension
    (lower-cased) is the rest: ``a/b.seg.png`` -> ``("a/b", "seg.png")``.
    """
    key, ext = _webdataset("tariterators").base_plus_ext(name)
    return None if key is None else (key, ext.lower())


def _problem(member: tarfile.TarInfo, name: str) -> str | None:
    """Why ``member`` is not sample data, or None when it is (checked cheaply first)."""
    if not member.isreg():
        if member.issym() or member.islnk():
            return f"{'symlink' if member.issym() else 'hard link'} member, not read"
        return "special member (device or FIFO), not read"
    if name.startswith("/") or (".." in name and ".." in name.split("/")):
        return "unsafe member name (absolute or with '..'), rejected"
    base = name.rsplit("/", 1)[-1]
    if base[:1] in ("", ".") or "." not in base:  # what webdataset's base_plus_ext rejects
        return "member name has no extension, belongs to no sample"
    return None


def _normalize(name: str) -> str:
    return name[2:] if name.startswith("./") else name


def _is_meta(name: str) -> bool:
    """webdataset's ``__name__`` metadata members: not samples, skipped silently."""
    return name.startswith("__") and name.endswith("__") and "/" not in name


def _files(path: str, problems: list[tuple[str, str]]) -> Iterator[dict[str, Any]]:
    """The data members of a tar as webdataset file records; the others go to ``problems``."""
    with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
        for member in tar:
            name = _normalize(member.name)
            if member.isdir() or _is_meta(name):
                continue
            reason = _problem(member, name)
            if reason is not None:
                problems.append((member.name, reason))
                continue
            handle = tar.extractfile(member)
            yield {"fname": name, "data": handle.read() if handle else b"", "__url__": path}
            tar.members = []  # a stream: keep no headers
        end = tar.offset
    _check_tar_end(path, end)


def _check_tar_end(path: str, end: int) -> None:
    """Raise if an uncompressed tar stops inside a header.

    tarfile ends iteration quietly at a partial or garbled header after the
    first member; a complete archive has zero blocks (or nothing) there.
    Compressed tars need no check: the decompressor detects truncation.
    """
    with open(path, "rb") as handle:
        if handle.read(6).startswith(_COMPRESSED_MAGIC):
            return
        handle.seek(end)
        tail = handle.read(tarfile.BLOCKSIZE)
    if tail.strip(b"\0"):
        raise tarfile.ReadError(f"{path}: truncated or corrupt tar header at byte {end}")


def iter_tar_samples(path: str | os.PathLike,
                     problems: list[tuple[str, str]] | None = None) -> Iterator[dict[str, Any]]:
    """Yield ``{"__key__": key, "__shard__": path, EXT: bytes, ...}`` per sample of a tar.

    Consecutive members sharing a key form a sample (webdataset's
    `group_by_keys`). Members that are not sample data, and a repeated
    ``key.EXT`` within a sample, are appended to ``problems`` as
    ``(member name, reason)`` (pass a list to see them). Raises
    `tarfile.TarError` or `OSError` when the file is not a tar or is truncated.
    """
    path = os.fspath(path)
    problems = [] if problems is None else problems

    def record(exc: Exception) -> bool:
        if not isinstance(exc, ValueError):
            return False  # not a duplicate member: let it propagate
        problems.append((str(exc).split(":", 1)[0], "repeated member of one sample, not read"))
        return True

    tariterators = _webdataset("tariterators")
    for sample in tariterators.group_by_keys(_files(path, problems), handler=record):
        sample["__shard__"] = sample.pop("__url__")
        yield sample


def count_tar_samples(path: str | os.PathLike) -> int:
    """Samples (runs of members sharing a key) of a tar, read from its headers only.

    For shards made elsewhere; shards made by ``encode-dataset`` have their
    counts in ``sizes.json``.
    """
    count, last = 0, None
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            name = _normalize(member.name)
            parts = None if _is_meta(name) or _problem(member, name) else member_key(name)
            if parts is not None and parts[0] != last:
                count, last = count + 1, parts[0]
    return count


def _partial_tag() -> str:
    """``<host>-<pid>``: who writes a partial file, so stale ones can be told from live ones."""
    return f"{socket.gethostname()}-{os.getpid()}"


def remove_stale_partials(path: str | os.PathLike) -> None:
    """Delete partial files of ``path`` left by killed writers of this host.

    A partial file whose writer still runs (another run encoding the same
    shard at the same time) or ran on another host is left alone.
    """
    path = Path(path)
    host = socket.gethostname()
    for partial in path.parent.glob(f".{glob_escape(path.name)}.{glob_escape(host)}-*.partial"):
        pid = partial.name[len(f".{path.name}.{host}-"):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            partial.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class ShardWriter:
    """Write samples into ``path`` (a ``.tar``) through a unique ``.partial`` file.

    Samples go through webdataset's `TarWriter` with fixed metadata (mtime 0,
    mode 0644, no owner names), so the same samples always give the same
    bytes. The partial file is ``.NAME.tar.<host>-<pid>-<token>.partial`` in
    the same folder: two runs (or a rerun right after a kill) never share one,
    it never matches ``*.tar``, and `remove_stale_partials` can tell a killed
    writer's leftover from a live one. Use as a context manager: `commit` publishes the
    file; leaving the block without committing removes the partial file.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(
            f".{self.path.name}.{_partial_tag()}-{secrets.token_hex(4)}.partial")
        self._file = open(self.partial, "xb")
        self._tar = _webdataset("writer").TarWriter(
            self._file, user="", group="", mode=0o644, mtime=0, encoder=False,
            format="GNU_FORMAT")
        self._keys: set[str] = set()
        self.count = 0

    def add(self, key: str, files: Mapping[str, bytes]) -> None:
        """Add one sample: ``key.EXT`` for each ``EXT -> bytes`` in ``files``."""
        if key in self._keys:
            raise ValueError(f"{self.path}: duplicate sample key {key!r}")
        self._keys.add(key)
        self._tar.write({"__key__": key, **files})
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
        fsync_dir(self.path.parent)
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
