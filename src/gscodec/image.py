"""The PIL-style API: `open`, `encode`, `decode` and the lazy `GSImage`.

Rate control (``encode(..., bpp=)``) lives in `gscodec.ratecontrol`.
"""

from __future__ import annotations

import builtins
import io
import math
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from . import engine
from . import format as fmt
from . import quantize as q
from ._io import atomic_write, load_image
from .errors import GSIError
from .limits import MAX_SPLATS, DecodeLimitError
from .ratecontrol import encode_to_rate, fixed_count_file
from .splats import Splats

__all__ = ["GSImage", "open", "encode", "decode", "DEFAULT_PRECISION"]

#: The preset whose quality `encode` aims at when no precision is given (per
#: field grids chosen for the image, `gscodec.ratecontrol.fixed_count_file`): the
#: best rate-distortion trade-off measured (docs/format.md, "Choosing the presets").
DEFAULT_PRECISION = "q7"

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
                 payload: bytes | None = None, dictionary: Any = None) -> None:
        """Internal: use `gscodec.open` or `gscodec.encode`."""
        self._header = header
        self._dictionary = dictionary
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
            self._splats = fmt.decode_payload(self._header, self._payload, self._name,
                                              self._dictionary)
        return self._splats

    def render(self, size: Size | None = None) -> np.ndarray:
        """Decode to an H x W x 3 uint8 array at ``size`` = ``(width, height)``
        (default: the reference size; one side may be None to keep the aspect
        ratio).

        Raises `GSIError` when the decode is over a limit of `gscodec.limits`
        (a decompression bomb, or a deliberately huge ``size``)."""
        width, height = (None, None) if size is None else _check_size_arg(size)
        return render_file(self.splats, width, height, self._name)

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
            atomic_write(dst, data)
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


def render_file(splats: Splats, width: int | None, height: int | None, name: str) -> np.ndarray:
    """`engine.render` for the splats of the file ``name``: a decode over the
    limits of `gscodec.limits` is a `GSIError`, as any other bad file."""
    try:
        return engine.render(splats, width, height)
    except DecodeLimitError as e:
        raise GSIError(f"{name}: {e}") from None


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


def open(src: str | os.PathLike | BinaryIO | bytes,  # noqa: A001 (PIL-style)
         dictionary: Any = None) -> GSImage:
    """Open a .gsi image from a path, a binary file object or bytes.

    Only the header is parsed (and, for file objects and bytes, the file's
    structure checked); the payload is decoded on first use. ``dictionary``:
    the zstd dictionary (`gscodec.format.train_dictionary`) a file written
    with one needs. Raises `GSIError` for malformed files (and for a missing
    or wrong dictionary, on decoding), `OSError` for unreadable paths.
    """
    if isinstance(src, (bytes, bytearray, memoryview)):
        src = io.BytesIO(bytes(src))
        src.name = "<bytes>"
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        with builtins.open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):  # a pipe (/dev/stdin): cannot be re-read later
                header, payload, size, data = _read_stream(f, str(path))
                return GSImage(header, name=str(path), file_size=size, data=data,
                               payload=payload, dictionary=dictionary)
            header = fmt.read_header(f, str(path))
        return GSImage(header, name=str(path), file_size=st.st_size, path=path,
                       dictionary=dictionary)
    if hasattr(src, "read"):
        name = str(getattr(src, "name", "<file>"))
        header, payload, size, data = _read_stream(src, name)
        return GSImage(header, name=name, file_size=size, data=data, payload=payload,
                       dictionary=dictionary)
    raise TypeError(f"src must be a path, a binary file object or bytes, got "
                    f"{type(src).__name__}")


def decode(src: str | os.PathLike | BinaryIO | bytes, size: Size | None = None) -> Image.Image:
    """Decode a .gsi (path, file object or bytes) to an RGB `PIL.Image.Image`,
    at the reference size or ``size`` = ``(width, height)``."""
    with open(src) as im:
        return im.to_pil(size)


def encode(image: Any, *, n_splats: int | None = None, bpp: float | None = None,
           iterations: int = engine.DEFAULT_ITERATIONS, precision: str | None = None,
           device: str = "auto") -> GSImage:
    """Fit (encode) an image into splats and return the resulting `GSImage`.

    ``image``: PIL image, uint8 array or path. Give ``n_splats`` (default one
    splat per 64 pixels) or ``bpp``, a target size in file bits per pixel:
    the encoder then picks the splat count to land within ±10% with one fit
    a little over it, trimmed of its weakest splats (`gscodec.ratecontrol`).
    ``precision``: ``"fp32"``, ``"fp16"``, ``"q6"``/``"q7"``/``"q8"``/``"q10"``
    or a ``"q:..."`` spec. None (the default): ``"q7"``'s quality in the fewest
    bits, per-field grids chosen for the image (`gscodec.ratecontrol.fixed_count_file`;
    10-15% smaller than the ``"q7"`` preset's file at 0.1-0.3 dB lower PSNR, never
    larger; with ``bpp=``,
    a finer preset's quality when the target needs more splats than the image
    has pixels). ``iterations`` and
    ``device`` go to `gscodec.fit`. At a quantized precision the file holds the
    fit's quantized finish (`gscodec.ratecontrol.quantized_finish`: the geometry
    and then the colours rounded to the file's grids for the least render error).
    """
    pixels = load_image(image)
    height, width = pixels.shape[:2]
    if n_splats is not None and bpp is not None:
        raise ValueError("give n_splats or bpp, not both")
    if precision is not None:
        q.parse_precision(precision)  # fail before any fitting
    if bpp is None:
        if n_splats is None:
            n_splats = max(1, min(math.ceil(width * height / 64), MAX_SPLATS))
        splats = engine.fit(pixels, n_splats, iterations=iterations, device=device)
        splats, precision = fixed_count_file(splats, pixels, precision, DEFAULT_PRECISION)
        data = fmt.dumps(splats, precision=precision)
    else:
        data = encode_to_rate(pixels, bpp, precision=precision, iterations=iterations,
                              device=device)
    return open(data)
