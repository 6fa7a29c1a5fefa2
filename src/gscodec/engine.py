"""Encode (fit) and decode (render): argument checking and dispatch to ``_core``.

The compiled core is loaded on first use, so that the pure-Python parts of the
package (`gscodec.format`, `gscodec.limits`) import without it.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Sequence

import numpy as np

from . import limits
from .limits import MAX_ITERATIONS, MAX_PIXELS, MAX_SIDE, MAX_SPLATS, DecodeLimitError
from . import quantize as q
from .metrics import psnr
from .quantize import MODE_QUANT, Precision, parse_precision
from .splats import Splats

__all__ = ["fit", "render", "render_batch", "backends", "MAX_SPLATS", "MAX_ITERATIONS",
           "DEFAULT_ITERATIONS", "CPU_FIT", "PAPER_FIT"]


def _core() -> ModuleType:
    """The compiled core ``gscodec._core`` (imported once, then cached by Python)."""
    return importlib.import_module("._core", __package__)


#: `fit`'s default iteration count, chosen by measured time-to-quality
#: (docs/benchmarks.md, "Encoder v2").
DEFAULT_ITERATIONS = 200

#: The paper's fit (grid init, Adam, optional luminance pruning): what the
#: CUDA backend runs, and the ablation's baseline on the CPU.
PAPER_FIT: dict[str, Any] = dict(
    init="grid", lr_position=0.05, lr_covariance=0.05, lr_color=0.01,
    densify_fraction=0.0, respawn_fraction=0.0, color_solve=False, coarse_fraction=0.0,
)
#: The CPU backend's default (encoder v2): content-adaptive init, half the
#: splats added by error-guided densification, weak splats respawned, exact
#: colour solves, larger steps. Chosen by measured time-to-quality.
CPU_FIT: dict[str, Any] = dict(
    init="content", lr_position=0.15, lr_covariance=0.15, lr_color=0.02,
    densify_fraction=0.5, respawn_fraction=0.05, color_solve=True, coarse_fraction=0.0,
)
# Options only the CPU backend implements, and their values that mean "off".
_CPU_ONLY = {"init": ("grid", "random"), "densify_fraction": (0.0,), "respawn_fraction": (0.0,),
             "color_solve": (False,), "coarse_fraction": (0.0,), "quantize_for": (None,)}


def backends() -> dict[str, Any]:
    """Which backends were compiled in and which are usable now.

    Example: ``{"cpu": True, "cuda_compiled": False, "cuda_available": False,
    "cpu_threads": 2}``.
    """
    return dict(_core().backends())


def _check_sides(width: Any, height: Any, what: str) -> tuple[int, int]:
    """Both sides ints in 1..MAX_SIDE (``what`` names them in messages)."""
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{what}{name} must be an int, got {type(value).__name__}")
        if not 1 <= value <= MAX_SIDE:
            raise ValueError(f"{what}{name} must be in 1..{MAX_SIDE}, got {value}")
    return int(width), int(height)


def _check_size(width: Any, height: Any, what: str) -> tuple[int, int]:
    """A fit input size: sides in range and at most MAX_PIXELS pixels."""
    width, height = _check_sides(width, height, what)
    if width * height > MAX_PIXELS:
        raise ValueError(f"{what}size {width}x{height} exceeds {MAX_PIXELS} pixels")
    return width, height


def _check_decode_limits(params: list[np.ndarray], widths: list[int], heights: list[int]) -> None:
    """Raise `DecodeLimitError` if any render is over MAX_PIXELS or the decode-work
    limits of `gscodec.limits` (read now: they may be changed at run time),
    before anything is allocated for the output."""
    max_pixels = limits.MAX_DECODE_PIXELS
    for i, (w, h) in enumerate(zip(widths, heights)):
        where = f"splats[{i}] at {w}x{h}" if len(params) > 1 else f"{w}x{h}"
        if w * h > MAX_PIXELS:
            raise DecodeLimitError(f"render: {where} is {w * h} pixels, more than gscodec "
                                   f"renders (gscodec.limits.MAX_PIXELS = {MAX_PIXELS}); "
                                   f"render a smaller size")
        if max_pixels is not None and w * h > max_pixels:
            raise DecodeLimitError(f"render: {where} is {w * h} pixels, more than "
                                   f"gscodec.limits.MAX_DECODE_PIXELS ({max_pixels}); raise "
                                   f"that limit to decode it deliberately")
    max_work = limits.MAX_DECODE_WORK
    if max_work is None:
        return
    for i, work in enumerate(_core().decode_work(params, widths, heights)):
        if work > max_work:
            where = f" (splats[{i}])" if len(params) > 1 else ""
            raise DecodeLimitError(
                f"render: {len(params[i])} splats at {widths[i]}x{heights[i]}{where} cover "
                f"{work} splat-tile pairs, more than gscodec.limits.MAX_DECODE_WORK "
                f"({max_work}); raise that limit to decode it deliberately")


def _check_device(device: str) -> None:
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda":
        info = backends()
        if not info["cuda_compiled"]:
            raise RuntimeError("device='cuda': this build of gscodec has no CUDA backend")
        if not info["cuda_available"]:
            reason = info.get("cuda_reason", "")
            raise RuntimeError(
                "device='cuda': no CUDA device is available" + (f" ({reason})" if reason else "")
            )


def _resolve_device(device: str) -> str:
    """Check ``device`` and return the backend to run on: ``"cpu"`` or ``"cuda"``.

    ``"auto"`` is CUDA when this build has it and a device is present, else the CPU.
    """
    _check_device(device)
    if device == "auto":
        return "cuda" if backends()["cuda_available"] else "cpu"
    return device


def render_batch(
    splats: Sequence[Splats],
    sizes: Sequence[tuple[int, int] | None] | None = None,
    *,
    dtype: Any = np.uint8,
    device: str = "auto",
) -> list[np.ndarray]:
    """Render several `Splats` at once (in parallel); see `render`.

    ``sizes`` gives each output's ``(width, height)``; ``None`` (or a ``None``
    entry) means the splats' reference size.
    """
    backend = _resolve_device(device)
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be uint8 or float32, got {dtype!r}") from None
    if dtype not in (np.dtype(np.uint8), np.dtype(np.float32)):
        raise TypeError(f"dtype must be uint8 or float32, got {dtype}")
    splats = list(splats)
    for i, s in enumerate(splats):
        if not isinstance(s, Splats):
            raise TypeError(f"splats[{i}] must be gscodec.Splats, got {type(s).__name__}")
    if sizes is None:
        sizes = [None] * len(splats)
    sizes = list(sizes)
    if len(sizes) != len(splats):
        raise ValueError(f"got {len(sizes)} sizes for {len(splats)} splat sets")
    widths, heights = [], []
    for i, (s, size) in enumerate(zip(splats, sizes)):
        if size is None:
            w, h = s.width, s.height
        elif isinstance(size, (tuple, list)) and len(size) == 2:
            w, h = _check_sides(*size, f"sizes[{i}] ")
        else:
            raise TypeError(f"sizes[{i}] must be a (width, height) pair or None, got {size!r}")
        widths.append(w)
        heights.append(h)
    params = [s.to_array() for s in splats]
    _check_decode_limits(params, widths, heights)
    core = _core()
    run = core._cuda_render_batch if backend == "cuda" else core.render_batch
    return run(params, widths, heights, dtype == np.uint8)


def render(
    splats: Splats,
    width: int | None = None,
    height: int | None = None,
    *,
    dtype: Any = np.uint8,
    device: str = "auto",
) -> np.ndarray:
    """Render (decode) splats to an H x W x 3 image.

    The output size defaults to the splats' reference size; positions are
    normalized, so any size works (give one side to keep the aspect ratio).
    ``dtype=np.uint8`` returns the 8-bit image every decoder produces;
    ``dtype=np.float32`` returns the unclamped sum of the render equation.

    Decoding is bounded: over `gscodec.limits.MAX_DECODE_PIXELS` output
    pixels or `gscodec.limits.MAX_DECODE_WORK` splat-tile pairs it raises
    `gscodec.limits.DecodeLimitError` (a ValueError) before allocating;
    raise those limits to decode such an image deliberately.
    """
    if not isinstance(splats, Splats):
        raise TypeError(f"splats must be gscodec.Splats, got {type(splats).__name__}")
    if width is None and height is None:
        width, height = splats.width, splats.height
    elif height is None:
        _check_sides(width, 1, "render ")
        height = max(1, round(width * splats.height / splats.width))
    elif width is None:
        _check_sides(1, height, "render ")
        width = max(1, round(height * splats.width / splats.height))
    width, height = _check_sides(width, height, "render ")
    return render_batch([splats], [(width, height)], dtype=dtype, device=device)[0]


def _as_image_list(images: Any) -> tuple[list[np.ndarray], bool]:
    """Accept one H x W x 3 image, a B x H x W x 3 batch or a list of images."""
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            return [images], True
        if images.ndim == 4:
            if images.shape[0] == 0:
                raise ValueError("images is an empty batch (0 x H x W x 3)")
            return list(images), False
        raise ValueError(
            f"images must be H x W x 3 or B x H x W x 3, got an array of shape {images.shape}"
        )
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("images is an empty list")
        return list(images), False
    raise TypeError(f"images must be a numpy array or a list of arrays, got {type(images).__name__}")


def _check_image(img: Any, index: int) -> np.ndarray:
    where = f"images[{index}]"
    if not isinstance(img, np.ndarray):
        raise TypeError(f"{where} must be a numpy array, got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise TypeError(f"{where} must have dtype uint8, got {img.dtype}")
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{where} must have shape H x W x 3, got {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"{where} is empty ({img.shape[1]}x{img.shape[0]})")
    _check_size(img.shape[1], img.shape[0], f"{where} ")
    return np.ascontiguousarray(img)


def _check_number(name: str, value: Any, lo: float, hi: float, integer: bool = False) -> None:
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an int" if integer else "a number"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__}")
    if not (lo <= value <= hi):  # also rejects NaN
        raise ValueError(f"{name} must be in {lo}..{hi}, got {value}")


def fit(
    images: Any,
    n_splats: int,
    *,
    iterations: int = DEFAULT_ITERATIONS,
    init: str | None = None,
    seed: int = 0,
    lr_position: float | None = None,
    lr_covariance: float | None = None,
    lr_color: float | None = None,
    lr_final_ratio: float = 0.1,
    l1_color: float = 0.0,
    prune_threshold: float = 0.0,
    prune_every: int = 100,
    densify_fraction: float | None = None,
    densify_rounds: int = 4,
    respawn_fraction: float | None = None,
    color_solve: bool | None = None,
    coarse_fraction: float | None = None,
    quantize_for: str | None = None,
    threads: int = 0,
    device: str = "auto",
    return_stats: bool = False,
) -> Any:
    """Fit (encode) images into 2D Gaussian splats.

    ``images``: one H x W x 3 uint8 array (returns one `Splats`), a B x H x W x 3
    batch, or a list of images of any sizes (returns a list). Every image gets
    ``n_splats`` Gaussians (1..`MAX_SPLATS`, at most one per pixel; exactly
    that many unless pruning removes some), optimized with Adam for
    ``iterations`` steps on the L2 loss of the clamped render.

    Options left at ``None`` take the backend's best measured setting: `CPU_FIT`
    on the CPU, `PAPER_FIT` on CUDA (which implements only the paper's fit; the
    CPU-only options given explicitly with device CUDA raise ValueError).

    - ``init="content"``: centres drawn from the image's gradient energy, sizes
      from the local density of centres (CPU only); ``"grid"``: the paper's
      structured initialization (grid centres, isotropic covariance of the
      cell's inscribed circle, cell-mean colour); ``"random"``: uniform random
      centres and colours (ablation baseline).
    - ``lr_position`` / ``lr_covariance`` / ``lr_color``: Adam step sizes per
      group (positions in grid-cell units, Cholesky diagonal in log units),
      decayed by a cosine schedule to ``lr_final_ratio`` times their value.
    - ``l1_color``: weight of an L1 penalty on colours (drives weak splats to 0).
    - ``prune_threshold``: luminance-aware pruning; every ``prune_every`` steps
      in the middle half of the run, splats whose Rec.601 luma of ``|colour|`` is
      below the threshold are removed. 0 disables it.
    - ``densify_fraction`` (CPU only): this part of ``n_splats`` is held back
      and added in ``densify_rounds`` rounds over the first half of the run,
      at centres drawn from the squared residual; ``respawn_fraction``: each
      round also moves this fraction of the splats, the weakest (colour energy
      x area), there.
    - ``color_solve`` (CPU only): colours by exact least squares (the render
      is linear in them) after init, after each densification round and at
      the end.
    - ``coarse_fraction`` (CPU only, 0 to 0.9): this share of the iterations
      fits the image at half size (2x2 averages, a quarter of the work per
      step), then the splats carry over to the full image; images with a
      side under 256 pixels are always fitted at full size.
    - ``quantize_for`` (CPU only): a quantized precision (``"q7"``, ...; see
      `gscodec.quantize`): the splats are returned as a (version 2) file of
      that precision holds them: the fitted geometry quantized, the colours
      re-solved by least squares for that geometry, then quantized too (see
      `quantized_finish`), so the file reproduces the returned splats and
      ``psnr`` is what a decoder gets.
    - ``seed``: random and content init and densification are functions of the
      seed (grid init uses none). On the CPU the same inputs and seed always
      give bit-identical splats, whatever the batch composition or thread
      count; the CUDA backend sums gradients with atomics, so it agrees with
      the CPU's paper fit to float rounding.
    - ``threads``: CPU threads (0 = all).
    - ``device``: ``"auto"`` (CUDA when a device is present, else the CPU),
      ``"cpu"`` or ``"cuda"`` (a clear RuntimeError when there is none).

    A fit interrupted by Ctrl-C (SIGINT) stops within a step and raises
    KeyboardInterrupt (CPU backend).

    With ``return_stats=True`` returns ``(splats, stats)`` where ``stats`` holds
    per image ``psnr`` (dB, 8-bit render vs input), ``iterations`` and
    ``n_initial`` (splats before pruning).
    """
    image_list, single = _as_image_list(images)
    image_list = [_check_image(img, i) for i, img in enumerate(image_list)]
    _check_number("iterations", iterations, 0, MAX_ITERATIONS, integer=True)
    _check_number("seed", seed, 0, 2**64 - 1, integer=True)
    _check_number("threads", threads, 0, 4096, integer=True)
    _check_number("prune_every", prune_every, 1, MAX_ITERATIONS, integer=True)
    _check_number("densify_rounds", densify_rounds, 1, 1000, integer=True)
    backend = _resolve_device(device)
    given = dict(init=init, lr_position=lr_position, lr_covariance=lr_covariance,
                 lr_color=lr_color, densify_fraction=densify_fraction,
                 respawn_fraction=respawn_fraction, color_solve=color_solve,
                 coarse_fraction=coarse_fraction)
    if backend == "cuda":
        explicit = dict(given, quantize_for=quantize_for)
        for name, off in _CPU_ONLY.items():
            if explicit[name] is not None and explicit[name] not in off:
                raise ValueError(f"{name}={explicit[name]!r} is implemented on the CPU backend "
                                 f"only; use device='cpu'")
    defaults = PAPER_FIT if backend == "cuda" else CPU_FIT
    o = {k: (defaults[k] if v is None else v) for k, v in given.items()}
    for name in ("lr_position", "lr_covariance", "lr_color"):
        _check_number(name, o[name], 0.0, 10.0)
    _check_number("lr_final_ratio", lr_final_ratio, 0.0, 1.0)
    _check_number("l1_color", l1_color, 0.0, 1e3)
    _check_number("prune_threshold", prune_threshold, 0.0, 1e3)
    _check_number("densify_fraction", o["densify_fraction"], 0.0, 0.9)
    _check_number("respawn_fraction", o["respawn_fraction"], 0.0, 0.5)
    _check_number("coarse_fraction", o["coarse_fraction"], 0.0, 0.9)
    if not isinstance(o["color_solve"], (bool, np.bool_)):
        raise TypeError(f"color_solve must be a bool, got {type(o['color_solve']).__name__}")
    if o["init"] not in ("grid", "random", "content"):
        raise ValueError(f"init must be 'grid', 'random' or 'content', got {o['init']!r}")
    finish_precision = _quantized_precision(quantize_for)
    _check_number("n_splats", n_splats, 1, MAX_SPLATS, integer=True)
    for i, img in enumerate(image_list):
        if n_splats > img.shape[0] * img.shape[1]:
            raise ValueError(
                f"n_splats={n_splats} exceeds the pixel count of images[{i}] "
                f"({img.shape[1]}x{img.shape[0]})"
            )

    core = _core()
    opts = core.FitOptions()
    opts.n_splats = int(n_splats)
    opts.iterations = int(iterations)
    opts.init = o["init"]
    opts.seed = int(seed)
    opts.lr_position = float(o["lr_position"])
    opts.lr_covariance = float(o["lr_covariance"])
    opts.lr_color = float(o["lr_color"])
    opts.lr_final_ratio = float(lr_final_ratio)
    opts.l1_color = float(l1_color)
    opts.prune_threshold = float(prune_threshold)
    opts.prune_every = int(prune_every)
    opts.densify_fraction = float(o["densify_fraction"])
    opts.densify_rounds = int(densify_rounds)
    opts.respawn_fraction = float(o["respawn_fraction"])
    opts.color_solve = bool(o["color_solve"])
    opts.coarse_fraction = float(o["coarse_fraction"])
    opts.threads = int(threads)

    run = core._cuda_fit if backend == "cuda" else core.fit
    results = run(image_list, opts)
    splats = [
        Splats.from_array(params, img.shape[1], img.shape[0])
        for (params, _), img in zip(results, image_list)
    ]
    stats = [dict(s) for _, s in results]
    if finish_precision is not None:
        splats = [quantized_finish(s, img, finish_precision, threads=threads)
                  for s, img in zip(splats, image_list)]
        for s, st, img in zip(splats, stats, image_list):
            st["psnr"] = psnr(render(s), img)
    if single:
        return (splats[0], stats[0]) if return_stats else splats[0]
    return (splats, stats) if return_stats else splats


def quantized_finish(splats: Splats, image: np.ndarray, precision: str | Precision,
                     threads: int = 0) -> Splats:
    """The splats a version-2 file of quantized ``precision`` should hold for
    ``image``: the geometry as the file stores it, the colours re-solved by
    least squares (the fit's final colour solve) for that geometry, then
    quantized too. Writing the result at ``precision`` reproduces it."""
    p = _quantized_precision(precision)
    image = np.asarray(image)
    if image.shape != (splats.height, splats.width, 3) or image.dtype != np.uint8:
        raise ValueError(f"image must be a {splats.height} x {splats.width} x 3 uint8 array (the "
                         f"splats' size), got shape {image.shape} dtype {image.dtype}")
    geometry = q.roundtrip(splats, p)
    params = geometry.to_array()
    params[:, 5:] = _core().solve_colors(params, np.ascontiguousarray(image), int(threads))
    return q.roundtrip(Splats.from_array(params, splats.width, splats.height), p)


def _quantized_precision(precision: Any) -> Precision | None:
    """A quantized precision for ``quantize_for`` (None stays None)."""
    if precision is None:
        return None
    try:
        p = precision if isinstance(precision, Precision) else parse_precision(precision)
    except (TypeError, ValueError) as e:
        raise type(e)(f"quantize_for: {e}") from None
    if p.mode != MODE_QUANT:
        raise ValueError(f"quantize_for must be a quantized precision (q6, q7, q8, q10 or "
                         f"'q:...'), got {precision!r}")
    return p
