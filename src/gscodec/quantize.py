"""Precision modes of the .gsi format: fp32, fp16 and quantized splats.

This module is the numeric half of the format (docs/format.md, "Precision
modes"): it turns `Splats` into the integer or float columns that the DATA
chunk stores, and back. `gscodec.format` does the byte layout and zstd.

- ``fp32``: the float32 values, in the caller's order (lossless).
- ``fp16``: IEEE binary16 values (16 bytes per splat before zstd), splats in
  Morton order of position.
- quantized (presets ``q6``, ``q7``, ``q8``, ``q10`` or an explicit ``q:``
  spec): every field on a uniform grid of ``2**bits`` levels over a stored
  float32 range ``[lo, hi]``; the Cholesky diagonal on a log scale; positions
  interleaved into a Morton code and stored as differences of the sorted codes.

`roundtrip` gives exactly the `Splats` a reader gets back from a file written
with a given precision, so callers can measure or render the quantized splats
without writing a file.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from .splats import FIELDS, Splats

__all__ = [
    "MODE_FP32",
    "MODE_FP16",
    "MODE_QUANT",
    "MODE_NAMES",
    "LINEAR",
    "LOG",
    "MAX_BITS",
    "PRESETS",
    "FieldCoding",
    "Precision",
    "Columns",
    "column_widths",
    "TRANSFORM_NAMES",
    "parse_precision",
    "prepare",
    "restore",
    "roundtrip",
    "morton_encode",
    "morton_decode",
    "estimate_bits_per_splat",
]

MODE_FP32, MODE_FP16, MODE_QUANT = 0, 1, 2
MODE_NAMES = {MODE_FP32: "fp32", MODE_FP16: "fp16", MODE_QUANT: "quantized"}

#: Transforms a quantized field may use (the HEAD chunk's transform byte).
LINEAR, LOG = 0, 1
TRANSFORM_NAMES = {LINEAR: "linear", LOG: "log"}
#: Largest end of a LOG range whose exp is finite in float32, ln(FLT_MAX) in
#: float64 (rounded to float32 it rounds up, past the largest finite exp).
LOG_FLOAT32_MAX = float(np.log(np.float64(np.finfo(np.float32).max)))
#: Largest bit width of one quantized field (positions too: a Morton code of
#: two positions then fits in 32 bits).
MAX_BITS = 16

# Which transform the writer uses per field: sizes span decades, so their log
# is quantized (constant relative error); everything else is linear.
_TRANSFORMS = (LINEAR, LINEAR, LOG, LINEAR, LOG, LINEAR, LINEAR, LINEAR)
# fp16: smallest positive binary16 (subnormal) and largest finite value.
_FP16_TINY = float(np.finfo(np.float16).smallest_subnormal)
_FP16_MAX = float(np.finfo(np.float16).max)

#: Quantized presets ``qN``: N bits for every field but the position; positions
#: on a grid of ``2**(ceil(log2(side)) + k)`` steps per axis, i.e. 1/2**k pixel of
#: the reference size. Values: (k, scale bits (l11, l22), shear bits (l21),
#: colour bits). Chosen by measurement: docs/format.md, "Choosing the presets".
PRESETS: dict[str, tuple[int, int, int, int]] = {
    "q6": (2, 6, 6, 6),
    "q7": (2, 7, 7, 7),
    "q8": (3, 8, 8, 8),
    "q10": (3, 10, 10, 10),
}

_GROUPS = {
    "pos": ("x", "y"),
    "scale": ("l11", "l22"),
    "shear": ("l21",),
    "color": ("r", "g", "b"),
    **{f: (f,) for f in FIELDS},
}


@dataclass(frozen=True)
class FieldCoding:
    """How one field is quantized: ``bits`` wide, ``transform`` (LINEAR or
    LOG), over the range ``[lo, hi]`` of the transformed value.

    ``lo`` and ``hi`` are float32 values (the file stores them as float32).
    Code ``k`` in ``0 .. 2**bits - 1`` stands for the transformed value
    ``lo + (hi - lo) * k / (2**bits - 1)`` evaluated in float64, then ``exp``
    for LOG fields, then rounded to float32.
    """

    bits: int
    transform: int
    lo: float
    hi: float

    @property
    def levels(self) -> int:
        """Largest code, ``2**bits - 1``."""
        return (1 << self.bits) - 1

    @property
    def step(self) -> float:
        """Grid step in transformed units (0 when the range is a single value)."""
        return (self.hi - self.lo) / self.levels

    @classmethod
    def fit(cls, values: np.ndarray, bits: int, transform: int) -> "FieldCoding":
        """The coding whose range is ``values``' range (float32-rounded)."""
        t = _forward(np.asarray(values, dtype=np.float64), transform)
        if t.size == 0:
            return cls(bits, transform, 0.0, 0.0)
        lo, hi = np.float32(t.min()), np.float32(t.max())
        if transform == LOG and float(hi) > LOG_FLOAT32_MAX:  # float32 rounding went past it
            hi = np.nextafter(hi, np.float32(0))
            lo = min(lo, hi)
        return cls(bits, transform, float(lo), float(hi))

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Nearest codes (uint32) of ``values`` (untransformed), clipped to the grid."""
        t = _forward(np.asarray(values, dtype=np.float64), self.transform)
        if self.hi <= self.lo:
            return np.zeros(t.shape, dtype=np.uint32)
        k = np.rint((t - self.lo) / (self.hi - self.lo) * self.levels)
        return np.clip(k, 0, self.levels).astype(np.uint32)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Values (float32) of ``codes``, exactly as docs/format.md defines them."""
        k = np.asarray(codes, dtype=np.float64)
        t = self.lo + (self.hi - self.lo) * k / self.levels
        if self.transform == LOG:
            t = np.exp(t)
        return t.astype(np.float32)


def _forward(values: np.ndarray, transform: int) -> np.ndarray:
    return np.log(values) if transform == LOG else values


@dataclass(frozen=True)
class Precision:
    """A precision mode as requested, before any data fixes the ranges.

    ``bits`` holds 8 widths (fields in `FIELDS` order) for quantized modes;
    for ``x`` and ``y``, ``relative[i]`` says the width is added to
    ``ceil(log2(side))`` of the reference width or height.
    """

    mode: int
    name: str
    bits: tuple[int, ...] = ()
    relative: tuple[bool, ...] = ()

    def resolve(self, width: int, height: int) -> tuple[int, ...]:
        """Absolute bit widths for a ``width`` x ``height`` reference size."""
        out = []
        for i, (b, rel) in enumerate(zip(self.bits, self.relative)):
            if rel:
                side = width if i == 0 else height
                b += max(0, math.ceil(math.log2(side)))
            out.append(min(MAX_BITS, max(1, b)))
        return tuple(out)


def parse_precision(precision: str) -> Precision:
    """Parse a precision string.

    Accepted: ``"fp32"``, ``"fp16"``, a preset name (``"q6"``, ``"q7"``, ``"q8"``,
    ``"q10"``), or an explicit spec ``"q:pos=+2,scale=7,shear=7,color=6"``:
    comma-separated ``name=bits`` with names ``pos``, ``scale`` (l11, l22),
    ``shear`` (l21), ``color`` or single fields (``x``, ``y``, ``l11``, ...),
    bits 1..16, later entries overriding earlier ones. Position bits written
    ``+k`` are relative to the reference size (``ceil(log2(side)) + k``);
    every field must be given.
    """
    if not isinstance(precision, str):
        raise TypeError(f"precision must be a str, got {type(precision).__name__}")
    if precision == "fp32":
        return Precision(MODE_FP32, "fp32")
    if precision == "fp16":
        return Precision(MODE_FP16, "fp16")
    if precision in PRESETS:
        sub, scale, shear, color = PRESETS[precision]
        bits = (sub, sub, scale, shear, scale, color, color, color)
        return Precision(MODE_QUANT, precision, bits, (True, True) + (False,) * 6)
    if not precision.startswith("q:"):
        known = ", ".join(["fp32", "fp16", *PRESETS, "q:<spec>"])
        raise ValueError(f"unknown precision {precision!r} (expected one of {known})")
    bits: dict[str, tuple[int, bool]] = {}
    for item in precision[2:].split(","):
        m = re.fullmatch(r"\s*([a-z0-9]+)\s*=\s*(\+?)(\d{1,2})\s*", item)
        if not m or m.group(1) not in _GROUPS:
            raise ValueError(f"precision {precision!r}: cannot parse {item!r} "
                             f"(expected name=bits, name one of {', '.join(_GROUPS)})")
        name, plus, value = m.group(1), m.group(2) == "+", int(m.group(3))
        for field in _GROUPS[name]:
            if plus and field not in ("x", "y"):
                raise ValueError(f"precision {precision!r}: only positions take '+bits', "
                                 f"not {name}")
            if not plus and not 1 <= value <= MAX_BITS:
                raise ValueError(f"precision {precision!r}: {name}={value} is outside "
                                 f"1..{MAX_BITS} bits")
            bits[field] = (value, plus)
    missing = [f for f in FIELDS if f not in bits]
    if missing:
        raise ValueError(f"precision {precision!r}: no bit width for {', '.join(missing)}")
    return Precision(MODE_QUANT, precision, tuple(bits[f][0] for f in FIELDS),
                     tuple(bits[f][1] for f in FIELDS))


def morton_encode(qx: np.ndarray, qy: np.ndarray, bx: int, by: int) -> np.ndarray:
    """Interleave the bits of ``qx`` (``bx`` wide) and ``qy`` (``by`` wide).

    From the least significant bit up, bit i of qx then bit i of qy, each
    only while i is below its width (so unequal widths work); uint64 result.
    """
    qx = np.asarray(qx, dtype=np.uint64)
    qy = np.asarray(qy, dtype=np.uint64)
    code = np.zeros(qx.shape, dtype=np.uint64)
    pos = 0
    for i in range(max(bx, by)):
        for q, b in ((qx, bx), (qy, by)):
            if i < b:
                code |= ((q >> np.uint64(i)) & np.uint64(1)) << np.uint64(pos)
                pos += 1
    return code


def morton_decode(code: np.ndarray, bx: int, by: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `morton_encode`: ``(qx, qy)`` as uint32."""
    code = np.asarray(code, dtype=np.uint64)
    qx = np.zeros(code.shape, dtype=np.uint64)
    qy = np.zeros(code.shape, dtype=np.uint64)
    pos = 0
    for i in range(max(bx, by)):
        for q, b in ((qx, bx), (qy, by)):
            if i < b:
                q |= ((code >> np.uint64(pos)) & np.uint64(1)) << np.uint64(i)
                pos += 1
    return qx.astype(np.uint32), qy.astype(np.uint32)


@dataclass(frozen=True)
class Columns:
    """What the DATA chunk holds, before byte planes and zstd.

    ``arrays``: the stored columns in file order. fp32 / fp16: 8 float32 /
    float16 arrays (one per field). Quantized: the Morton code differences
    (uint64), then codes (uint32) of l11, l21, l22, r, g, b. ``codings``: the 8
    `FieldCoding` of a quantized mode (empty otherwise). ``widths``: bytes per
    value of each column. ``order``: stored splat i is input splat
    ``order[i]`` (None when read from a file).
    """

    mode: int
    arrays: tuple[np.ndarray, ...]
    codings: tuple[FieldCoding, ...]
    widths: tuple[int, ...]
    order: np.ndarray | None = None


def column_widths(mode: int, codings: tuple[FieldCoding, ...] = ()) -> tuple[int, ...]:
    """Bytes per value of each stored column of a mode (docs/format.md)."""
    if mode == MODE_FP32:
        return (4,) * 8
    if mode == MODE_FP16:
        return (2,) * 8
    morton = (codings[0].bits + codings[1].bits + 7) // 8
    return (morton,) + tuple((c.bits + 7) // 8 for c in codings[2:])


def _morton_order(x: np.ndarray, y: np.ndarray, bits: int) -> np.ndarray:
    # Only for ordering (fp16): positions on a [0, 1] grid, clamped.
    levels = (1 << bits) - 1
    qx = np.clip(np.rint(x.astype(np.float64) * levels), 0, levels)
    qy = np.clip(np.rint(y.astype(np.float64) * levels), 0, levels)
    return np.argsort(morton_encode(qx, qy, bits, bits), kind="stable")


def prepare(splats: Splats, precision: str | Precision) -> Columns:
    """Convert ``splats`` to the columns a file of ``precision`` stores."""
    p = precision if isinstance(precision, Precision) else parse_precision(precision)
    arr = splats.to_array()
    if p.mode == MODE_FP32:
        cols = tuple(np.ascontiguousarray(arr[:, i]) for i in range(8))
        return Columns(p.mode, cols, (), column_widths(p.mode), np.arange(len(arr)))
    if p.mode == MODE_FP16:
        # Morton order so neighbouring splats (similar values) are adjacent
        # for zstd; out-of-range values are clamped to what binary16 holds.
        order = _morton_order(arr[:, 0], arr[:, 1], 16)
        arr = np.clip(arr[order], -_FP16_MAX, _FP16_MAX)
        arr[:, 2] = np.maximum(arr[:, 2], _FP16_TINY)
        arr[:, 4] = np.maximum(arr[:, 4], _FP16_TINY)
        cols = tuple(arr[:, i].astype(np.float16) for i in range(8))
        return Columns(p.mode, cols, (), column_widths(p.mode), order)
    bits = p.resolve(splats.width, splats.height)
    codings = tuple(FieldCoding.fit(arr[:, i], bits[i], _TRANSFORMS[i]) for i in range(8))
    codes = [c.encode(arr[:, i]) for i, c in enumerate(codings)]
    morton = morton_encode(codes[0], codes[1], bits[0], bits[1])
    order = np.argsort(morton, kind="stable")
    sorted_codes = morton[order]
    deltas = np.diff(sorted_codes, prepend=np.uint64(0))
    cols = (deltas,) + tuple(codes[i][order] for i in range(2, 8))
    return Columns(p.mode, cols, codings, column_widths(p.mode, codings), order)


def restore(columns: Columns, width: int, height: int) -> Splats:
    """Inverse of `prepare`: the `Splats` a reader gets.

    Raises ValueError (with the field and splat index) if the values are not
    valid splats; `gscodec.format` turns that into a `GSIError`.
    """
    if columns.mode in (MODE_FP32, MODE_FP16):
        arr = np.stack([c.astype(np.float32) for c in columns.arrays], axis=1)
    else:
        codings = columns.codings
        codes = np.cumsum(columns.arrays[0], dtype=np.uint64)
        total_bits = codings[0].bits + codings[1].bits
        if codes.size and int(codes[-1]) >> total_bits:
            i = int(np.argmax(codes >> np.uint64(total_bits) > 0))
            raise ValueError(f"splat {i}: Morton code {int(codes[i])} exceeds "
                             f"{total_bits} bits")
        qx, qy = morton_decode(codes, codings[0].bits, codings[1].bits)
        stored = [qx, qy, *columns.arrays[1:]]
        for i, (c, k) in enumerate(zip(codings, stored)):
            if k.size and int(k.max()) > c.levels:
                j = int(np.argmax(k > c.levels))
                raise ValueError(f"field {FIELDS[i]}, splat {j}: code {int(k[j])} exceeds "
                                 f"{c.bits} bits")
        arr = np.stack([c.decode(k) for c, k in zip(codings, stored)], axis=1)
    arr = arr.reshape(-1, 8)
    bad = ~np.isfinite(arr)
    if bad.any():
        j, i = np.argwhere(bad)[0]
        raise ValueError(f"field {FIELDS[i]}, splat {j}: value is not finite ({arr[j, i]})")
    for i in (2, 4):
        if arr.size and not (arr[:, i] > 0).all():
            j = int(np.argmax(~(arr[:, i] > 0)))
            raise ValueError(f"field {FIELDS[i]}, splat {j}: must be positive, got {arr[j, i]}")
    return Splats.from_array(arr, width, height)


def roundtrip(splats: Splats, precision: str | Precision) -> Splats:
    """The splats a reader gets from a file written with ``precision``
    (same values, same order), without writing one."""
    return restore(prepare(splats, precision), splats.width, splats.height)


def estimate_bits_per_splat(precision: str | Precision, n_splats: int, width: int,
                            height: int) -> float:
    """Rough payload bits per splat after zstd, for rate control.

    Fitted to the files of the Kodak rate-distortion benchmark and of
    docs/format.md "Choosing the presets" (within about 5%); rate control
    corrects it with the measured size.
    """
    p = precision if isinstance(precision, Precision) else parse_precision(precision)
    if p.mode == MODE_FP32:
        return 205.0
    if p.mode == MODE_FP16:
        return 97.0
    n = max(n_splats, 1)
    bits = p.resolve(width, height)
    # Sorted positions cost about log2(grid cells / n) + 1.44 bits plus coder
    # overhead. zstd saves a bit or two per other field, more as splats get
    # denser (neighbours more alike): 0.27 bit per doubling of n. It stores
    # incompressible planes raw, which bounds the estimate.
    position = max(2.0, bits[0] + bits[1] - math.log2(n) + 2.5)
    saving = min(2.5, max(0.0, 1.5 + 0.27 * math.log2(n / 4096)))
    raw = 8 * ((bits[0] + bits[1] + 7) // 8 + sum((b + 7) // 8 for b in bits[2:]))
    return min(position + sum(b - saving for b in bits[2:]), raw + 2.0)
