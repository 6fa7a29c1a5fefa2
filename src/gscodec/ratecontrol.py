"""Rate control: fit an image into a ``.gsi`` file of a target size in bits per pixel.

`encode_to_rate` picks the splat count (and, when none is given, the
precision) so that the file lands within `BPP_TOLERANCE` of the target with
one fit: it fits a little over the count the target buys, trims the weakest
splats to the target, continues the fit of the rest for a few steps and
finishes them (`finish_for`). With no precision given, count and precision
are chosen together: the fit's precision is reallocated per field
(`precision_for`, by `gscodec.quantize.allocate`) before trimming, for a
distortion looser than the preset's plain rounding by about what the finish
recovers. ``gscodec.encode(..., bpp=)`` uses it; ``gscodec.encode`` with a
splat count uses `fixed_count_file`, and
``gscodec.fit(quantize_for=...)`` `quantized_finish`.
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

__all__ = ["encode_to_rate", "finish_for", "fixed_count_file", "precision_for",
           "quantized_finish", "BPP_TOLERANCE", "MAX_FITS"]

#: Allowed relative error of the file size, and the most fits rate control
#: makes (a second only when the first lands more than the tolerance under).
BPP_TOLERANCE = 0.10
MAX_FITS = 2
# Fits aim this much over the count the target buys: the bits-per-splat
# estimate is within about 4%, and trimming is cheaper than a refit.
_AIM = 1.05
# A trimmed fit continues (warm start, on the CPU) for this part of its
# iterations at these step sizes, so the kept splats cover what the trimmed
# ones did: +0.2 dB on Kodak-224 (docs/benchmarks.md, "Rate control").
_HEAL_SHARE = 0.2
_HEAL_STEPS = dict(lr_position=0.03, lr_covariance=0.03, lr_color=0.004)
# When rate control picks the precision it allocates it per field for a
# looser distortion than the preset's plain rounding: the finish recovers
# most of that, and the bits spared buy splats. The preset's distortion is
# loosened by this many dB, but the quantization error stays this many dB
# under the fit's own error (images fitted closely need their precision),
# and the fit aims further over the count, since a splat then costs fewer
# bits. Measured on Kodak: +0.06-0.19 dB at equal rate (docs/benchmarks.md,
# "Rate control counts the finish").
_FINISH_MARGIN_DB = 3.5
_FIT_MARGIN_DB = 2.0
_REALLOCATED_AIM = 1.15
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


def precision_for(splats: Splats, pixels: np.ndarray, preset: str = "q7") -> str:
    """The per-field precision (an explicit ``q:`` spec) of fewest bits for
    ``splats`` fitted to ``pixels`` at the quality of ``preset``'s file, the
    encoder's finish counted: `gscodec.quantize.allocate` for ``preset``'s
    distortion (its plain-rounded render against the unquantized one)
    loosened by `_FINISH_MARGIN_DB`, which the finish recovers, but at most
    the fit's own error less `_FIT_MARGIN_DB`. Rate control's choice when no
    precision is given (and, unless the preset's file is smaller, a
    fixed-count encode's: `fixed_count_file`)."""
    rendered = engine.render(splats)
    quantized = engine.render(q.roundtrip(splats, preset))
    return q.allocate(splats, max(psnr(quantized, rendered) - _FINISH_MARGIN_DB,
                                  psnr(rendered, pixels) + _FIT_MARGIN_DB))


def fixed_count_file(splats: Splats, pixels: np.ndarray, precision: str | None = None,
                     preset: str = "q7", threads: int = 0) -> tuple[Splats, str]:
    """The splats a file of these (a fixed count) holds and its precision:
    ``precision``, or with None `precision_for`'s grids for ``preset``'s
    quality, or ``preset``'s when its file is smaller (a fit closer than the
    preset's rounding asks for finer grids than the preset's); the splats
    finished for it (`finish_for`, ``threads`` CPU threads). `gscodec.encode`
    with a splat count and ``encode-dataset`` use it."""
    if precision is None:
        precision = min((precision_for(splats, pixels, preset), preset),
                        key=lambda p: len(fmt.dumps(splats, precision=p)))
    return finish_for(splats, pixels, precision, threads=threads), precision


def _trim(splats: Splats, precision: str, max_bits: float) -> Splats:
    """The splats without the weakest (least colour energy x area) that a
    file of ``precision`` holds in ``max_bits``: the count kept fits and one
    more does not (one splat is kept whatever its size).

    A file's size is nearly linear in its splat count, so each count tried
    (a real `format.dumps`) is the linear estimate from the one before,
    pushed a step past it that doubles while the tries land on the same
    side: about five dumps where a binary search needs a dozen or more."""
    arr = splats.to_array()
    energy = (arr[:, 5:8].astype(np.float64) ** 2).sum(1) * arr[:, 2] * arr[:, 4]
    order = np.argsort(-energy, kind="stable")

    def kept(count: int) -> Splats:
        return Splats.from_array(arr[np.sort(order[:count])], splats.width, splats.height)

    data = fmt.dumps(splats, precision=precision)
    if len(data) * 8 <= max_bits:
        return splats
    header = _header_bits(data)
    per_splat = max((len(data) * 8 - header) / len(arr), 1.0)
    fits, over = 1, len(arr)  # the largest count known to fit, the smallest known not to
    count, reach, fitted = round((max_bits - header) / per_splat), 1, None
    while over - fits > 1:
        count = min(max(count, fits + 1), over - 1)
        size = len(fmt.dumps(kept(count), precision=precision)) * 8
        reach = 2 * reach if (size <= max_bits) == fitted else 1
        fitted = size <= max_bits
        estimate = count + math.floor((max_bits - size) / per_splat)
        if fitted:
            fits, count = count, max(estimate, count + reach)
        else:
            over, count = count, min(estimate, count - reach)
    return kept(fits)


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


def quantized_finish(splats: Splats, image: np.ndarray, precision: str | q.Precision,
                     threads: int = 0, rounds: int = 1, sweeps: int = 2) -> Splats:
    """The splats a file of quantized ``precision`` should hold for
    ``image``, in three steps, each judged by the render error:

    1. the geometry on the file's grids: from plain rounding, each splat in
       turn moves a field one grid step where that lowers the error most,
       judged with the splats' colours, for at most ``sweeps`` sweeps
       (``_core.round_geometry``);
    2. the colours re-solved by least squares for that geometry (the fit's
       final colour solve); steps 1 and 2 repeat for ``rounds`` rounds, each
       search continuing on the grid with the colours of the last solve;
    3. the colours rounded to the file's colour grid by integer coordinate
       descent (``_core.round_colors``: overlapping splats absorb each
       other's rounding).

    The defaults are rate control's fast finish; `engine.fit` with
    ``quantize_for`` searches longer (`engine.FINISH_ROUNDS`,
    `engine.FINISH_SWEEPS`). Writing the result at ``precision`` reproduces it."""
    p = engine._quantized_precision(precision)
    image = np.asarray(image)
    if image.shape != (splats.height, splats.width, 3) or image.dtype != np.uint8:
        raise ValueError(f"image must be a {splats.height} x {splats.width} x 3 uint8 array (the "
                         f"splats' size), got shape {image.shape} dtype {image.dtype}")
    for name, value in (("rounds", rounds), ("sweeps", sweeps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    core, image = engine._core(), np.ascontiguousarray(image)
    grids = q.quantize(splats, p).grids
    steps = grids.field_step(0), grids.field_step(2), grids.field_step(3)
    params = splats.to_array()
    for _ in range(rounds):
        params = core.round_geometry(params, image, *steps, int(sweeps), int(threads))
        params[:, 5:] = core.solve_colors(params, image, int(threads))
    step = q.quantize(Splats.from_array(params, splats.width, splats.height), p).grids.field_step(5)
    params[:, 5:] = core.round_colors(params, image, step, int(threads))
    return q.roundtrip(Splats.from_array(params, splats.width, splats.height), p)


def finish_for(splats: Splats, pixels: np.ndarray, precision: str,
               iterations: int = engine.DEFAULT_QAT_ITERATIONS, threads: int = 0) -> Splats:
    """The splats to write at ``precision``: for a quantized one, ``iterations``
    quantization-aware steps warm-started from ``splats``, then the colours
    re-solved for the quantized geometry and quantized (`engine.fit` with
    ``init=splats, iterations=0, quantize_for=precision``, whose finish
    searches longer; on the CPU whatever device fitted them); with none, the
    fast `quantized_finish`. ``threads``: CPU threads (0 = all)."""
    if q.parse_precision(precision).mode != q.MODE_QUANT:
        return splats
    if not iterations:  # no steps: the finish alone, without a fit call around it
        return quantized_finish(splats, pixels, precision, threads=threads)
    return engine.fit(pixels, len(splats), init=splats, iterations=0, quantize_for=precision,
                      qat_iterations=iterations, device="cpu", threads=threads)


def encode_to_rate(pixels: np.ndarray, bpp: float, *, precision: str | None = None,
                   iterations: int = engine.DEFAULT_ITERATIONS, device: str = "auto") -> bytes:
    """Fit ``pixels`` (H x W x 3 uint8) into ``.gsi`` bytes of about ``bpp`` bits per pixel.

    Lands within `BPP_TOLERANCE` (±10%) of the target when the image allows
    it. ``precision`` None picks ``"q7"``, or a finer one when the target
    needs more splats than the image has pixels. Raises `ValueError` naming
    ``bpp`` when it is not a positive finite number or lies outside what a
    file of this image can reach. With ``precision`` None the result may use
    an explicit ``"q:..."`` precision (the preset's distortion, fewer bits).

    One fit, a little over the splat count the target buys; the file is then
    trimmed of its weakest splats to the target, the rest refined by a short
    warm-started fit and finished (`finish_for`; both on the CPU). A second
    fit happens only when the first lands more than the tolerance under the
    target.
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
    # Aim high: a file over the target is trimmed, one under it needs a refit.
    aim = _AIM * (_REALLOCATED_AIM if reallocate else 1.0)
    n = min(max_n, _splats_for(target * aim, precision, width, height))
    for attempt in range(MAX_FITS):
        splats = engine.fit(pixels, n, iterations=iterations, device=device)
        if reallocate:
            precision = precision_for(splats, pixels, precision)
            reallocate = False
        kept = _trim(splats, precision, target)
        if len(kept) < len(splats):
            kept = engine.fit(pixels, len(kept), init=kept, device="cpu",
                              iterations=max(1, round(iterations * _HEAL_SHARE)), **_HEAL_STEPS)
        # The finish's colours may cost a few bits more: trim again (no-op if not).
        kept = _trim(finish_for(kept, pixels, precision), precision, target)
        data = fmt.dumps(kept, precision=precision)
        bits = len(data) * 8
        if bits >= target * (1 - BPP_TOLERANCE) or n >= max_n or attempt + 1 == MAX_FITS:
            return data
        # bits per splat measured on this file, corrected for the new count
        fixed = _header_bits(data)
        per_splat = (bits - fixed) / max(len(kept), 1)
        n = min(max_n, max(n + 1, round((target * _AIM - fixed) / per_splat)))
    raise AssertionError("unreachable: the last attempt returns")
