"""The PIL-style API: `open`, `encode`, `decode` and the lazy `GSImage`."""

from __future__ import annotations

import builtins
import io
import math
import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from . import engine
from . import format as fmt
from . import quantize as q
from .errors import GSIError
from .splats import Splats

__all__ = ["GSImage", "open", "encode", "decode", "load_image", "DEFAULT_PRECISION"]

#: Precision `encode` uses when none is given: the best rate-distortion
#: trade-off measured (docs/format.md, "Choosing the presets").
DEFAULT_PRECISION = "q7"
#: `bpp=` rate control: allowed relative error of the file size, and fits.
BPP_TOLERANCE = 0.10
MAX_FITS = 3
_AIM = 1.02  # fits aim this much over the target (trimming is cheaper than a refit)
# Precisions rate control moves up to when the target needs more splats than
# the image has pixels (more bits per splat is then the only way up).
_FINER = ("q7", "q8", "q10", "fp16", "fp32")

Size = tuple[int | None, int | None]


class GSImage:
    """A .gsi image. The header is read when it is opened; the splats are
    decoded on first use (``.splats``, ``.render()``, ``.to_pil()``).

    Use `gscodec.open` or `gscodec.encode` to get one. Works as a context
    manager; `close` drops the decoded splats and the file contents.
    """

    format = "GSI"
    format_description = "Gaussian splat image"
    mode = "RGB"

    def __init__(self, header: fmt.Header, *, name: str, file_size: int,
                 data: bytes | None = None, path: Path | None = None,
                 payload: bytes | None = None) -> None:
        """Internal: use `gscodec.open` or `gscodec.encode`."""
        self._header = header
        self._name = name
        self._file_size = file_size
        self._data = data  # the whole file, when it is in memory
        self._path = path  # re-read lazily otherwise
        self._payload = payload
        self._splats: Splats | None = None
        self._closed = False
        self.filename = str(path) if path is not None else ""

    # -- header: always available
    @property
    def size(self) -> tuple[int, int]:
        """Reference ``(width, height)``."""
        return self._header.width, self._header.height

    @property
    def width(self) -> int:
        """Reference width in pixels."""
        return self._header.width

    @property
    def height(self) -> int:
        """Reference height in pixels."""
        return self._header.height

    @property
    def n_splats(self) -> int:
        """Number of splats in the file."""
        return self._header.n_splats

    @property
    def precision(self) -> str:
        """``"fp32"``, ``"fp16"`` or the quantized spec (``"q:x=...,..."``)."""
        return self._header.precision

    @property
    def info(self) -> dict[str, Any]:
        """Header facts: version, size, splat count, precision, file bytes,
        bits per splat, bpp, field codings and metadata (JSON-ready)."""
        return self._header.describe(self._file_size)

    @property
    def metadata(self) -> dict[str, str]:
        """The file's metadata key/value strings."""
        return dict(self._header.metadata)

    def __repr__(self) -> str:
        return (f"<gscodec.GSImage size={self.width}x{self.height} "
                f"n_splats={self.n_splats} precision={self.precision}>")

    # -- payload: decoded on demand
    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("GSImage is closed")

    def tobytes(self) -> bytes:
        """The bytes of the .gsi file."""
        self._check_open()
        if self._data is None:
            assert self._path is not None
            with builtins.open(self._path, "rb") as f:  # `open` is this module's own
                header, self._payload, _, data = _read_stream(f, str(self._path))
            if header != self._header:
                raise GSIError(f"{self._path}: the file changed since it was opened")
            self._data = data
        return self._data

    @property
    def splats(self) -> Splats:
        """The decoded `Splats` (decoded once, then cached)."""
        self._check_open()
        if self._splats is None:
            if self._payload is None:
                self.tobytes()  # reads (and checks) the payload too
            assert self._payload is not None
            self._splats = fmt.decode_payload(self._header, self._payload, self._name)
        return self._splats

    def render(self, size: Size | None = None) -> np.ndarray:
        """Decode to an H x W x 3 uint8 array at ``size`` = ``(width, height)``
        (default: the reference size; one side may be None to keep the aspect
        ratio)."""
        width, height = (None, None) if size is None else _check_size_arg(size)
        return engine.render(self.splats, width, height)

    def to_pil(self, size: Size | None = None) -> Image.Image:
        """Decode to an RGB `PIL.Image.Image` (see `render` for ``size``)."""
        return Image.fromarray(self.render(size), "RGB")

    def save(self, dst: str | os.PathLike | BinaryIO, **options: Any) -> None:
        """Write the .gsi file to a path (atomically) or a binary file object.

        Without options the file's bytes are written unchanged. Options:
        ``precision`` (re-encode the splats at that precision) and
        ``metadata`` (a mapping of strings that replaces the metadata).
        """
        unknown = set(options) - {"precision", "metadata"}
        if unknown:
            raise TypeError(f"GSImage.save got unknown options: {', '.join(sorted(unknown))}")
        if options:
            # Quantized files re-encode with their explicit spec by default.
            precision = options.get("precision") or self.precision
            metadata = options.get("metadata", self._header.metadata)
            data = fmt.dumps(self.splats, precision=precision, metadata=metadata)
        else:
            data = self.tobytes()
        if isinstance(dst, (str, os.PathLike)):
            fmt.atomic_write(dst, data)
        elif hasattr(dst, "write"):
            dst.write(data)
        else:
            raise TypeError(f"dst must be a path or a binary file object, got "
                            f"{type(dst).__name__}")

    def close(self) -> None:
        """Drop the decoded splats and file contents; header facts stay."""
        self._closed = True
        self._data = self._payload = self._splats = None

    def __enter__(self) -> "GSImage":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Recorder:
    """Reads through to a file object and keeps what it read (the file's
    bytes, for `GSImage.tobytes`), so the caller may close the file."""

    def __init__(self, fp: BinaryIO) -> None:
        self.fp = fp
        self.chunks: list[bytes] = []

    def read(self, n: int) -> bytes:
        data = self.fp.read(n)
        if data:
            self.chunks.append(data)
        return data


def _read_stream(fp: BinaryIO, name: str) -> tuple[fmt.Header, bytes, int, bytes]:
    """Header, compressed payload, size and bytes of a whole .gsi stream
    (reads only what the checked chunk lengths allow)."""
    recorder = _Recorder(fp)
    header = fmt.read_header(recorder, name)
    payload, size = fmt.read_payload(recorder, header, name)
    return header, payload, size, b"".join(recorder.chunks)


def _check_size_arg(size: Any) -> tuple[int | None, int | None]:
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise TypeError(f"size must be a (width, height) tuple, got {size!r}")
    return size[0], size[1]


def open(src: str | os.PathLike | BinaryIO | bytes) -> GSImage:  # noqa: A001 (PIL-style)
    """Open a .gsi image from a path, a binary file object or bytes.

    Only the header is parsed (and, for file objects and bytes, the chunk
    structure and CRCs checked); the payload is decoded on first use. Raises
    `GSIError` for malformed files, `OSError` for unreadable paths.
    """
    if isinstance(src, (bytes, bytearray, memoryview)):
        src = io.BytesIO(bytes(src))
        src.name = "<bytes>"
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        with builtins.open(path, "rb") as f:
            header = fmt.read_header(f, str(path))
            size = os.fstat(f.fileno()).st_size
        return GSImage(header, name=str(path), file_size=size, path=path)
    if hasattr(src, "read"):
        name = str(getattr(src, "name", "<file>"))
        header, payload, size, data = _read_stream(src, name)
        return GSImage(header, name=name, file_size=size, data=data, payload=payload)
    raise TypeError(f"src must be a path, a binary file object or bytes, got "
                    f"{type(src).__name__}")


def decode(src: str | os.PathLike | BinaryIO | bytes, size: Size | None = None) -> Image.Image:
    """Decode a .gsi (path, file object or bytes) to an RGB `PIL.Image.Image`,
    at the reference size or ``size`` = ``(width, height)``."""
    with open(src) as im:
        return im.to_pil(size)


def load_image(image: Any) -> np.ndarray:
    """An H x W x 3 uint8 array from a PIL image, an array or an image path.

    Arrays may be H x W (grey), H x W x 3 or H x W x 4 (alpha dropped), uint8.
    Raises `FileNotFoundError` for a missing path and `ValueError` for a file
    that is not a readable image.
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"input image {str(path)!r} does not exist or is not a file")
        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ValueError(f"cannot read image {str(path)!r}: {e}") from None
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"image array must be uint8, got {image.dtype}")
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError(f"image array must be H x W, H x W x 3 or H x W x 4, "
                             f"got shape {image.shape}")
        return np.ascontiguousarray(image[:, :, :3])
    raise TypeError(f"image must be a PIL image, a uint8 array or a path, got "
                    f"{type(image).__name__}")


def encode(image: Any, *, n_splats: int | None = None, bpp: float | None = None,
           iterations: int = engine.DEFAULT_ITERATIONS, precision: str | None = None,
           device: str = "auto") -> GSImage:
    """Fit (encode) an image into splats and return the resulting `GSImage`.

    ``image``: PIL image, uint8 array or path. Give ``n_splats`` (default one
    splat per 64 pixels) or ``bpp``, a target size in file bits per pixel:
    the encoder then picks the splat count, fitting up to 3 times, to land
    within ±10% (files over the target are trimmed of their weakest splats).
    ``precision``: ``"fp32"``, ``"fp16"``, ``"q6"``/``"q7"``/``"q8"``/``"q10"``
    or a ``"q:..."`` spec; default ``"q7"`` (with ``bpp=``, a finer one when the
    target needs more splats than the image has pixels). ``iterations`` and
    ``device`` go to `gscodec.fit`.
    """
    pixels = load_image(image)
    height, width = pixels.shape[:2]
    if n_splats is not None and bpp is not None:
        raise ValueError("give n_splats or bpp, not both")
    if precision is not None:
        q.parse_precision(precision)  # fail before any fitting
    if bpp is None:
        if n_splats is None:
            n_splats = max(1, min(math.ceil(width * height / 64), engine.MAX_SPLATS))
        precision = precision or DEFAULT_PRECISION
        # The CPU fit returns splats already on a quantized precision's grid.
        on_grid = q.parse_precision(precision).mode == q.MODE_QUANT \
            and engine._resolve_device(device) == "cpu"
        splats = engine.fit(pixels, n_splats, iterations=iterations, device=device,
                            quantize_for=precision if on_grid else None)
        data = fmt.dumps(splats, precision=precision)
    else:
        data = _encode_to_rate(pixels, bpp, precision, iterations, device)
    return open(data)


def _container_bits(precision: str) -> int:
    """File bits that do not depend on the splat count (header, chunks, frame)."""
    return 8 * len(fmt.dumps(Splats.from_array(np.zeros((0, 8), np.float32), 1, 1),
                             precision=precision))


def _splats_for(target_bits: float, precision: str, width: int, height: int) -> int:
    fixed = _container_bits(precision)
    n = max(1.0, (target_bits - fixed) / 60.0)
    for _ in range(4):  # bits per splat depends (weakly) on n: iterate
        per_splat = q.estimate_bits_per_splat(precision, round(n), width, height)
        n = max(1.0, (target_bits - fixed) / per_splat)
    return round(n)


def _trim(splats: Splats, precision: str, max_bits: float) -> bytes:
    """Drop the weakest splats (least colour energy x area) until the file
    fits in ``max_bits``; binary search on the count kept."""
    arr = splats.to_array()
    energy = (arr[:, 5:8].astype(np.float64) ** 2).sum(1) * arr[:, 2] * arr[:, 4]
    order = np.argsort(-energy, kind="stable")
    lo, hi = 1, len(arr)
    best = fmt.dumps(Splats.from_array(arr[order[:1]], splats.width, splats.height),
                     precision=precision)
    while lo <= hi:
        mid = (lo + hi) // 2
        keep = np.sort(order[:mid])
        data = fmt.dumps(Splats.from_array(arr[keep], splats.width, splats.height),
                         precision=precision)
        if len(data) * 8 <= max_bits:
            best, lo = data, mid + 1
        else:
            hi = mid - 1
    return best


def _encode_to_rate(pixels: np.ndarray, bpp: float, precision: str | None, iterations: int,
                    device: str) -> bytes:
    if isinstance(bpp, bool) or not isinstance(bpp, (int, float)) or not bpp > 0 \
            or not math.isfinite(bpp):
        raise ValueError(f"bpp must be a positive number, got {bpp!r}")
    height, width = pixels.shape[:2]
    target = bpp * width * height
    max_n = min(width * height, engine.MAX_SPLATS)
    if precision is None:
        # More splats than pixels cannot be fitted: spend bits on precision.
        precision = next((p for p in _FINER if _splats_for(target, p, width, height) <= max_n),
                         _FINER[-1])
    fixed = _container_bits(precision)
    one = Splats.from_array(np.array([[0.5, 0.5, 0.1, 0.0, 0.1, 0.5, 0.5, 0.5]], np.float32),
                            width, height)
    min_bits = 8 * len(fmt.dumps(one, precision=precision))
    if target < min_bits:
        raise ValueError(f"bpp={bpp} is too low for a {width}x{height} image: one "
                         f"{precision} splat needs about {min_bits / (width * height):.3g} bpp")
    # Aim a little high: a file over the target can be trimmed without a refit.
    n = min(max_n, _splats_for(target * _AIM, precision, width, height))
    best: tuple[float, bytes, Splats] | None = None
    for _ in range(MAX_FITS):
        splats = engine.fit(pixels, n, iterations=iterations, device=device)
        data = fmt.dumps(splats, precision=precision)
        bits = len(data) * 8
        error = bits / target - 1
        if abs(error) <= BPP_TOLERANCE:
            return data
        if best is None or abs(error) < abs(best[0]):
            best = (error, data, splats)
        # bits per splat measured on this fit, corrected for the new count
        per_splat = (bits - fixed) / max(len(splats), 1)
        new_n = min(max_n, max(1, round((target * _AIM - fixed) / per_splat)))
        if new_n == n:
            break
        n = new_n
    assert best is not None
    error, data, splats = best
    if error > 0:
        return _trim(splats, precision, target)
    return data
