"""Read and write .gsi files (the container specified in docs/format.md).

Every file starts with the 4 bytes ``\x89GSI``. Version 3 follows them with
one version byte; versions 1 and 2 with the rest of an 8-byte PNG-style
signature and two version bytes.

- Version 3 (written by default): a compact header (varints, flags, the
  quantizer's grids, no bytes for defaults), the payload (a zstd frame,
  optionally with a shared dictionary, or raw bit-packed codes with
  Elias-Fano coded positions for tiny files) and a CRC-32 of the header and
  the decompressed payload.
- Version 2 (read only): the same with a 10-byte start, every offset stored
  and positions as fixed-width Morton differences in raw payloads.
- Version 1 (read, and written on request for old readers): PNG-style chunks
  (length, type, data, CRC-32): ``HEAD``, optional ``meta``, ``DATA`` (byte
  planes of per-field columns, one zstd frame) and ``DONE``.

Public entry points: `dumps` / `loads` (bytes), `write_file` / `read_file`
(paths; writes are atomic), `read_header` / `read_payload` /
`decode_payload` (streams, for lazy readers) and `train_dictionary` (a zstd
dictionary for many small files). Writes go through `gscodec._io.atomic_write`.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Iterable, Mapping

import numpy as np
import zstandard

from . import quantize as q
from ._io import atomic_write
from .errors import GSIError
from .limits import MAX_SPLATS
from .splats import FIELDS, Splats

__all__ = [
    "MAGIC",
    "SIGNATURE_V1",
    "VERSION",
    "VERSION_2",
    "VERSION_1",
    "MIME_TYPE",
    "EXTENSION",
    "Header",
    "dumps",
    "loads",
    "write_file",
    "read_file",
    "read_header",
    "read_payload",
    "decode_payload",
    "train_dictionary",
]

#: The first 4 bytes of every .gsi file: a non-ASCII byte, then "GSI".
MAGIC = b"\x89GSI"
#: Versions 1 and 2 go on to an 8-byte signature: CR LF, ^Z, LF (catches
#: text-mode transfers, like PNG's), then a major and a minor version byte.
SIGNATURE_V1 = MAGIC + b"\r\n\x1a\n"
#: (major, minor) version this module writes by default; its files store it
#: as one byte, ``major << 4 | minor``, after `MAGIC`.
VERSION = (3, 0)
#: The previous compact version (read only).
VERSION_2 = (2, 0)
#: The chunked version it reads and writes on request (for version-1 readers).
VERSION_1 = (1, 0)
MIME_TYPE = "image/x-gsi"
EXTENSION = ".gsi"

#: Limits a reader enforces before allocating anything (docs/format.md, "Limits").
MAX_HEAD_BYTES = 4096
MAX_META_BYTES = 1 << 20
MAX_ANCILLARY_BYTES = 16 << 20
#: zstd window a reader accepts (the writer's frames need far less).
MAX_WINDOW = 1 << 27
#: Compression level of the writer (payloads are small: speed does not matter).
ZSTD_LEVEL = 19
#: Shortest match the writer's zstd takes. Quantized codes have small
#: alphabets, so 3-5 byte repeats occur by chance; at level 19's default
#: (3) zstd codes them as matches, which cost more than the Huffman-coded
#: literals they replace (Kodak, 3000 splats: -3.8% per file at 6;
#: docs/benchmarks.md, "zstd's shortest match"). A writer choice: any zstd
#: decoder reads the frames.
ZSTD_MIN_MATCH = 6
_TRY_SEVERAL_BELOW = 1 << 16

_HEAD_FIXED = struct.Struct("<HHIB")  # width, height, n_splats, mode
_FIELD_DESC = struct.Struct("<BBff")  # bits, transform, lo, hi
_CHUNK = struct.Struct("<I4s")  # length, type
_U32 = struct.Struct("<I")


def _head_size(mode: int) -> int:
    return _HEAD_FIXED.size + (8 * _FIELD_DESC.size if mode == q.MODE_QUANT else 0)


@dataclass(frozen=True)
class Header:
    """Everything a reader learns before decoding the payload.

    ``data_offset`` / ``data_length`` locate the payload (bytes from the
    start of the file; in versions 2 and 3 the CRC follows it). ``codings``
    holds the 8 field codings of a version-1 quantized file, ``grids`` the
    quantizer of a version-2 or 3 one (None when it holds no splats).
    ``flags`` (the flag byte as stored, whose bits differ between versions
    2 and 3), ``zstd`` (the payload is a zstd frame), ``dictionary_id`` and
    ``crc_seed`` (the CRC-32 of the header bytes) are versions 2 and 3's.
    """

    version: tuple[int, int]
    width: int
    height: int
    n_splats: int
    mode: int
    codings: tuple[q.FieldCoding, ...]
    metadata: dict[str, str] = field(default_factory=dict)
    data_offset: int = 0
    data_length: int = 0
    grids: q.Grids | None = None
    flags: int = 0
    zstd: bool = False
    dictionary_id: int = 0
    crc_seed: int = 0

    @property
    def precision(self) -> str:
        """``"fp32"``, ``"fp16"`` or the explicit spec of a quantized file
        (e.g. ``"q:x=12,y=11,l11=7,l21=7,l22=7,r=6,g=6,b=6"``; the default
        ``"q7"`` for a version-2 or 3 quantized file without splats)."""
        if self.mode != q.MODE_QUANT:
            return q.MODE_NAMES[self.mode]
        if self.version[0] != VERSION_1[0]:
            return self.grids.spec if self.grids else "q7"
        return "q:" + ",".join(f"{f}={c.bits}" for f, c in zip(FIELDS, self.codings))

    @property
    def raw_size(self) -> int:
        """Bytes of the decompressed payload."""
        if self.version[0] != VERSION_1[0] and self.mode == q.MODE_QUANT:
            return _quantized_raw_size(self.n_splats, self.grids, self.zstd, self.version)
        return self.n_splats * sum(q.column_widths(self.mode, self.codings))

    def describe(self, file_size: int | None = None) -> dict:
        """A JSON-ready summary (what ``gscodec info --json`` prints)."""
        out: dict = {
            "format": "GSI",
            "version": f"{self.version[0]}.{self.version[1]}",
            "width": self.width,
            "height": self.height,
            "n_splats": self.n_splats,
            "precision": self.precision,
            "payload_bytes": self.data_length,
        }
        if self.version[0] != VERSION_1[0]:
            out["dictionary_id"] = self.dictionary_id or None
            if self.grids:
                out["grids"] = dataclasses.asdict(self.grids)
        elif self.mode == q.MODE_QUANT:
            out["fields"] = {
                f: {"bits": c.bits, "transform": q.TRANSFORM_NAMES[c.transform],
                    "lo": c.lo, "hi": c.hi}
                for f, c in zip(FIELDS, self.codings)
            }
        if file_size is not None:
            out["file_bytes"] = file_size
            out["bits_per_splat"] = file_size * 8 / self.n_splats if self.n_splats else None
            out["bpp"] = file_size * 8 / (self.width * self.height)
        out["metadata"] = dict(self.metadata)
        return out


# ---------------------------------------------------------------- writing


def _chunk(kind: bytes, data: bytes) -> bytes:
    return _CHUNK.pack(len(data), kind) + data + _U32.pack(zlib.crc32(kind + data))


def _byte_planes(values: np.ndarray, width: int) -> list[bytes]:
    # Values split into `width` planes, least significant byte first: the
    # bytes of one significance share statistics that zstd's literal coder
    # exploits.
    if values.dtype.kind == "f":
        values = values.view(f"u{values.dtype.itemsize}")  # the IEEE bit pattern
    u = values.astype(np.uint64)
    return [((u >> np.uint64(8 * j)) & np.uint64(0xFF)).astype(np.uint8).tobytes()
            for j in range(width)]


def _compress(planes: list[bytes],
              dictionary: zstandard.ZstdCompressionDict | None = None) -> bytes:
    """One zstd frame (with its content size; no checksum or dictionary id,
    which the container holds) holding the planes in order."""
    raw_size = sum(len(p) for p in planes)
    # A block per plane gives each plane its own Huffman table (about 10%
    # smaller on real splats). Small payloads (cheap to compress) also try
    # one block and zstd's own shortest match, and keep the smallest frame:
    # tiny float payloads do better with those. Each is one ordinary frame.
    small = raw_size <= _TRY_SEVERAL_BELOW
    params = zstandard.ZstdCompressionParameters.from_level(
        ZSTD_LEVEL, source_size=raw_size, min_match=ZSTD_MIN_MATCH, write_content_size=1,
        write_checksum=0, write_dict_id=0)
    compressors = [zstandard.ZstdCompressor(compression_params=params, dict_data=dictionary)]
    if small:
        compressors.append(zstandard.ZstdCompressor(
            level=ZSTD_LEVEL, write_content_size=True, write_checksum=False,
            write_dict_id=False, dict_data=dictionary))
    frames = []
    for zc in compressors:
        zobj = zc.compressobj(size=raw_size)
        frames.append(b"".join(zobj.compress(p) + zobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
                               for p in planes) + zobj.flush())
        if small:
            frames.append(zc.compress(b"".join(planes)))
    return min(frames, key=len)


def _encode_meta(metadata: Mapping[str, str]) -> bytes:
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping of str to str, got "
                        f"{type(metadata).__name__}")
    parts = []
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata keys and values must be str, got "
                            f"{type(key).__name__}: {type(value).__name__}")
        try:
            k, v = key.encode("utf-8"), value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"metadata entry {key!r}: not encodable as UTF-8 (a lone "
                             f"surrogate?)") from None
        if not 1 <= len(k) <= 255:
            raise ValueError(f"metadata key {key!r} must be 1..255 bytes of UTF-8")
        parts.append(struct.pack("<H", len(k)) + k + _U32.pack(len(v)) + v)
    data = b"".join(parts)
    if len(data) > MAX_META_BYTES:
        raise ValueError(f"metadata is {len(data)} bytes, more than {MAX_META_BYTES}")
    return data


def dumps(splats: Splats, *, precision: str = "fp16",
          metadata: Mapping[str, str] | None = None,
          dictionary: zstandard.ZstdCompressionDict | bytes | None = None,
          version: tuple[int, int] = VERSION) -> bytes:
    """Serialize ``splats`` to the bytes of a .gsi file.

    ``precision``: ``"fp32"`` (lossless), ``"fp16"``, a quantized preset
    (``"q6"``, ``"q7"``, ``"q8"``, ``"q10"``) or an explicit ``"q:..."`` spec (see
    `gscodec.quantize.parse_precision`). ``metadata``: optional string
    key/value pairs. ``dictionary``: a zstd dictionary from `train_dictionary`
    (the file then records its id and needs it to decode, unless a raw
    payload or a frame without it came out no larger). ``version``: `VERSION` (3.0) or `VERSION_1`
    (1.0, for version-1 readers; no dictionary; version 2.0 is read only). Lossy modes reorder the
    splats (Morton order); `loads` of the result gives the exact splats.
    """
    if not isinstance(splats, Splats):
        raise TypeError(f"splats must be gscodec.Splats, got {type(splats).__name__}")
    if len(splats) > MAX_SPLATS:
        raise ValueError(f"{len(splats)} splats is more than a .gsi holds ({MAX_SPLATS})")
    meta = b"" if metadata is None else _encode_meta(metadata)  # errors before any work
    if version == VERSION_1:
        if dictionary is not None:
            raise ValueError("dictionary needs version 3; version 1.0 files have none")
        return _dumps_v1(splats, precision, meta)
    if version != VERSION:
        raise ValueError(f"version must be {VERSION} or {VERSION_1}, got {version!r}")
    return _dumps_v3(splats, q.parse_precision(precision), meta,
                     None if dictionary is None else _as_dictionary(dictionary))


def _dumps_v1(splats: Splats, precision: str, meta: bytes) -> bytes:
    cols = q.prepare(splats, precision)
    head = _HEAD_FIXED.pack(splats.width, splats.height, len(splats), cols.mode)
    for c in cols.codings:
        head += _FIELD_DESC.pack(c.bits, c.transform, c.lo, c.hi)
    payload = _compress([p for a, w in zip(cols.arrays, cols.widths)
                         for p in _byte_planes(a, w)])
    out = [SIGNATURE_V1, bytes(VERSION_1), _chunk(b"HEAD", head)]
    if meta:
        out.append(_chunk(b"meta", meta))
    out += [_chunk(b"DATA", payload), _chunk(b"DONE", b"")]
    return b"".join(out)


# ---------------------------------------------------------------- versions 3 and 2

# Flag byte: bits 0-1 mode, then what follows the fixed fields and how the
# payload is coded; bits 5-7 are the colour predictor byte of quantized files.
# Version 3 moves the rare meta and dictionary bits to an extras byte (present
# when _EXTRAS is set) to make room for "position offsets stored".
_PREDICTOR_SHIFT = 5
_V2_META, _V2_DICTIONARY, _V2_ZSTD = 4, 8, 16
_EXTRAS, _ZSTD, _POSITION_OFFSETS = 4, 8, 16
_EXTRA_META, _EXTRA_DICTIONARY = 1, 2
_MAX_VARINT_BYTES = 10


def _varint(n: int) -> bytes:
    """LEB128: 7 bits per byte, least significant first, high bit = more."""
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _zigzag(n: int) -> int:
    return 2 * n if n >= 0 else -2 * n - 1


def _unzigzag(z: int) -> int:
    return z >> 1 if not z & 1 else -(z >> 1) - 1


def _pack_bits(columns: list[tuple[np.ndarray, int]]) -> bytes:
    """Columns of unsigned values, each ``width`` bits, most significant bit
    first, column after column, zero-padded to a whole byte."""
    parts = [((np.asarray(v, dtype=np.uint64)[:, None] >> np.arange(w - 1, -1, -1,
                                                                    dtype=np.uint64))
              & np.uint64(1)).astype(np.uint8).ravel() for v, w in columns if w]
    return np.packbits(np.concatenate(parts)).tobytes() if parts else b""


def _unpack_bits(data: bytes, offset: int, n: int, widths: list[int],
                 first_bit: int = 0) -> tuple[list[np.ndarray], int]:
    """Inverse of `_pack_bits` (the bytes at ``offset``, from bit
    ``first_bit`` on): the columns (uint64) and the offset after them. Each
    value is read from the 8 bytes at its first bit (widths are at most 30
    bits), so memory stays O(n)."""
    total = first_bit + n * sum(widths)
    nbytes = (total + 7) // 8
    padded = np.frombuffer(data[offset:offset + nbytes] + bytes(8), np.uint8)
    out, start = [], first_bit
    for w in widths:
        if not w:
            out.append(np.zeros(n, np.uint64))
            continue
        bit = start + np.arange(n, dtype=np.uint64) * np.uint64(w)
        first = (bit >> np.uint64(3)).astype(np.intp)
        word = np.zeros(n, np.uint64)
        for k in range(8):
            word = (word << np.uint64(8)) | padded[first + k].astype(np.uint64)
        shift = np.uint64(64 - w) - (bit & np.uint64(7))
        out.append((word >> shift) & np.uint64((1 << w) - 1))
        start += n * w
    return out, offset + nbytes


def _quantized_raw_size(n: int, grids: q.Grids | None, planes: bool,
                        version: tuple[int, int]) -> int:
    if grids is None:
        return 0
    total = grids.widths[0] + grids.widths[1]
    if not planes:
        if version == VERSION_2:
            return (n * (total + sum(grids.widths[2:])) + 7) // 8
        low = q.elias_fano_split(n, total)
        return (n + (1 << (total - low)) + n * (low + sum(grids.widths[2:])) + 7) // 8
    low = q.morton_split(n, total)
    return (n * (-(-(total - low) // 8)) + (n * low + 7) // 8
            + n * sum(-(-w // 8) for w in grids.widths[2:]))


def _quantized_layouts(cols: q.GridColumns) -> tuple[list[bytes], bytes]:
    """The payload as zstd's planes (Morton difference high bytes, their low
    bits packed, then each code's byte planes) and as raw packed bits
    (version 3: the Morton codes Elias-Fano coded, then the codes)."""
    g, n = cols.grids, len(cols.morton_deltas)
    total = g.widths[0] + g.widths[1]
    low = q.morton_split(n, total)
    deltas = cols.morton_deltas
    planes = _byte_planes(deltas >> np.uint64(low), -(-(total - low) // 8))
    planes.append(_pack_bits([(deltas & np.uint64((1 << low) - 1), low)]))
    for codes, w in zip(cols.codes, g.widths[2:]):
        planes += _byte_planes(codes, -(-w // 8))
    morton = np.cumsum(deltas, dtype=np.uint64)
    split = q.elias_fano_split(n, total)
    # Elias-Fano: a bitmap with bit (m >> split) + i set for the i-th code,
    # then the codes' low bits.
    bitmap = np.zeros(n + (1 << (total - split)), np.uint64)
    bitmap[(morton >> np.uint64(split)).astype(np.int64) + np.arange(n)] = 1
    packed = _pack_bits([(bitmap, 1), (morton & np.uint64((1 << split) - 1), split),
                         *zip(cols.codes, g.widths[2:])])
    return planes, packed


def _quantized_columns(grids: q.Grids, n: int, raw: bytes, planes: bool,
                       version: tuple[int, int]) -> q.GridColumns:
    total = grids.widths[0] + grids.widths[1]
    if not planes and version == VERSION_2:
        cols, _ = _unpack_bits(raw, 0, n, [total, *grids.widths[2:]])
        return q.GridColumns(grids, cols[0], tuple(c.astype(np.int64) for c in cols[1:]))
    if not planes:
        split = q.elias_fano_split(n, total)
        length = n + (1 << (total - split))
        ones = np.flatnonzero(np.unpackbits(np.frombuffer(raw, np.uint8, (length + 7) // 8),
                                            count=length))
        if ones.size != n:
            raise ValueError(f"the positions' Elias-Fano bitmap has {ones.size} bits set, "
                             f"expected {n}")
        high = (ones - np.arange(n)).astype(np.uint64)
        cols, _ = _unpack_bits(raw, 0, n, [split, *grids.widths[2:]], first_bit=length)
        morton = (high << np.uint64(split)) | cols[0]
        return q.GridColumns(grids, np.diff(morton, prepend=np.uint64(0)),
                             tuple(c.astype(np.int64) for c in cols[1:]))
    low = q.morton_split(n, total)
    high, pos = _from_planes(raw, 0, n, -(-(total - low) // 8))
    (low_bits,), pos = _unpack_bits(raw, pos, n, [low])
    codes = []
    for w in grids.widths[2:]:
        values, pos = _from_planes(raw, pos, n, -(-w // 8))
        codes.append(values.astype(np.int64))
    return q.GridColumns(grids, (high << np.uint64(low)) | low_bits, tuple(codes))


def _from_planes(raw: bytes, pos: int, n: int, width: int) -> tuple[np.ndarray, int]:
    """``width`` byte planes of ``n`` values at ``pos`` (least significant
    first) as uint64, and the offset after them."""
    planes = np.frombuffer(raw, np.uint8, n * width, pos).reshape(width, n)
    values = np.zeros(n, dtype=np.uint64)
    for j in range(width):
        values |= planes[j].astype(np.uint64) << np.uint64(8 * j)
    return values, pos + n * width


def _as_dictionary(dictionary: object) -> zstandard.ZstdCompressionDict:
    if isinstance(dictionary, (bytes, bytearray, memoryview)):
        dictionary = zstandard.ZstdCompressionDict(bytes(dictionary))
    if not isinstance(dictionary, zstandard.ZstdCompressionDict):
        raise TypeError(f"dictionary must be a zstandard.ZstdCompressionDict or bytes, got "
                        f"{type(dictionary).__name__}")
    if not dictionary.dict_id():
        raise ValueError("dictionary has no id: use one from train_dictionary")
    return dictionary


def _offsets_v3(offsets: tuple[int, ...]) -> bytes:
    """The stored offsets of a version-3 quantizer: the positions' only when
    not both 0 (flag _POSITION_OFFSETS), l22's relative to l11's (one grid,
    similar sizes)."""
    stored = list(offsets[2:])
    stored[2] -= offsets[2]
    if offsets[:2] != (0, 0):
        stored = list(offsets[:2]) + stored
    return b"".join(_varint(_zigzag(o)) for o in stored)


def _dumps_v3(splats: Splats, p: q.Precision, meta: bytes,
              dictionary: zstandard.ZstdCompressionDict | None) -> bytes:
    n = len(splats)
    descriptor = b""
    flags = p.mode
    if p.mode == q.MODE_QUANT:
        cols = q.quantize(splats, p)
        g = cols.grids
        flags |= g.predictors << _PREDICTOR_SHIFT
        if n:
            descriptor = (bytes(g.widths[i] | g.widths[i + 1] << 4 for i in range(0, 8, 2))
                          + bytes(g.steps) + _offsets_v3(g.offsets))
            if g.offsets[:2] != (0, 0):
                flags |= _POSITION_OFFSETS
        planes, raw_layout = _quantized_layouts(cols) if n else ([], b"")
    else:
        fp = q.prepare(splats, p)
        planes = [pl for a, w in zip(fp.arrays, fp.widths) for pl in _byte_planes(a, w)]
        raw_layout = b"".join(planes)
    frame = _compress(planes, dictionary)
    if dictionary is not None:
        # A dictionary's literal tables can fit a file worse than its own do.
        plain = _compress(planes)
        if len(plain) <= len(frame):
            frame, dictionary = plain, None
    use_zstd = n > 0 and len(frame) < len(raw_layout)
    extras = ((_EXTRA_DICTIONARY if use_zstd and dictionary is not None else 0)
              | (_EXTRA_META if meta else 0))
    head = [_varint(splats.width), _varint(splats.height), _varint(n)]
    flags |= (_ZSTD if use_zstd else 0) | (_EXTRAS if extras else 0)
    head.append(bytes([flags]))
    if extras:
        head.append(bytes([extras]))
    if extras & _EXTRA_DICTIONARY:
        head.append(_U32.pack(dictionary.dict_id()))
    if meta:
        head.append(_varint(len(meta)) + meta)
    if use_zstd:
        descriptor += _varint(len(frame))
    header = MAGIC + bytes([VERSION[0] << 4 | VERSION[1]]) + b"".join(head) + descriptor
    raw = b"".join(planes) if use_zstd else raw_layout
    crc = zlib.crc32(raw, zlib.crc32(header))
    return header + (frame if use_zstd else raw) + _U32.pack(crc)


def write_file(path: str | os.PathLike, splats: Splats, *, precision: str = "fp16",
               metadata: Mapping[str, str] | None = None) -> None:
    """Write ``splats`` to the .gsi file ``path`` (atomically; see `dumps`)."""
    atomic_write(path, dumps(splats, precision=precision, metadata=metadata))


# ---------------------------------------------------------------- reading


class _Stream:
    """Exact reads with offsets for messages (works on non-seekable files)."""

    def __init__(self, fp: BinaryIO, name: str, offset: int = 0) -> None:
        self.fp = fp
        self.name = name
        self.offset = offset

    def error(self, offset: int, message: str) -> GSIError:
        return GSIError(f"{self.name}: offset {offset}: {message}")

    def read(self, n: int, what: str) -> bytes:
        # Unbuffered streams (pipes, sockets, raw files) may return fewer bytes
        # than asked before the end: read until n bytes or the end.
        parts = []
        got = 0
        while got < n:
            part = self.fp.read(n - got)
            if not part:
                raise self.error(self.offset, f"file is truncated: {what} needs {n} bytes, "
                                              f"only {got} left")
            parts.append(part)
            got += len(part)
        self.offset += n
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def chunk(self, limit: int | None = None) -> tuple[int, bytes, int]:
        """Read a chunk's length and type: ``(offset, type, length)``."""
        start = self.offset
        length, kind = _CHUNK.unpack(self.read(_CHUNK.size, "a chunk header"))
        if not all(65 <= c <= 90 or 97 <= c <= 122 for c in kind):
            raise self.error(start, f"invalid chunk type {kind!r} (not 4 ASCII letters)")
        if limit is not None and length > limit:
            raise self.error(start, f"chunk {kind.decode()!r} declares {length} bytes, "
                                    f"more than the limit of {limit}")
        return start, kind, length

    def chunk_data(self, start: int, kind: bytes, length: int) -> bytes:
        """Read a chunk's data and CRC and check the CRC."""
        data = self.read(length, f"chunk {kind.decode()!r}")
        (stored,) = _U32.unpack(self.read(4, f"the CRC of chunk {kind.decode()!r}"))
        computed = zlib.crc32(kind + data)
        if stored != computed:
            raise self.error(start, f"chunk {kind.decode()!r}: CRC mismatch (stored "
                                    f"0x{stored:08x}, computed 0x{computed:08x}); "
                                    "the file is corrupt")
        return data


def _is_critical(kind: bytes) -> bool:
    return 65 <= kind[0] <= 90  # upper-case first letter, as in PNG


def _parse_head(s: _Stream, start: int, data: bytes, minor: int) -> tuple:
    where = f"chunk 'HEAD' at offset {start}"
    if len(data) < _HEAD_FIXED.size:
        raise s.error(start, f"{where} is {len(data)} bytes, needs at least {_HEAD_FIXED.size}")
    width, height, n, mode = _HEAD_FIXED.unpack_from(data)
    base = start + _CHUNK.size
    if width == 0 or height == 0:
        raise s.error(base, f"HEAD: reference size {width}x{height} is empty")
    if n > MAX_SPLATS:
        raise s.error(base + 4, f"HEAD: splat count {n} exceeds the limit of {MAX_SPLATS}")
    if mode not in q.MODE_NAMES:
        raise s.error(base + 8, f"HEAD: unknown precision mode {mode}")
    size = _head_size(mode)
    if len(data) < size or (minor == VERSION_1[1] and len(data) != size):
        raise s.error(start, f"{where} is {len(data)} bytes; precision "
                             f"{q.MODE_NAMES[mode]} needs {size}")
    codings = []
    if mode == q.MODE_QUANT:
        for i, name in enumerate(FIELDS):
            off = _HEAD_FIXED.size + i * _FIELD_DESC.size
            bits, transform, lo, hi = _FIELD_DESC.unpack_from(data, off)
            at = base + off
            if not 1 <= bits <= q.MAX_BITS:
                raise s.error(at, f"HEAD: field {name}: bit width {bits} outside 1..{q.MAX_BITS}")
            if transform not in q.TRANSFORM_NAMES or (i < 2 and transform != q.LINEAR):
                raise s.error(at + 1, f"HEAD: field {name}: invalid transform {transform}")
            if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
                raise s.error(at + 2, f"HEAD: field {name}: invalid range [{lo}, {hi}]")
            if transform == q.LOG and hi > q.LOG_FLOAT32_MAX:
                raise s.error(at + 6, f"HEAD: field {name}: log range end {hi} overflows "
                                      "float32")
            codings.append(q.FieldCoding(bits, transform, lo, hi))
    return width, height, n, mode, tuple(codings)


def _parse_meta(s: _Stream, start: int, data: bytes) -> dict[str, str]:
    meta: dict[str, str] = {}
    pos = 0
    base = start + _CHUNK.size
    while pos < len(data):
        try:
            (klen,) = struct.unpack_from("<H", data, pos)
            key = data[pos + 2:pos + 2 + klen]
            (vlen,) = _U32.unpack_from(data, pos + 2 + klen)
        except struct.error:
            raise s.error(base + pos, "meta: entry runs past the end of the chunk") from None
        value = data[pos + 6 + klen:pos + 6 + klen + vlen]
        if not 1 <= klen <= 255:
            raise s.error(base + pos, f"meta: key length {klen} outside 1..255")
        if len(key) != klen or len(value) != vlen:
            raise s.error(base + pos, "meta: entry runs past the end of the chunk")
        try:
            k, v = key.decode("utf-8"), value.decode("utf-8")
        except UnicodeDecodeError:
            raise s.error(base + pos, "meta: key or value is not valid UTF-8") from None
        if k in meta:
            raise s.error(base + pos, f"meta: duplicate key {k!r}")
        meta[k] = v
        pos += 6 + klen + vlen
    return meta


def read_header(fp: BinaryIO, name: str = "<stream>") -> Header:
    """Read the signature, version and chunks up to the start of DATA's data.

    Leaves ``fp`` positioned at the DATA chunk's data; `read_payload` continues
    from there. Raises `GSIError` for anything malformed.
    """
    s = _Stream(fp, name)
    sig = s.read(len(MAGIC) + 1, "the signature")
    if sig[:len(MAGIC)] != MAGIC:
        raise s.error(0, f"not a .gsi file (signature {sig[:len(MAGIC)]!r}, expected "
                         f"{MAGIC!r})")
    if sig[-1] != SIGNATURE_V1[len(MAGIC)]:  # a version byte (version 3 on)
        if sig[-1] >> 4 == VERSION[0]:
            return _read_header_compact(s, (VERSION[0], sig[-1] & 15))
        raise s.error(4, f"unsupported version byte 0x{sig[-1]:02x} (this reader supports "
                         f"versions 1.0, 2.0 and 3.0)")
    sig += s.read(len(SIGNATURE_V1) - len(sig), "the signature")
    if sig != SIGNATURE_V1:
        raise s.error(0, f"not a .gsi file (signature {sig!r}, expected {SIGNATURE_V1!r} "
                         f"or {MAGIC!r} and a version byte)")
    major, minor = s.read(2, "the version")
    if major == VERSION_2[0]:
        return _read_header_compact(s, (major, minor))
    if major != VERSION_1[0]:
        raise s.error(8, f"unsupported major version {major} (this reader supports "
                         f"versions 1.0, 2.0 and 3.0)")
    start, kind, length = s.chunk(MAX_HEAD_BYTES)
    if kind != b"HEAD":
        raise s.error(start, f"first chunk is {kind.decode()!r}, expected 'HEAD'")
    width, height, n, mode, codings = _parse_head(s, start, s.chunk_data(start, kind, length),
                                                  minor)
    metadata: dict[str, str] = {}
    seen_meta = False
    while True:
        start, kind, length = s.chunk()
        if kind == b"DATA":
            break
        if kind == b"meta":
            if seen_meta:
                raise s.error(start, "more than one 'meta' chunk")
            if length > MAX_META_BYTES:
                raise s.error(start, f"chunk 'meta' declares {length} bytes, more than the "
                                     f"limit of {MAX_META_BYTES}")
            metadata = _parse_meta(s, start, s.chunk_data(start, kind, length))
            seen_meta = True
        else:
            _skip_ancillary(s, start, kind, length, "before 'DATA'")
    header = Header((major, minor), width, height, n, mode, codings, metadata, s.offset, length)
    bound = header.raw_size + header.raw_size // 64 + 1024  # above zstd's worst case
    if length > bound:
        raise s.error(start, f"chunk 'DATA' declares {length} bytes, more than {bound} for "
                             f"{n} {header.precision} splats")
    return header


def _skip_ancillary(s: _Stream, start: int, kind: bytes, length: int, where: str) -> None:
    if kind in (b"HEAD", b"DATA", b"DONE", b"meta") or _is_critical(kind):
        what = "unexpected" if kind in (b"HEAD", b"DATA", b"DONE", b"meta") else "unknown critical"
        raise s.error(start, f"{what} chunk {kind.decode()!r} {where}")
    if length > MAX_ANCILLARY_BYTES:
        raise s.error(start, f"chunk {kind.decode()!r} declares {length} bytes, more than "
                             f"the limit of {MAX_ANCILLARY_BYTES}")
    s.chunk_data(start, kind, length)  # unknown ancillary: checked and skipped


def _decompress(s: _Stream, header: Header, payload: bytes,
                dictionary: zstandard.ZstdCompressionDict | None = None) -> bytes:
    at = header.data_offset
    expected = header.raw_size
    try:
        params = zstandard.get_frame_parameters(payload)
    except zstandard.ZstdError as e:
        raise s.error(at, f"DATA: not a zstd frame ({e})") from None
    if params.content_size != expected:
        declared = "no size" if params.content_size == zstandard.CONTENTSIZE_UNKNOWN \
            else f"{params.content_size} bytes"
        raise s.error(at, f"DATA: zstd frame declares {declared}, expected {expected} for "
                          f"{header.n_splats} {header.precision} splats")
    dctx = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW, dict_data=dictionary)
    try:
        # The declared size bounds this allocation; the second pass (same,
        # now known-small output) finds bytes after the frame.
        raw = dctx.decompress(payload)
        obj = dctx.decompressobj()
        obj.decompress(payload)
        rest = obj.unused_data
    except zstandard.ZstdError as e:
        raise s.error(at, f"DATA: zstd data is corrupt or truncated ({e})") from None
    if len(raw) != expected:
        raise s.error(at, f"DATA: decompressed to {len(raw)} bytes, expected {expected}")
    if rest:
        raise s.error(at, f"DATA: {len(rest)} bytes after the zstd frame")
    return raw


def _columns(header: Header, raw: bytes) -> q.Columns:
    n = header.n_splats
    widths = q.column_widths(header.mode, header.codings)
    arrays = []
    pos = 0
    for w in widths:
        planes = np.frombuffer(raw, dtype=np.uint8, count=n * w, offset=pos).reshape(w, n)
        pos += n * w
        if w in (1, 2, 4):
            # (n, w) little-endian bytes viewed as one unsigned value per row
            values = np.ascontiguousarray(planes.T).view(f"<u{w}").reshape(n)
        else:  # 3-byte Morton differences
            values = np.zeros(n, dtype=np.uint64)
            for j in range(w):
                values |= planes[j].astype(np.uint64) << np.uint64(8 * j)
        if header.mode == q.MODE_FP32:
            values = values.view("<f4")
        elif header.mode == q.MODE_FP16:
            values = values.view("<f2")
        arrays.append(values)
    return q.Columns(header.mode, tuple(arrays), header.codings, widths)


def read_payload(fp: BinaryIO, header: Header, name: str = "<stream>") -> tuple[bytes, int]:
    """Read DATA's data (``fp`` positioned there by `read_header`) and the
    chunks after it, checking CRCs, order and the end of the file.

    Returns ``(payload, file_size)``: the still-compressed DATA bytes (version
    2: the payload and the CRC after it) and the file's size. Raises
    `GSIError` for anything malformed.
    """
    s = _Stream(fp, name, header.data_offset)
    if header.version[0] != VERSION_1[0]:
        return _read_payload_compact(s, header)
    payload = s.chunk_data(header.data_offset - _CHUNK.size, b"DATA", header.data_length)
    while True:
        start, kind, length = s.chunk()
        if kind == b"DONE":
            break
        _skip_ancillary(s, start, kind, length, "after 'DATA'")
    if length:
        raise s.error(start, f"chunk 'DONE' has {length} bytes of data, expected none")
    s.chunk_data(start, kind, 0)
    if fp.read(1):
        raise s.error(s.offset, "data after the 'DONE' chunk")
    return payload, s.offset


def decode_payload(header: Header, payload: bytes, name: str = "<stream>",
                   dictionary: zstandard.ZstdCompressionDict | bytes | None = None) -> Splats:
    """Decompress and decode the payload (from `read_payload`) into `Splats`.

    ``dictionary``: the zstd dictionary a version-3 (or 2) file names by id (see
    `train_dictionary`); a file that needs one and gets none or another raises
    `GSIError`.
    """
    s = _Stream(io.BytesIO(), name, header.data_offset)
    if header.version[0] != VERSION_1[0]:
        return _decode_payload_compact(s, header, payload, dictionary)
    raw = _decompress(s, header, payload)
    try:
        return q.restore(_columns(header, raw), header.width, header.height)
    except ValueError as e:
        raise s.error(header.data_offset, f"DATA: {e}") from None


def loads(data: bytes,
          dictionary: zstandard.ZstdCompressionDict | bytes | None = None) -> Splats:
    """Parse the bytes of a .gsi file into `Splats` (raises `GSIError`);
    ``dictionary`` as for `decode_payload`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    fp = io.BytesIO(data)
    header = read_header(fp, "<bytes>")
    return decode_payload(header, read_payload(fp, header, "<bytes>")[0], "<bytes>",
                          dictionary)


def read_file(path: str | os.PathLike,
              dictionary: zstandard.ZstdCompressionDict | bytes | None = None) -> Splats:
    """Read the .gsi file at ``path`` (raises `GSIError` or `OSError`);
    ``dictionary`` as for `decode_payload`."""
    with open(path, "rb") as fp:
        header = read_header(fp, str(path))
        payload, _ = read_payload(fp, header, str(path))
    return decode_payload(header, payload, str(path), dictionary)


# ---------------------------------------------------------------- reading versions 3 and 2


class _HeadReader:
    """Reads a version-3 or 2 header from a stream, keeping its bytes for the CRC."""

    def __init__(self, s: _Stream, start: bytes) -> None:
        self.s = s
        self.data = bytearray(start)

    def read(self, n: int, what: str) -> bytes:
        data = self.s.read(n, what)
        self.data += data
        return data

    def varint(self, what: str, limit: int) -> int:
        at = self.s.offset
        value = 0
        for i in range(_MAX_VARINT_BYTES):
            (byte,) = self.read(1, what)
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if i and not byte:
                    raise self.s.error(at, f"header: {what} is not a minimal varint")
                if value > limit:
                    raise self.s.error(at, f"header: {what} {value} exceeds the limit of "
                                           f"{limit}")
                return value
        raise self.s.error(at, f"header: {what} is a varint longer than "
                               f"{_MAX_VARINT_BYTES} bytes")


def _read_header_compact(s: _Stream, version: tuple[int, int]) -> Header:
    """The header of a version-3 or version-2 file (after the version)."""
    v3 = version[0] == VERSION[0]
    supported = VERSION if v3 else VERSION_2
    if version != supported:
        raise s.error(4 if v3 else 9, f"unsupported version {version[0]}.{version[1]} (this "
                                      f"reader supports {supported[0]}.{supported[1]})")
    start = MAGIC + bytes([version[0] << 4 | version[1]]) if v3 else \
        SIGNATURE_V1 + bytes(version)
    h = _HeadReader(s, start)
    width = h.varint("width", 65535)
    height = h.varint("height", 65535)
    if width == 0 or height == 0:
        raise s.error(len(start), f"header: reference size {width}x{height} is empty")
    n = h.varint("splat count", MAX_SPLATS)
    at = s.offset
    (flags,) = h.read(1, "the flags")
    mode = flags & 3
    if mode not in q.MODE_NAMES:
        raise s.error(at, f"header: unknown precision mode {mode}")
    if v3:
        zstd, position_offsets = bool(flags & _ZSTD), bool(flags & _POSITION_OFFSETS)
        extras = 0
        if flags & _EXTRAS:
            (extras,) = h.read(1, "the extras byte")
            if not extras or extras & ~(_EXTRA_META | _EXTRA_DICTIONARY):
                raise s.error(at + 1, f"header: invalid extras byte 0x{extras:02x}")
        meta, dictionary = bool(extras & _EXTRA_META), bool(extras & _EXTRA_DICTIONARY)
    else:
        zstd, position_offsets = bool(flags & _V2_ZSTD), True
        meta, dictionary = bool(flags & _V2_META), bool(flags & _V2_DICTIONARY)
    if mode != q.MODE_QUANT and flags >> _PREDICTOR_SHIFT:
        raise s.error(at, f"header: flags 0x{flags:02x}: predictors in a {q.MODE_NAMES[mode]} "
                          "file")
    if dictionary and not zstd:
        raise s.error(at, f"header: flags 0x{flags:02x}: a dictionary without zstd")
    if zstd and n == 0:
        raise s.error(at, f"header: flags 0x{flags:02x}: zstd payload for no splats")
    if v3 and flags & _POSITION_OFFSETS and not (mode == q.MODE_QUANT and n):
        raise s.error(at, f"header: flags 0x{flags:02x}: position offsets without quantized "
                          "splats")
    dictionary_id = 0
    if dictionary:
        (dictionary_id,) = _U32.unpack(h.read(4, "the dictionary id"))
        if not dictionary_id:
            raise s.error(s.offset - 4, "header: dictionary id 0")
    metadata: dict[str, str] = {}
    if meta:
        length = h.varint("metadata length", MAX_META_BYTES)
        start = s.offset - _CHUNK.size  # _parse_meta reports offsets past a chunk header
        metadata = _parse_meta(s, start, h.read(length, "the metadata"))
    grids = None
    if mode == q.MODE_QUANT and n:
        at = s.offset
        widths = tuple(w for b in h.read(4, "the code widths") for w in (b & 15, b >> 4))
        steps = tuple(h.read(4, "the steps"))
        offsets = []
        for i, field_name in enumerate(FIELDS):
            if i < 2 and not position_offsets:
                offsets.append(0)
                continue
            relative = v3 and field_name == "l22"  # to l11's, version 3
            z = h.varint(f"offset of {field_name}", (4 if relative else 2) * q.MAX_OFFSET - 1)
            offsets.append(_unzigzag(z) + (offsets[2] if relative else 0))
            if not -q.MAX_OFFSET <= offsets[-1] < q.MAX_OFFSET:
                raise s.error(at, f"header: offset of {field_name} {offsets[-1]} exceeds the "
                                  f"limit of 2**40")
        predictors = flags >> _PREDICTOR_SHIFT
        try:
            q.predictor_sources(predictors)
        except ValueError as e:
            raise s.error(at, f"header: {e}") from None
        grids = q.Grids(widths, steps, predictors, tuple(offsets))
    elif flags >> _PREDICTOR_SHIFT:
        raise s.error(at, f"header: flags 0x{flags:02x}: predictors without splats")
    header = Header(version, width, height, n, mode, (), metadata, 0, 0, grids, flags, zstd,
                    dictionary_id)
    raw = header.raw_size
    length = raw
    if zstd:  # above zstd's worst case
        length = h.varint("payload length", raw + raw // 64 + 1024)
    return dataclasses.replace(header, data_offset=s.offset, data_length=length,
                               crc_seed=zlib.crc32(bytes(h.data)))


def _read_payload_compact(s: _Stream, header: Header) -> tuple[bytes, int]:
    payload = s.read(header.data_length + 4, "the payload and its CRC")
    if s.fp.read(1):
        raise s.error(s.offset, "data after the CRC (the end of the file)")
    return payload, s.offset


def _decode_payload_compact(s: _Stream, header: Header, payload: bytes,
                       dictionary: zstandard.ZstdCompressionDict | bytes | None) -> Splats:
    at = header.data_offset
    data, (stored,) = payload[:-4], _U32.unpack(payload[-4:])
    zdict = None
    if header.dictionary_id:
        if dictionary is None:
            raise s.error(at, f"payload needs the zstd dictionary with id "
                              f"{header.dictionary_id}; none was given")
        zdict = _as_dictionary(dictionary)
        if zdict.dict_id() != header.dictionary_id:
            raise s.error(at, f"payload needs the zstd dictionary with id "
                              f"{header.dictionary_id}, got id {zdict.dict_id()}")
    raw = _decompress(s, header, data, zdict) if header.zstd else data
    computed = zlib.crc32(raw, header.crc_seed)
    if stored != computed:
        hint = " (or the wrong dictionary)" if zdict is not None else ""
        raise s.error(at + len(data), f"CRC mismatch (stored 0x{stored:08x}, computed "
                                      f"0x{computed:08x}); the file is corrupt{hint}")
    try:
        if header.mode == q.MODE_QUANT:
            if header.grids is None:
                return Splats.from_array(np.zeros((0, 8), np.float32), header.width,
                                         header.height)
            cols = _quantized_columns(header.grids, header.n_splats, raw, header.zstd,
                                      header.version)
            return q.dequantize(cols, header.width, header.height)
        return q.restore(_columns(header, raw), header.width, header.height)
    except ValueError as e:
        raise s.error(at, f"payload: {e}") from None


def train_dictionary(files: Iterable[bytes], size: int = 16384) -> zstandard.ZstdCompressionDict:
    """Train a zstd dictionary of about ``size`` bytes on the payloads of
    ``files`` (the bytes of version-3 .gsi files written without one, e.g. a
    sample of a data set's first shard). Pass it to `dumps` and, to decode,
    to `loads` / `gscodec.open`; store it once next to the files it serves.
    Raises ValueError when the sample is too small to train on.
    """
    samples = []
    for data in files:
        fp = io.BytesIO(data)
        header = read_header(fp, "<sample>")
        if header.version != VERSION or header.dictionary_id:
            raise ValueError("train_dictionary needs version-3 files written without a "
                             "dictionary")
        if not header.n_splats:
            continue
        payload, _ = read_payload(fp, header, "<sample>")
        raw = payload[:-4]
        if header.zstd:
            raw = _decompress(_Stream(io.BytesIO(), "<sample>"), header, raw)
        elif header.mode == q.MODE_QUANT:  # raw bits: what zstd would have seen
            cols = _quantized_columns(header.grids, header.n_splats, raw, False, VERSION)
            raw = b"".join(_quantized_layouts(cols)[0])
        samples.append(raw)
    if len(samples) < 8:
        raise ValueError(f"train_dictionary needs at least 8 files with splats, got "
                         f"{len(samples)}")
    try:
        return zstandard.train_dictionary(size, samples, level=ZSTD_LEVEL)
    except zstandard.ZstdError as e:
        raise ValueError(f"cannot train a dictionary on {len(samples)} payloads: {e}") from None
