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
    "Grids",
    "GridColumns",
    "quantize",
    "dequantize",
    "allocate",
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
        """Absolute bit widths for a ``width`` x ``height`` reference size
        (version 1.0 files: whole bits only)."""
        if any(b != int(b) for b in self.bits):
            raise ValueError(f"precision {self.name!r}: fractional bits need a version-3 file")
        out = []
        for i, (b, rel) in enumerate(zip(self.bits, self.relative)):
            if rel:
                side = width if i == 0 else height
                b += max(0, math.ceil(math.log2(side)))
            out.append(min(MAX_BITS, max(1, int(b))))
        return tuple(out)


def parse_precision(precision: str) -> Precision:
    """Parse a precision string.

    Accepted: ``"fp32"``, ``"fp16"``, a preset name (``"q6"``, ``"q7"``, ``"q8"``,
    ``"q10"``), or an explicit spec ``"q:pos=+2,scale=7,shear=7,color=6"``:
    comma-separated ``name=bits`` with names ``pos``, ``scale`` (l11, l22),
    ``shear`` (l21), ``color`` or single fields (``x``, ``y``, ``l11``, ...),
    bits 1..16, later entries overriding earlier ones. Position bits written
    ``+k`` are relative to the reference size (``ceil(log2(side)) + k``;
    versions 2 and 3: a grid of 1/2**k pixel); every field must be given.
    Fractional bits (``color=6.5``: a step of range / (2**6.5 - 1);
    ``pos=+2.5``) are for version-3 (and version-2) files, which quantize by step.
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
        m = re.fullmatch(r"\s*([a-z0-9]+)\s*=\s*(\+?)(\d{1,2}(?:\.\d{1,3})?)\s*", item)
        if not m or m.group(1) not in _GROUPS:
            raise ValueError(f"precision {precision!r}: cannot parse {item!r} "
                             f"(expected name=bits, name one of {', '.join(_GROUPS)})")
        name, plus, text = m.group(1), m.group(2) == "+", m.group(3)
        value = float(text) if "." in text else int(text)
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
    return _checked_splats(arr.reshape(-1, 8), width, height)


def _checked_splats(arr: np.ndarray, width: int, height: int) -> Splats:
    # What every reader checks after dequantizing (docs/format.md, 4.2).
    bad = ~np.isfinite(arr)
    if bad.any():
        j, i = np.argwhere(bad)[0]
        raise ValueError(f"field {FIELDS[i]}, splat {j}: value is not finite ({arr[j, i]})")
    for i in (2, 4):
        if arr.size and not (arr[:, i] > 0).all():
            j = int(np.argmax(~(arr[:, i] > 0)))
            raise ValueError(f"field {FIELDS[i]}, splat {j}: must be positive, got {arr[j, i]}")
    return Splats.from_array(arr, width, height)


def roundtrip(splats: Splats, precision: str | Precision, major: int = 2) -> Splats:
    """The splats a reader gets from a file (format version ``major``, 2 or
    1) written with ``precision`` (same values, same order), without writing
    one."""
    p = precision if isinstance(precision, Precision) else parse_precision(precision)
    if p.mode == MODE_QUANT and major == 2:
        return dequantize(quantize(splats, p), splats.width, splats.height)
    return restore(prepare(splats, p), splats.width, splats.height)


def morton_split(n: int, total_bits: int) -> int:
    """Low bits of each Morton difference in a zstd payload, packed as bits
    rather than byte planes: about the uniform part of a gap of
    ``2**total_bits / n``."""
    return max(0, total_bits - n.bit_length() - 3)


def elias_fano_split(n: int, total_bits: int) -> int:
    """Low bits per Morton code in a raw version-3 payload: the high parts
    then take n + 2**bitlength(n) bits at most, 2-3 bits per splat."""
    return max(0, total_bits - n.bit_length())


def estimate_bits_per_splat(precision: str | Precision, n_splats: int, width: int,
                            height: int) -> float:
    """Rough version-3 payload bits per splat (without header and CRC), for
    rate control.

    Fitted to the v3 files of cached fits at q6-q10 (``benchmarks/
    bitstream_v2.py estimate``: CIFAR-10 at 16 / 32 / 64 splats, Kodak-224 at
    400, Kodak at 3000; docs/benchmarks.md gives the measured ratios). Rate
    control corrects it with the measured size.
    """
    p = precision if isinstance(precision, Precision) else parse_precision(precision)
    if p.mode == MODE_FP32:
        return 205.0
    if p.mode == MODE_FP16:
        return 97.0
    return min(_payload_estimates(p, n_splats, width, height))


def _payload_estimates(p: Precision, n_splats: int, width: int,
                       height: int) -> tuple[float, float]:
    """Estimated payload bits per splat of a quantized file, (zstd frame,
    raw bits); the writer stores the smaller."""
    n = max(n_splats, 1)
    bits = p.resolve(width, height)
    total = bits[0] + bits[1]
    # zstd: sorted positions cost about log2(grid cells / n) + 1.44 bits plus
    # coder overhead; zstd and the predictors save per field 0.5 bit per
    # doubling of n above ~128 splats (more splats, more alike neighbours), up
    # to 2.5 bits (the largest measured was 2.3, at 3000).
    position = max(2.0, total - math.log2(n) + 4.0)
    saving = min(2.5, max(0.0, 0.5 * math.log2(n) - 3.5))
    zstd = position + sum(b - saving for b in bits[2:])
    # Raw (small files): Elias-Fano positions, K + 1 + 2**(W - K) / n bits,
    # and fixed-width codes, about 2 bits fewer in all than asked (the colour
    # predictors narrow g and b; the step table's rounding widens others).
    split = elias_fano_split(n, total)
    raw = split + 1 + 2.0 ** (total - split) / n + sum(bits[2:]) - 2.0
    return zstd, raw


# ---------------------------------------------------------------- formats v2, v3: grids and predictors
#
# Formats v2 and v3 store every quantized field as an integer grid index v with
# value = v * step (positions: v * step reference pixels, one step for both
# axes). Fields that share a step (the two log sizes; the three colours) have
# grid indices on one grid, so one can predict another exactly: g from r, b
# from r or g. The stored code is v - offset - prediction, never negative.

#: Widest v2 / v3 code of one field (a 4-bit width in the header).
MAX_BITS_V2 = 15
#: Largest magnitude of a stored offset (keeps v * step exact in binary64).
MAX_OFFSET = 1 << 40
#: Fields sharing one step byte: position (x, y, in pixels), log sizes (l11,
#: l22), shear (l21), colour (r, g, b).
STEP_GROUPS = ((0, 1), (2, 4), (3,), (5, 6, 7))
#: Colour predictors: field -> the source field of each choice (None: none).
#: The predictor byte holds g's choice in bit 0 and b's in bits 1-2.
_PREDICTOR_CHOICES = {6: (None, 5), 7: (None, 5, 6)}
#: One step byte: (4 + (byte & 3)) * 2**((byte >> 2) - 44), increasing in byte.
STEP_TABLE = np.array([math.ldexp(4 + (c & 3), (c >> 2) - 44) for c in range(256)])


def step_value(code: int) -> float:
    """The grid step a step byte stands for (exact in binary64)."""
    return float(STEP_TABLE[code])


def _step_code(step: float) -> int:
    """Step byte nearest ``step`` in ratio (255 at most, 0 at least)."""
    i = int(np.searchsorted(STEP_TABLE, step, side="left"))
    if i >= 256:
        return 255
    if i and STEP_TABLE[i] / step > step / STEP_TABLE[i - 1]:
        return i - 1
    return i


def predictor_sources(predictors: int) -> dict[int, int]:
    """``{field index: source field index}`` of the predicted fields of a
    predictor byte; raises ValueError for an invalid byte."""
    g, b = predictors & 1, (predictors >> 1) & 3
    if predictors >> 3 or b > 2:
        raise ValueError(f"invalid predictor byte 0x{predictors:02x}")
    sources = {6: _PREDICTOR_CHOICES[6][g], 7: _PREDICTOR_CHOICES[7][b]}
    return {f: src for f, src in sources.items() if src is not None}


@dataclass(frozen=True)
class Grids:
    """The quantizer of a v2 or v3 quantized file (its header's descriptor).

    ``widths``: bits of the 8 stored code columns (0..15). ``steps``: step
    bytes of the position (pixels), log size, shear and colour grids.
    ``predictors``: the predictor byte. ``offsets``: 8 integers added to the
    stored codes (and to the prediction) to give grid indices.
    """

    widths: tuple[int, ...]
    steps: tuple[int, int, int, int]
    predictors: int
    offsets: tuple[int, ...]

    def field_step(self, i: int) -> float:
        """Step of field ``i`` in its units (pixels, log units, normalized)."""
        return step_value(self.steps[next(j for j, g in enumerate(STEP_GROUPS) if i in g)])

    @property
    def spec(self) -> str:
        """An explicit precision spec with these code widths (for re-encoding)."""
        return "q:" + ",".join(f"{f}={max(1, w)}" for f, w in zip(FIELDS, self.widths))


@dataclass(frozen=True)
class GridColumns:
    """What a v2 or v3 quantized payload holds: sorted Morton code differences
    (uint64) and the codes (int64, non-negative) of l11, l21, l22, r, g, b.
    ``order``: stored splat i is input splat ``order[i]`` (None when read)."""

    grids: Grids
    morton_deltas: np.ndarray
    codes: tuple[np.ndarray, ...]
    order: np.ndarray | None = None


#: How close to a grid point (in steps) a value must be to count as on it:
#: far above float32 rounding, far below a step.
_ON_GRID = 1e-3


def _fits(v: np.ndarray) -> bool:
    return v.size == 0 or (int(v.max()) - int(v.min()) < (1 << MAX_BITS_V2)
                           and int(np.abs(v).max()) < MAX_OFFSET)


def _order0_bits(codes: np.ndarray) -> float:
    _, counts = np.unique(codes, return_counts=True)
    return float(-(counts * np.log2(counts / counts.sum())).sum())


def _requested_step(p: Precision, group: tuple[int, ...], t: np.ndarray) -> float:
    # Positions "+k": 1/2**k pixel; otherwise b bits over the widest range in
    # the group (colours: over at most 8 interquartile ranges). The finest
    # request in a group wins.
    steps = [2.0 ** -p.bits[i] for i in group if p.relative[i]]
    absolute = [p.bits[i] for i in group if not p.relative[i]]
    if absolute and t.shape[1]:
        # A field of one value gets a step for its magnitude (small offsets).
        span = float(np.ptp(t, axis=1).max()) or float(np.abs(t).max()) or 1.0
        if group == STEP_GROUPS[-1]:
            # One outlier colour (a tiny splat the fit drove to -8) must not
            # coarsen every colour: at most 8 interquartile ranges; the
            # outliers get wider codes instead.
            q1, q3 = np.percentile(t, [25, 75], axis=1)
            span = min(span, 8 * float((q3 - q1).max())) or span
        steps.append(span / (2.0 ** min(absolute) - 1))
    elif absolute:
        steps.append(1.0)
    return min(steps)


def quantize(splats: Splats, precision: str | Precision) -> GridColumns:
    """Quantize ``splats`` for a v3 file of a quantized ``precision``.

    Each step group gets the step table entry nearest its requested step (see
    `_requested_step`), or the entry next to it whose grid the values already
    lie on (`_on_neighbouring_grid`: round trips are idempotent), coarsened
    until every field spans at most 15 bits.
    Colours are predicted from each other where that gives fewer bits
    (order-0 entropy of the codes). Positions keep offset 0 (nothing in the
    header) unless one is negative or an offset narrows a code.
    """
    p = precision if isinstance(precision, Precision) else parse_precision(precision)
    if p.mode != MODE_QUANT:
        raise ValueError(f"precision {p.name!r} is not a quantized mode")
    arr = splats.to_array().astype(np.float64)
    n = len(arr)
    arr[:, 0] *= splats.width
    arr[:, 1] *= splats.height
    arr[:, 2] = np.log(arr[:, 2])
    arr[:, 4] = np.log(arr[:, 4])
    index: dict[int, np.ndarray] = {}
    steps = []
    for group in STEP_GROUPS:
        t = arr[:, group].T
        code = _on_neighbouring_grid(t, _step_code(_requested_step(p, group, t)))
        while True:
            v = np.rint(t / step_value(code)).astype(np.int64)
            if _fits(v) or code == 255:
                break
            code += 1
        if group == (2, 4):
            v = _valid_sizes(v, step_value(code))
        steps.append(code)
        index.update(zip(group, v))
    predictors = 0
    for f, sources in _PREDICTOR_CHOICES.items():
        # A prediction whose differences would span more than 15 bits is out.
        residuals = [index[f] - (index[src] if src is not None else 0) for src in sources]
        costs = [_order0_bits(r) if _fits(r) else math.inf for r in residuals] if n else [0.0]
        predictors |= int(np.argmin(costs)) << (0 if f == 6 else 1)
    chosen = predictor_sources(predictors)
    stored = [index[i] - (index[chosen[i]] if i in chosen else 0) for i in range(8)]
    offsets = tuple(int(v.min()) if n else 0 for v in stored)
    if n and all(int(v.min()) >= 0 and int(v.max()).bit_length() == int(v.max() - v.min())
                 .bit_length() for v in stored[:2]):
        offsets = (0, 0) + offsets[2:]  # positions from the origin: no bytes in the header
    codes = [v - o for v, o in zip(stored, offsets)]
    widths = tuple(int(c.max()).bit_length() if n else 0 for c in codes)
    morton = morton_encode(codes[0], codes[1], widths[0], widths[1])
    order = np.argsort(morton, kind="stable")
    morton = morton[order]
    grids = Grids(widths, tuple(steps), predictors, offsets)
    return GridColumns(grids, np.diff(morton, prepend=np.uint64(0)),
                       tuple(c[order] for c in codes[2:]), order)


def _on_neighbouring_grid(t: np.ndarray, code: int) -> int:
    """``code``, or the step byte next to it when every value already lies on
    that grid: a round trip's output keeps its grids. (Rounding moves the spans
    the steps are requested from, and a span near a boundary between two steps
    would otherwise switch grids on every round trip.)"""
    for near in (code, code - 1, code + 1):
        if 0 <= near <= 255 and t.size:
            k = t / step_value(near)
            if np.all(np.abs(k - np.rint(k)) < _ON_GRID):
                return near
    return code


def _valid_sizes(v: np.ndarray, step: float) -> np.ndarray:
    # A log size whose grid value overflows (or underflows) float32 moves one
    # step inwards; the true value lies within half a step, so that suffices.
    out = v.copy()
    value = np.exp(out * step).astype(np.float32)
    out[np.isinf(value)] -= 1
    out[value == 0] += 1
    return out


def dequantize(columns: GridColumns, width: int, height: int) -> Splats:
    """Inverse of `quantize`: the `Splats` a reader gets (ValueError naming the
    field and splat for codes or values a valid file cannot hold)."""
    g = columns.grids
    total = g.widths[0] + g.widths[1]
    deltas = columns.morton_deltas
    # Each gap is below 2**total (so the sums cannot overflow), then the last
    # (largest) code must be too.
    if deltas.size and int(deltas.max()) >> total:
        i = int(np.argmax(deltas >> np.uint64(total) > 0))
        raise ValueError(f"splat {i}: Morton difference {int(deltas[i])} exceeds {total} bits")
    morton = np.cumsum(deltas, dtype=np.uint64)
    if morton.size and int(morton[-1]) >> total:
        i = int(np.argmax(morton >> np.uint64(total) > 0))
        raise ValueError(f"splat {i}: Morton code {int(morton[i])} exceeds {total} bits")
    qx, qy = morton_decode(morton, g.widths[0], g.widths[1])
    arr = np.empty((morton.size, 8), dtype=np.float32)
    sources = predictor_sources(g.predictors)
    index: dict[int, np.ndarray] = {}
    for i, k in enumerate((qx.astype(np.int64), qy.astype(np.int64), *columns.codes)):
        if k.size and int(k.max()) >> g.widths[i]:
            j = int(np.argmax(k >> g.widths[i] > 0))
            raise ValueError(f"field {FIELDS[i]}, splat {j}: code {int(k[j])} exceeds "
                             f"{g.widths[i]} bits")
        index[i] = k + g.offsets[i] + (index[sources[i]] if i in sources else 0)
        t = index[i] * g.field_step(i)
        if i < 2:
            t = t / (width, height)[i]
        # A hostile file may overflow float32 here; the checks below reject it.
        with np.errstate(over="ignore", under="ignore"):
            arr[:, i] = (np.exp(t) if i in (2, 4) else t).astype(np.float32)
    return _checked_splats(arr, width, height)


# ---------------------------------------------------------------- rate-distortion allocation

#: What `allocate` varies: position grids (+k) and bits of each step group.
_POSITION_CHOICES = tuple(b / 4 for b in range(0, 17))  # a grid of 1 .. 1/16 pixel
_BITS_CHOICES = tuple(b / 2 for b in range(6, 25))  # 3 .. 12 bits
#: The error budgets `allocate` tries, as multiples of the target's squared error.
_BUDGET_SCALES = tuple(np.geomspace(4.0, 0.25, 13))
#: Lagrange multipliers of the rate-distortion sweep (`_cheapest`).
_LAMBDAS = np.geomspace(1e-3, 1e9, 400)
#: A group's first measurements stop at the first choice whose error is below
#: this part of the smallest budget; the neighbour search goes finer where a
#: pick needs it. (1/2 rather than 1/64 measures a fifth fewer renders and
#: picks the same precisions on all of Kodak: docs/benchmarks.md.)
_NEGLIGIBLE = 1 / 2


def _spec(pos: float, scale: float, shear: float, color: float) -> str:
    return f"q:pos=+{pos:g},scale={scale:g},shear={shear:g},color={color:g}"


def _group_rate(cols: GridColumns, group: int, raw: bool = False) -> float:
    """Estimated bits of one group's columns in a v3 payload: a zstd frame's
    (order-0 entropy) or, with ``raw``, the raw payload's exact bits (fixed
    code widths; Elias-Fano positions) plus the header bytes of the group's
    offsets."""
    g, n = cols.grids, len(cols.morton_deltas)
    fields = STEP_GROUPS[group]
    total = g.widths[0] + g.widths[1]
    if raw:
        from .format import _varint, _zigzag  # the header's own coding of the offsets

        stored = [o - (g.offsets[2] if i == 4 else 0) for i, o in enumerate(g.offsets)]
        offsets = sum(8 * len(_varint(_zigzag(stored[i]))) for i in fields
                      if i >= 2 or any(stored[:2]))
        if group == 0:
            split = elias_fano_split(n, total)
            return n * (split + 1) + 2.0 ** (total - split) + offsets
        return n * sum(g.widths[i] for i in fields) + offsets
    if group == 0:  # positions: packed low bits of the Morton gaps + entropy of the rest
        low = morton_split(n, total)
        return low * n + _order0_bits(cols.morton_deltas >> np.uint64(low))
    return sum(_order0_bits(cols.codes[i - 2]) for i in fields)


def allocate(splats: Splats, psnr: float) -> str:
    """The per-field precision for ``splats`` with the fewest estimated bits
    whose render stays within ``psnr`` dB of the unquantized render (PSNR of
    the 8-bit renders at the reference size).

    Measures, per field group (positions, sizes, shear, colour) and per
    precision, the render's squared error with only that group quantized and
    the group's entropy in a version-3 payload. Only the choices that can
    matter are measured: every other one from the middle outwards, coarser
    until one alone exceeds the largest error budget, finer until its error
    is negligible, then the neighbours of each pick. Picks one precision per
    group on the lower convex hull of rate against error (a Lagrangian
    sweep) with the summed error within a budget, for budgets from loose to
    tight until the real render meets the target, then coarsens one group a
    notch at a time while the real render still meets it (a group that
    failed is not tried again: the others only get coarser). Returns an
    explicit ``q:`` spec (fractional bits: version-3 files only).
    """
    from .engine import render  # the container (format.py) must not load compiled code

    if not isinstance(splats, Splats):
        raise TypeError(f"splats must be gscodec.Splats, got {type(splats).__name__}")
    if not psnr > 0:
        raise ValueError(f"psnr must be a positive number of dB, got {psnr!r}")
    if len(splats) == 0:
        return _spec(2, 7, 7, 7)
    # Errors of the unclamped float render (no 8-bit rounding noise), in
    # 8-bit units, less what the finest setting of the other groups costs.
    ref = render(splats, dtype=np.float32).ravel() * np.float32(255)
    lossless = 14.0  # bits of the groups held fixed while one is measured
    # Small files are stored raw (fixed code widths), where only a narrower
    # code saves bits: count those bits, not zstd's entropy.
    zstd_bits, raw_bits = _payload_estimates(parse_precision("q7"), len(splats), splats.width,
                                             splats.height)
    raw = raw_bits < zstd_bits
    finest = [4, lossless, lossless, lossless]
    target = ref.size * 255.0 ** 2 / 10 ** (psnr / 10)

    quantized: dict[tuple[float, ...], GridColumns] = {}

    def columns(choice: list[float]) -> GridColumns:
        # A raw (small) file's precision is quantized once: the width trades
        # below revisit many (most of the time of small files). Large files
        # revisit few, and keeping their columns would cost memory.
        key = tuple(choice)
        if key in quantized:
            return quantized[key]
        cols = quantize(splats, _spec(*choice))
        if raw:
            quantized[key] = cols
        return cols

    def error_and_rate(choice: list[float], group: int) -> tuple[float, float]:
        cols = columns(choice)
        out = render(dequantize(cols, splats.width, splats.height), dtype=np.float32)
        diff = out.ravel() * np.float32(255)
        diff -= ref
        return float(np.dot(diff, diff)), _group_rate(cols, group, raw)

    floor, finest_position_rate = error_and_rate(finest, 0)
    groups = (_POSITION_CHOICES,) + (_BITS_CHOICES,) * 3
    tables: list[dict[int, tuple[float, float, float]]] = [{} for _ in groups]
    tables[0][len(_POSITION_CHOICES) - 1] = (finest[0], 0.0, finest_position_rate)

    def error_at(group: int, index: int) -> float:
        # Measures (choice, error, rate) of one choice once; returns its error.
        if index not in tables[group]:
            c = groups[group][index]
            error, rate = error_and_rate(finest[:group] + [c] + finest[group + 1:], group)
            tables[group][index] = (c, max(0.0, error - floor), rate)
        return tables[group][index][1]

    # Every other choice, from the middle outwards, while it can matter.
    for group, choices in enumerate(groups):
        middle = len(choices) // 2
        index = middle
        while error_at(group, index) <= target * _BUDGET_SCALES[0] and index >= 2:
            index -= 2
        index = middle
        while error_at(group, index) > target * _BUDGET_SCALES[-1] * _NEGLIGIBLE \
                and index + 2 < len(choices):
            index += 2

    def cheapest(budget: float) -> tuple[list[float], float]:
        # `_cheapest` of the measured choices, after measuring the neighbours
        # of its picks until they no longer change it.
        while True:
            options = [[t[i] for i in sorted(t)] for t in tables]
            choice, rate = _cheapest(options, budget)
            missing = [(g, i + step) for g, c in enumerate(choice)
                       for i in [groups[g].index(c)] for step in (-1, 1)
                       if 0 <= i + step < len(groups[g]) and i + step not in tables[g]]
            if not missing:
                return choice, rate
            for g, i in missing:
                error_at(g, i)

    # The summed errors are an estimate: try budgets from loose to tight and
    # keep the first pick whose real 8-bit render meets the target (the
    # fewest bits: a tighter budget never costs fewer).
    ref8 = render(splats).astype(np.float64).ravel()
    checked: dict[tuple[float, ...], bool] = {}

    def passes(choice: list[float]) -> bool:
        key = tuple(choice)
        if key not in checked:
            out = render(dequantize(columns(choice), splats.width, splats.height)).ravel() - ref8
            checked[key] = float(np.einsum("i,i", out, out)) <= target
        return checked[key]

    picks = (cheapest(target * scale)[0] for scale in _BUDGET_SCALES)
    choice = next((c for c in picks if passes(c)), None)
    if choice is None:
        return _spec(*finest)
    # The summed estimates are conservative: coarsen one group a notch at a
    # time while the real render still meets the target.
    open_groups = [3, 1, 2, 0]  # colour first: its errors hide best
    while open_groups:
        for group in list(open_groups):
            trial = choice.copy()
            trial[group] -= 0.25
            if trial[group] >= (0 if group == 0 else 1) and passes(trial):
                choice = trial
            else:
                open_groups.remove(group)
    if raw:
        group_bits: dict[tuple[int, float], float] = {}

        def raw_bits(choice: list[float]) -> float:
            # A group's grid, codes and offsets depend on its own precision
            # only: its raw bits are measured once per precision.
            missing = [g for g, c in enumerate(choice) if (g, c) not in group_bits]
            if missing:
                cols = columns(choice)
                group_bits.update({(g, choice[g]): _group_rate(cols, g, raw=True)
                                   for g in missing})
            return sum(group_bits[g, c] for g, c in enumerate(choice))

        choice = _trade_widths(choice, passes, raw_bits)
    return _spec(*choice)


def _trade_widths(choice: list[float], passes, rate) -> list[float]:
    """Raw payloads pay whole bits per code: make one group a notch finer
    and another coarser until it drops a code bit, while that saves bits
    and the render still meets the target (repeat until nothing does)."""
    lowest = (0, 1, 1, 1)
    best = rate(choice)
    improved = True
    while improved:
        improved = False
        for finer in range(4):
            for coarser in range(4):
                if finer == coarser:
                    continue
                trial = choice.copy()
                trial[finer] += 0.25
                bits = rate(trial)
                while trial[coarser] - 0.25 >= lowest[coarser] and bits >= best:
                    trial[coarser] -= 0.25
                    bits = rate(trial)
                if bits < best and passes(trial):
                    choice, best, improved = trial, bits, True
    return choice


def _cheapest(options: list[list[tuple[float, float, float]]],
              budget: float) -> tuple[list[float], float]:
    """Per group the choice minimizing error + lambda * rate, for the lambda
    giving the lowest total rate with total error within ``budget``."""
    errors, rates, picks = np.zeros(len(_LAMBDAS)), np.zeros(len(_LAMBDAS)), []
    for t in options:
        _, error, rate = (np.array(column) for column in zip(*t))
        pick = np.argmin(error[None, :] + _LAMBDAS[:, None] * rate[None, :], axis=1)
        errors, rates = errors + error[pick], rates + rate[pick]
        picks.append(pick)
    feasible = np.flatnonzero(errors <= budget)
    if not feasible.size:  # even the finest choices miss the budget
        return [t[-1][0] for t in options], float("inf")
    best = feasible[np.argmin(rates[feasible])]
    return [t[p[best]][0] for t, p in zip(options, picks)], float(rates[best])
