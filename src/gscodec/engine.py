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
           "DEFAULT_ITERATIONS", "DEFAULT_QAT_ITERATIONS", "QAT_LR_RATIO", "CPU_FIT", "PAPER_FIT"]


def _core() -> ModuleType:
    """The compiled core ``gscodec._core`` (imported once, then cached by Python)."""
    return importlib.import_module("._core", __package__)


#: `fit`'s default iteration count, chosen by measured time-to-quality
#: (docs/benchmarks.md, "Encoder v2"; 200 until the finish's geometry rounding,
#: 180 until rate control's finish margin: each buys more per second than the
#: last 20 iterations did).
DEFAULT_ITERATIONS = 160

#: Quantization-aware steps (straight-through on the file's geometry grids)
#: a ``quantize_for`` fit adds after its iterations. Off: measured, they buy
#: about 0.02 dB at q7 and are erratic on small fits (docs/benchmarks.md,
#: "Quantized finish on format v2"); the option stays for the ablation.
DEFAULT_QAT_ITERATIONS = 0
#: The search of a ``quantize_for`` fit's finish
#: (`gscodec.ratecontrol.quantized_finish`): rounds of geometry rounding and
#: colour solve, sweeps per round. Kodak-224 at 400 splats, q7's loss against
#: the unquantized fit: 0.080 dB at rate control's 1 x 2, 0.050 at 2 x 8,
#: 0.043 here, at 4x 1 x 2's time (docs/benchmarks.md, "A longer finish search").
FINISH_ROUNDS, FINISH_SWEEPS = 3, 8
#: The quantization-aware steps' Adam step sizes, relative to the fit's: a
#: restarted Adam moves every parameter by about its step size, and larger
#: steps than this lost more than the snapping saved (measured).
QAT_LR_RATIO = 0.0003

#: The paper's fit (grid init, Adam, optional luminance pruning): the
#: ablation's baseline, on both backends.
PAPER_FIT: dict[str, Any] = dict(
    init="grid", lr_position=0.05, lr_covariance=0.05, lr_color=0.01,
    densify_fraction=0.0, respawn_fraction=0.0, color_solve=False, coarse_fraction=0.0,
)
#: The default of both backends (encoder v2): content-adaptive init, 90% of
#: the splats added by error-guided densification in 8 rounds, weak splats
#: respawned, exact colour solves, larger steps. Chosen by measured
#: time-to-quality (docs/benchmarks.md, "Densify most of the budget").
CPU_FIT: dict[str, Any] = dict(
    init="content", lr_position=0.15, lr_covariance=0.15, lr_color=0.02,
    densify_fraction=0.9, densify_rounds=8, respawn_fraction=0.1, color_solve=True,
    coarse_fraction=0.0,
)


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
    init: str | Splats | Sequence[Splats] | None = None,
    seed: int = 0,
    lr_position: float | None = None,
    lr_covariance: float | None = None,
    lr_color: float | None = None,
    lr_final_ratio: float = 0.1,
    l1_color: float = 0.0,
    prune_threshold: float = 0.0,
    prune_every: int = 100,
    densify_fraction: float | None = None,
    densify_rounds: int | None = None,
    respawn_fraction: float | None = None,
    color_solve: bool | None = None,
    coarse_fraction: float | None = None,
    quantize_for: str | None = None,
    qat_iterations: int | None = None,
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

    Options left at ``None`` take the best measured setting, `CPU_FIT` (encoder
    v2), on both backends; `PAPER_FIT` is the paper's fit. CUDA runs the same
    algorithm: the steps on the device, and what happens between phases (the
    content init, each densification round, each colour solve) on the host
    with the CPU fit's own code.

    - ``init="content"``: centres drawn from the image's gradient energy, sizes
      from the local density of centres; ``"grid"``: the paper's
      structured initialization (grid centres, isotropic covariance of the
      cell's inscribed circle, cell-mean colour); ``"random"``: uniform random
      centres and colours (ablation baseline). A `Splats` (or, for several
      images, a list with one per image) warm-starts the fit from those
      splats (CPU only): each must hold ``n_splats`` splats of its image's
      size; nothing is densified or respawned, and 0 iterations return them.
    - ``lr_position`` / ``lr_covariance`` / ``lr_color``: Adam step sizes per
      group (positions in grid-cell units, Cholesky diagonal in log units),
      decayed by a cosine schedule to ``lr_final_ratio`` times their value.
    - ``l1_color``: weight of an L1 penalty on colours (drives weak splats to 0).
    - ``prune_threshold``: luminance-aware pruning; every ``prune_every`` steps
      in the middle half of the run, splats whose Rec.601 luma of ``|colour|`` is
      below the threshold are removed. 0 disables it.
    - ``densify_fraction``: this part of ``n_splats`` is held back
      and added in ``densify_rounds`` rounds over the first half of the run,
      at centres drawn from the squared residual; ``respawn_fraction``: each
      round also moves this fraction of the splats, the weakest (colour energy
      x area), there.
    - ``color_solve``: colours by exact least squares (the render
      is linear in them) after init, after each densification round and at
      the end.
    - ``coarse_fraction`` (CPU only, 0 to 0.9): this share of the iterations
      fits the image at half size (2x2 averages, a quarter of the work per
      step), then the splats carry over to the full image; images with a
      side under 256 pixels are always fitted at full size.
    - ``quantize_for``: a quantized precision (``"q7"``, ...; see
      `gscodec.quantize`): the splats are returned as a (version 3) file of
      that precision holds them: the fitted geometry put on the file's grids
      for the least render error, the colours re-solved by least squares for
      that geometry, then rounded to the file's colour grid likewise (see
      `gscodec.ratecontrol.quantized_finish`, searching `FINISH_ROUNDS` x
      `FINISH_SWEEPS`), so the file reproduces the
      returned splats and ``psnr`` is what a decoder gets. Before that,
      ``qat_iterations`` more steps (default `DEFAULT_QAT_ITERATIONS`) are
      quantization-aware: they render the geometry snapped to the file's
      grids (positions, log sizes, shear; straight-through gradients update
      the unsnapped values), Adam restarted at `QAT_LR_RATIO` times the step
      sizes.
    - ``seed``: random and content init and densification are functions of the
      seed (grid init uses none). On the CPU the same inputs and seed always
      give bit-identical splats, whatever the batch composition or thread
      count; the CUDA backend sums gradients with atomics, so it agrees with
      the CPU fit to float rounding.
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
    backend = _resolve_device(device)
    warm = None if init is None or isinstance(init, str) else _warm_start(init, image_list, single)
    if warm is not None and backend == "cuda":
        raise ValueError("init=Splats (a warm start) is implemented on the CPU backend only; "
                         "use device='cpu'")
    if coarse_fraction and backend == "cuda":
        raise ValueError(f"coarse_fraction={coarse_fraction!r} is implemented on the CPU backend "
                         "only; use device='cpu'")
    given = dict(init=None if warm is not None else init, lr_position=lr_position,
                 lr_covariance=lr_covariance, lr_color=lr_color,
                 densify_fraction=densify_fraction, densify_rounds=densify_rounds,
                 respawn_fraction=respawn_fraction,
                 color_solve=color_solve, coarse_fraction=coarse_fraction)
    o = {k: (CPU_FIT[k] if v is None else v) for k, v in given.items()}
    for name in ("lr_position", "lr_covariance", "lr_color"):
        _check_number(name, o[name], 0.0, 10.0)
    _check_number("lr_final_ratio", lr_final_ratio, 0.0, 1.0)
    _check_number("l1_color", l1_color, 0.0, 1e3)
    _check_number("prune_threshold", prune_threshold, 0.0, 1e3)
    _check_number("densify_fraction", o["densify_fraction"], 0.0, 0.9)
    _check_number("densify_rounds", o["densify_rounds"], 1, 1000, integer=True)
    _check_number("respawn_fraction", o["respawn_fraction"], 0.0, 0.5)
    _check_number("coarse_fraction", o["coarse_fraction"], 0.0, 0.9)
    if not isinstance(o["color_solve"], (bool, np.bool_)):
        raise TypeError(f"color_solve must be a bool, got {type(o['color_solve']).__name__}")
    if o["init"] not in ("grid", "random", "content"):
        raise ValueError(f"init must be 'grid', 'random', 'content' or gscodec.Splats, "
                         f"got {o['init']!r}")
    finish_precision = _quantized_precision(quantize_for)
    if qat_iterations is not None and finish_precision is None:
        raise ValueError("qat_iterations needs quantize_for (the precision whose grids the "
                         "last iterations see)")
    if qat_iterations is None:
        qat_iterations = 0 if finish_precision is None else DEFAULT_QAT_ITERATIONS
    _check_number("qat_iterations", qat_iterations, 0, MAX_ITERATIONS, integer=True)
    _check_number("n_splats", n_splats, 1, MAX_SPLATS, integer=True)
    for i, img in enumerate(image_list):
        if n_splats > img.shape[0] * img.shape[1]:
            raise ValueError(
                f"n_splats={n_splats} exceeds the pixel count of images[{i}] "
                f"({img.shape[1]}x{img.shape[0]})"
            )
        if warm is not None and len(warm[i]) != n_splats:
            where = "init" if single else f"init[{i}]"
            raise ValueError(f"{where} holds {len(warm[i])} splats, n_splats is {n_splats}: a "
                             f"warm start keeps the count")

    core = _core()
    values = dict(
        n_splats=int(n_splats), iterations=int(iterations), init=o["init"],
        seed=int(seed), lr_position=float(o["lr_position"]),
        lr_covariance=float(o["lr_covariance"]), lr_color=float(o["lr_color"]),
        lr_final_ratio=float(lr_final_ratio), l1_color=float(l1_color),
        prune_threshold=float(prune_threshold), prune_every=int(prune_every),
        densify_fraction=float(o["densify_fraction"]), densify_rounds=int(o["densify_rounds"]),
        respawn_fraction=float(o["respawn_fraction"]), color_solve=bool(o["color_solve"]),
        coarse_fraction=float(o["coarse_fraction"]),
        threads=int(threads),
        init_params=[] if warm is None else [s.to_array().ravel() for s in warm],
    )
    run = core._cuda_fit if backend == "cuda" else core.fit
    results = run(image_list, _fit_options(core, values))
    splats = [
        Splats.from_array(params, img.shape[1], img.shape[0])
        for (params, _), img in zip(results, image_list)
    ]
    stats = [dict(s) for _, s in results]
    if finish_precision is not None:
        from .ratecontrol import quantized_finish  # ratecontrol imports this module

        if qat_iterations:
            splats = [_straight_through(core, values, s, img, finish_precision, qat_iterations)
                      for s, img in zip(splats, image_list)]
        splats = [quantized_finish(s, img, finish_precision, threads=threads,
                                   rounds=FINISH_ROUNDS, sweeps=FINISH_SWEEPS)
                  for s, img in zip(splats, image_list)]
        for s, st, img in zip(splats, stats, image_list):
            st["psnr"] = psnr(render(s), img)
            st["iterations"] = iterations + qat_iterations
    if single:
        return (splats[0], stats[0]) if return_stats else splats[0]
    return (splats, stats) if return_stats else splats


def _fit_options(core: ModuleType, values: dict[str, Any]) -> Any:
    """A ``_core.FitOptions`` holding ``values`` (checked by the caller)."""
    opts = core.FitOptions()
    for name, value in values.items():
        setattr(opts, name, value)
    return opts


def _warm_start(init: Any, images: list[np.ndarray], single: bool) -> list[Splats]:
    """The `Splats` of a warm start, one per image, each of its image's size."""
    sets = [init] if isinstance(init, Splats) else init
    if not isinstance(sets, (list, tuple)):
        raise TypeError(f"init must be 'grid', 'random', 'content', gscodec.Splats or a list of "
                        f"them, got {type(init).__name__}")
    if len(sets) != len(images):
        raise ValueError(f"init holds {len(sets)} splat sets for {len(images)} images")
    for i, (s, img) in enumerate(zip(sets, images)):
        where = "init" if single else f"init[{i}]"
        if not isinstance(s, Splats):
            raise TypeError(f"{where} must be gscodec.Splats, got {type(s).__name__}")
        if (s.width, s.height) != (img.shape[1], img.shape[0]):
            raise ValueError(f"{where} is for a {s.width}x{s.height} image, the image is "
                             f"{img.shape[1]}x{img.shape[0]}")
    return list(sets)


def _straight_through(core: ModuleType, values: dict[str, Any], splats: Splats,
                      image: np.ndarray, precision: Precision, iterations: int) -> Splats:
    """``iterations`` more steps from ``splats`` that render the geometry on the
    grids a file of ``precision`` would use for them (Adam restarted
    at `QAT_LR_RATIO` of the fit's step sizes); returns the snapped geometry."""
    grids = q.quantize(splats, precision).grids
    ratio = QAT_LR_RATIO
    phase = dict(values, n_splats=len(splats), iterations=iterations, qat_iterations=iterations,
                 qat_steps=[grids.field_step(i) for i in (0, 2, 3)],  # x, l11, l21 groups
                 init_params=[splats.to_array().ravel()], prune_threshold=0.0,
                 lr_final_ratio=1.0, coarse_fraction=0.0,
                 lr_position=values["lr_position"] * ratio,
                 lr_covariance=values["lr_covariance"] * ratio,
                 lr_color=values["lr_color"] * ratio)
    (params, _), = core.fit([image], _fit_options(core, phase))
    return Splats.from_array(params, splats.width, splats.height)


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
