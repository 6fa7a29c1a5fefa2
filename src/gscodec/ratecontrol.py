"""Rate control: fit an image into a ``.gsi`` file of a target size in bits per pixel.

`encode_to_rate` picks the splat count (and, when none is given, the
precision) so that the file lands within `BPP_TOLERANCE` of the target,
fitting at most `MAX_FITS` times; a file over the target is trimmed of its
weakest splats instead of being refitted. With no precision given, count and
precision are chosen together: the first fit's precision is reallocated per
field at the preset's distortion (`gscodec.quantize.allocate`), and the bits
this saves buy more splats in the next fit. ``gscodec.encode(..., bpp=)`` uses it.
"""

from __future__ import annotations

import io
import math

import numpy as np

from . import engine
from . import format as fmt
from . import quantize as q
from .limits import MAX_SPLATS
from .metrics import psnr
from .splats import Splats

__all__ = ["encode_to_rate", "BPP_TOLERANCE", "MAX_FITS"]

#: Allowed relative error of the file size, and the most fits rate control makes.
BPP_TOLERANCE = 0.10
MAX_FITS = 3
_AIM = 1.02  # fits aim this much over the target (trimming is cheaper than a refit)
# A fit whose precision was just reallocated and lands more than this under
# the target is refitted with the splats the spared bits buy.
_SPARE = 0.02
# Precisions rate control moves up to when the target needs more splats than
# the image has pixels (more bits per splat is then the only way up).
_FINER = ("q7", "q8", "q10", "fp16", "fp32")
# No splat takes more than its 8 raw float32 fields (zstd adds well under 1%
# to incompressible data): the ceiling of any file's size.
_MAX_BITS_PER_SPLAT = 8 * 32 * 1.01


def _container_bits(precision: str, width: int, height: int) -> int:
    """File bits besides the payload (header with the quantizer's descriptor,
    CRC) of a one-splat file of this size; a fitted file's own are measured."""
    one = Splats.from_array(np.array([[0.5, 0.5, 0.1, 0.0, 0.1, 0.5, 0.5, 0.5]], np.float32),
                            width, height)
    return _header_bits(fmt.dumps(one, precision=precision))


def _header_bits(data: bytes) -> int:
    """Bits of a file that are not payload: its header and CRC."""
    return 8 * (fmt.read_header(io.BytesIO(data)).data_offset + 4)


def _splats_for(target_bits: float, precision: str, width: int, height: int) -> int:
    fixed = _container_bits(precision, width, height)
    n = max(1.0, (target_bits - fixed) / 60.0)
    for _ in range(4):  # bits per splat depends (weakly) on n: iterate
        per_splat = q.estimate_bits_per_splat(precision, round(n), width, height)
        n = max(1.0, (target_bits - fixed) / per_splat)
    return round(n)


def _reallocate(splats: Splats, preset: str) -> str:
    """The per-field precision of fewest bits at ``preset``'s distortion of
    these splats (their render against the unquantized one)."""
    quantized = fmt.loads(fmt.dumps(splats, precision=preset))
    return q.allocate(splats, psnr(engine.render(quantized), engine.render(splats)))


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


def _check_target(bpp: float, precision: str | None, width: int, height: int,
                  max_n: int) -> None:
    """Refuse targets no file of this image can come near, before any float overflows."""
    finest = precision or _FINER[-1]
    ceiling = (_container_bits(finest, width, height) + max_n * _MAX_BITS_PER_SPLAT) / (width * height)
    if bpp > ceiling:
        raise ValueError(f"bpp={bpp:g} is too high for a {width}x{height} image: the largest "
                         f"{finest} file ({max_n} splats) is under {ceiling:.4g} bpp")
    one = Splats.from_array(np.array([[0.5, 0.5, 0.1, 0.0, 0.1, 0.5, 0.5, 0.5]], np.float32),
                            width, height)
    min_bits = 8 * len(fmt.dumps(one, precision=precision or _FINER[0]))
    if bpp * width * height < min_bits:
        raise ValueError(f"bpp={bpp:g} is too low for a {width}x{height} image: one "
                         f"{precision or _FINER[0]} splat needs about "
                         f"{min_bits / (width * height):.3g} bpp")


def finish_for(splats: Splats, pixels: np.ndarray, precision: str) -> Splats:
    """The splats to write at ``precision``: for a quantized one, with the
    colours re-solved for the quantized geometry (`engine.quantized_finish`,
    on the CPU whatever device fitted them)."""
    if q.parse_precision(precision).mode != q.MODE_QUANT:
        return splats
    return engine.quantized_finish(splats, pixels, precision)


def encode_to_rate(pixels: np.ndarray, bpp: float, *, precision: str | None = None,
                   iterations: int = engine.DEFAULT_ITERATIONS, device: str = "auto") -> bytes:
    """Fit ``pixels`` (H x W x 3 uint8) into ``.gsi`` bytes of about ``bpp`` bits per pixel.

    Lands within `BPP_TOLERANCE` (±10%) of the target when the image allows
    it. ``precision`` None picks ``"q7"``, or a finer one when the target
    needs more splats than the image has pixels. Raises `ValueError` naming
    ``bpp`` when it is not a positive finite number or lies outside what a
    file of this image can reach. With ``precision`` None the result may use
    an explicit ``"q:..."`` precision (the preset's distortion, fewer bits).
    """
    if isinstance(bpp, bool) or not isinstance(bpp, (int, float)) or not bpp > 0 \
            or not math.isfinite(bpp):
        raise ValueError(f"bpp must be a positive number, got {bpp!r}")
    height, width = pixels.shape[:2]
    max_n = min(width * height, MAX_SPLATS)
    _check_target(bpp, precision, width, height, max_n)
    target = bpp * width * height
    reallocate = precision is None
    if precision is None:
        # More splats than pixels cannot be fitted: spend bits on precision.
        precision = next((p for p in _FINER if _splats_for(target, p, width, height) <= max_n),
                         _FINER[-1])
        reallocate = q.parse_precision(precision).mode == q.MODE_QUANT
    # Aim a little high: a file over the target can be trimmed without a refit.
    n = min(max_n, _splats_for(target * _AIM, precision, width, height))
    best: tuple[float, bytes, Splats] | None = None
    for attempt in range(MAX_FITS):
        splats = engine.fit(pixels, n, iterations=iterations, device=device)
        spend_spare = reallocate and attempt + 1 < MAX_FITS and n < max_n
        if reallocate:
            precision = _reallocate(splats, precision)
            reallocate = False
        splats = finish_for(splats, pixels, precision)
        data = fmt.dumps(splats, precision=precision)
        fixed = _header_bits(data)
        bits = len(data) * 8
        error = bits / target - 1
        if abs(error) <= BPP_TOLERANCE and not (spend_spare and error < -_SPARE):
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
