"""Files: atomic writes, image loading and class-name lists, for every part of gscodec.

One atomic writer serves the CLI, the PIL-style API and the dataset
pipeline: data goes to a uniquely named temporary file in the target's own
folder, is fsynced, renamed over the target, and the folder is fsynced so the
rename itself survives a crash. Temporary names end in ``.tmp`` (never
``.gsi``/``.png``/``.tar``), so a killed run's leftovers never match a glob
for outputs, and they carry a random token, so two runs writing the same
file at once (or a rerun right after a kill) never collide.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

__all__ = [
    "atomic_path",
    "atomic_write",
    "check_replaceable",
    "write_json_atomic",
    "temporary_name",
    "fsync_dir",
    "load_image",
    "open_image",
    "read_class_names",
]


def temporary_name(path: str | os.PathLike) -> Path:
    """A unique hidden sibling of ``path``: ``dir/.NAME.<pid>-<token>.tmp``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def fsync_dir(path: str | os.PathLike) -> None:
    """Make renames inside folder ``path`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on folders; the rename still happened
        pass
    finally:
        os.close(fd)


def check_replaceable(path: str | os.PathLike) -> None:
    """Refuse to replace anything but a regular file (or nothing).

    A rename over a symlink, FIFO or device node would silently turn it into
    a regular file: the user asked to write *to* it, not to destroy it.
    Raises `FileExistsError` naming the kind of file.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        kind = ("a symlink" if stat.S_ISLNK(mode) else "a directory" if stat.S_ISDIR(mode)
                else "a FIFO" if stat.S_ISFIFO(mode) else "a device or special file")
        raise FileExistsError(f"output {str(path)!r} is {kind}, not a regular file; "
                              f"refusing to replace it")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; publish it as ``path`` when the block succeeds.

    The caller writes the temporary file (any way it likes: ``open``, Pillow's
    ``save(tmp, format=...)``); on success it is fsynced and renamed onto
    ``path`` and the folder fsynced; on error it is deleted. Raises
    `FileNotFoundError` when the folder does not exist and `FileExistsError`
    when ``path`` exists and is not a regular file.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: output directory {str(path.parent)!r} does not exist")
    check_replaceable(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        with open(tmp, "xb") as handle:  # "x": never follow a planted file
            handle.write(data)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def load_image(image: Any, *, max_pixels: int | None = None) -> np.ndarray:
    """An H x W x 3 uint8 array from a PIL image, an array, an image path or encoded bytes.

    Arrays may be H x W (grey), H x W x 3 or H x W x 4 (alpha dropped), uint8.
    Paths and bytes are decoded by `open_image` (see there for errors and
    ``max_pixels``).
    """
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"image array must be uint8, got {image.dtype}")
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError(f"image array must be H x W, H x W x 3 or H x W x 4, "
                             f"got shape {image.shape}")
        return np.ascontiguousarray(image[:, :, :3])
    return np.asarray(open_image(image, max_pixels=max_pixels))


def open_image(image: Any, *, max_pixels: int | None = None) -> Image.Image:
    """A decoded RGB PIL image from a path, encoded bytes or a PIL image.

    Raises `FileNotFoundError` for a missing path and `ValueError` for data
    that is not a readable image (Pillow's decompression-bomb limit applies),
    or, with ``max_pixels``, a file whose header declares more pixels (checked
    before decoding). Error texts never hold object addresses, so they are the
    same from run to run.
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"input image {str(path)!r} does not exist or is not a file")
        return _decode(path, f"cannot read image {str(path)!r}", max_pixels)
    if isinstance(image, (bytes, bytearray, memoryview)):
        if not image:
            raise ValueError("empty image file")
        return _decode(io.BytesIO(bytes(image)), "cannot decode image", max_pixels)
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    raise TypeError(f"image must be a PIL image, a uint8 array or a path, or encoded image "
                    f"bytes, got {type(image).__name__}")


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def _decode(source: Any, failure: str, max_pixels: int | None) -> Image.Image:
    try:
        opened = Image.open(source)
    except Exception as exc:  # Pillow raises many types for bad data
        raise ValueError(f"{failure}: {_describe(exc)}") from None
    with opened:
        width, height = opened.size
        if max_pixels is not None and width * height > max_pixels:
            raise ValueError(f"image is {width}x{height} = {width * height} pixels, over the "
                             f"limit of {max_pixels}")
        try:
            return opened.convert("RGB")  # convert() forces the full decode
        except Exception as exc:
            raise ValueError(f"{failure}: {_describe(exc)}") from None


def _describe(exc: Exception) -> str:
    # Pillow names the file object in its messages ("<_io.BytesIO object at 0x7f...>").
    return f"{type(exc).__name__}: {_ADDRESS.sub('', str(exc))}"


def read_class_names(source: str | os.PathLike | bytes) -> list[str]:
    """Class names from a ``classes.txt`` (path or its bytes): one per line, line i = label i.

    Surrounding whitespace and blank lines are ignored.
    """
    text = (source.decode("utf-8") if isinstance(source, bytes)
            else Path(source).read_text(encoding="utf-8"))
    return [line.strip() for line in text.splitlines() if line.strip()]
