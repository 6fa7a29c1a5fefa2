"""Encoder v2 (CPU): convergence, ablation and fixed-count encodes, one run.

- ``convergence``: Kodak-224, 400 splats: mean PSNR after each iteration count
  for the paper's fit (`gscodec.engine.PAPER_FIT`) and the v2 default, with CPU
  seconds per image (one call per setting: images spread over the cores).
- ``ablation``: Kodak-224, 400 splats, at one iteration count: the paper's fit,
  then v2's steps added one at a time; fit PSNR and the PSNR of the q7 file.
- ``encode``: full Kodak 768x512 at the splat count that today's rate control
  picks for a target bpp at q7: the paper's fit at 2000 iterations (today's
  default, one fit; rate control may refit up to 3 times) against the v2
  default; q7 file PSNR, bpp and seconds, with JPEG and WebP (Pillow) at the
  same bpp.
- ``finish``: Kodak-224, 400 splats, the v2 default fit: PSNR of the fit, of
  its file at each precision (``q.roundtrip``, format v2), of the finish
  without its geometry rounding (plain geometry, colours re-solved, then
  rounded one by one or grid-rounded) and of the file of its quantized finish
  (`gscodec.ratecontrol.quantized_finish`, what ``fit(quantize_for=...)`` and
  `gscodec.encode` return), with the finish's seconds per image. ``--groups``: the q7 loss per field group; ``--qat K``:
  the finish after K straight-through steps (``fit(qat_iterations=K)``);
  ``--searches RxS ...``: the finish with R rounds of S sweeps each (rate
  control's is 1x2, ``fit(quantize_for=)``'s `engine.FINISH_ROUNDS` x
  `engine.FINISH_SWEEPS`): loss against the fit and seconds per image.

- ``speed``: full Kodak 768x512 at ``--splats`` (default 4200, about what
  rate control picks for 0.5 bpp at q7), the v2 default against the same fit
  coarse to fine (``coarse_fraction=0.5``): fit PSNR, wall and CPU seconds per
  image, at each ``--iterations`` count, settings alternating per image so
  that machine load hits both alike.
- ``densify``: the densification's settings (before: half the budget in 4
  rounds, 5% respawn; today's default; ``--sweep`` entries) on Kodak-224 at
  each ``--iterations`` count, CIFAR-10 test (``--cifar`` images, 16 and 64
  splats) and full Kodak through rate control at each ``--bpp``.
- ``rounding``: full Kodak through rate control (`encode_to_rate`) at each
  ``--iterations`` and ``--bpp``, with the finish's geometry rounding and
  without it (the finish before it): PSNR, bpp and seconds per image -- what
  the rounding buys per second against more iterations.
- ``iterations``: more iterations must never hurt: v2 fit PSNR and the PSNR
  of its q7 file after each ``--iterations`` count on the sample image
  (examples/kodim23-224.png) and the first ``--images`` Kodak-224 images at
  ``--splats``.

    nice -n 10 python benchmarks/encoder_v2.py convergence --iterations 50 100 200 500
    nice -n 10 python benchmarks/encoder_v2.py ablation --iterations 100
    nice -n 10 python benchmarks/encoder_v2.py encode --images 2 --bpp 0.5
    nice -n 10 python benchmarks/encoder_v2.py finish --images 8 --iterations 200 --groups --qat 20
    python benchmarks/encoder_v2.py finish --images 8 --iterations 200 --searches 1x2 1x8 2x8 3x8
    nice -n 10 python benchmarks/encoder_v2.py speed --images 4 --iterations 200
    nice -n 10 python benchmarks/encoder_v2.py densify --images 4 --bpp 0.25 0.5 1.0 \
        --iterations 50 100 200 500 --sweep densify_fraction=0.7 ...
    nice -n 10 python benchmarks/encoder_v2.py rounding --images 4 --bpp 0.5 --iterations 160 180 200
    nice -n 10 python benchmarks/encoder_v2.py iterations --images 2 --splats 1600 \
        --iterations 100 200 500 1000 2000
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

import gscodec
from gscodec import format as fmt
from gscodec import ratecontrol
from gscodec import _core
from gscodec import quantize as q
from common import header, kodak224, kodak_paths
from fit_cache import cifar_paths
from gscodec.metrics import psnr
from rate_distortion import pillow_codec

PAPER = gscodec.engine.PAPER_FIT
ABLATION = [
    ("paper (grid init, Adam)", PAPER),
    ("+ v2 step sizes", dict(PAPER, lr_position=0.15, lr_covariance=0.15, lr_color=0.02)),
    ("+ content init", dict(color_solve=False, densify_fraction=0.0, respawn_fraction=0.0)),
    ("+ densification", dict(color_solve=False, respawn_fraction=0.0)),
    ("+ respawn", dict(color_solve=False)),
    ("+ colour solve (v2 default)", {}),
    ("v2, grid init", dict(init="grid")),
    ("v2, no densification", dict(densify_fraction=0.0, respawn_fraction=0.0)),
    ("v2 + quantized finish (q7)", dict(quantize_for="q7")),
]


def timed_fit(images, n, **kw):
    t0 = time.perf_counter()
    splats, stats = gscodec.fit(images, n, return_stats=True, device="cpu", **kw)
    return splats, stats, (time.perf_counter() - t0) / len(images)


def convergence(args, images) -> None:
    print("| fit | " + " | ".join(f"{i} it: PSNR / s" for i in args.iterations) + " |")
    print("|---|" + "---:|" * len(args.iterations))
    for name, kw in (("paper", PAPER), ("v2 (default)", {})):
        cells = []
        for iters in args.iterations:
            _, stats, sec = timed_fit(images, args.splats, iterations=iters, **kw)
            cells.append(f"{np.mean([s['psnr'] for s in stats]):.2f} / {sec:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def ablation(args, images) -> None:
    print(f"{args.iterations[0]} iterations, {args.splats} splats\n")
    print("| setting | fit PSNR | q7 file PSNR | s / image |")
    print("|---|---:|---:|---:|")
    for name, kw in ABLATION:
        splats, stats, sec = timed_fit(images, args.splats, iterations=args.iterations[0], **kw)
        q7 = [psnr(gscodec.render(q.roundtrip(s, "q7")), im) for s, im in zip(splats, images)]
        print(f"| {name} | {np.mean([s['psnr'] for s in stats]):.2f} | {np.mean(q7):.2f} "
              f"| {sec:.2f} |", flush=True)


def _plain_geometry_finish(splats, image, precision, round_colors):
    """The finish without its geometry rounding: plain geometry, the colours
    re-solved for it, then rounded one by one or (``round_colors``) by
    `_core.round_colors` (the finish before the geometry rounding)."""
    params = q.roundtrip(splats, precision).to_array()
    params[:, 5:] = _core.solve_colors(params, np.ascontiguousarray(image), 0)
    if round_colors:
        step = q.quantize(gscodec.Splats.from_array(params, splats.width, splats.height),
                          precision).grids.field_step(5)
        params[:, 5:] = _core.round_colors(params, np.ascontiguousarray(image), step, 0)
    return q.roundtrip(gscodec.Splats.from_array(params, splats.width, splats.height), precision)


def finish(args, images) -> None:
    splats, stats, sec = timed_fit(images, args.splats, iterations=args.iterations[0])
    print(f"{args.iterations[0]} iterations, {args.splats} splats, {len(images)} images; "
          f"fit {sec:.2f} s / image, unquantized fit PSNR {np.mean([s['psnr'] for s in stats]):.3f}\n")
    print("| precision | file of the fit: PSNR | plain geometry, colours solved and rounded one by "
          "one | plain geometry, colours grid-rounded | file of the finish: PSNR | finish gain | "
          "finish loss vs fit | finish s / image |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    fit_psnr = np.mean([s["psnr"] for s in stats])
    for precision in args.precisions:
        after = np.mean([psnr(gscodec.render(q.roundtrip(s, precision)), im)
                         for s, im in zip(splats, images)])
        plain = [np.mean([psnr(gscodec.render(_plain_geometry_finish(s, im, precision, rc)), im)
                          for s, im in zip(splats, images)]) for rc in (False, True)]
        t0 = time.perf_counter()
        finished = [gscodec.ratecontrol.quantized_finish(s, im, precision) for s, im in zip(splats, images)]
        finish_sec = (time.perf_counter() - t0) / len(images)
        assert all(np.array_equal(q.roundtrip(f, precision).to_array(), f.to_array()) for f in finished)
        done = np.mean([psnr(gscodec.render(f), im) for f, im in zip(finished, images)])
        print(f"| {precision} | {after:.3f} | {plain[0]:.3f} | {plain[1]:.3f} | {done:.3f} | "
              f"{done - after:+.3f} | {fit_psnr - done:.3f} | {finish_sec:.3f} |", flush=True)
    if args.searches:
        finish_searches(splats, images, fit_psnr, args.precisions, args.searches)
    if args.groups:
        finish_groups(splats, images, fit_psnr)
    for k in args.qat:  # straight-through steps warm-started from the fit, then the finish
        for precision in args.precisions:
            t0 = time.perf_counter()
            finished = [gscodec.ratecontrol.finish_for(s, im, precision, iterations=k)
                        for s, im in zip(splats, images)]
            finish_sec = (time.perf_counter() - t0) / len(images)
            done = np.mean([psnr(gscodec.render(f), im) for f, im in zip(finished, images)])
            print(f"| {precision}, {k} straight-through steps first | | | | {done:.3f} | | "
                  f"{fit_psnr - done:.3f} | {finish_sec:.3f} |", flush=True)


def finish_searches(splats, images, fit_psnr, precisions, searches) -> None:
    """The finish's loss against the fit and its seconds per image for each
    search: R rounds of geometry rounding and colour solve, S sweeps each."""
    print("\n| precision | rounds x sweeps | finish PSNR | loss vs fit | finish s / image |")
    print("|---|---|---:|---:|---:|")
    for precision in precisions:
        for search in searches:
            rounds, sweeps = (int(v) for v in search.split("x"))
            t0 = time.perf_counter()
            finished = [gscodec.ratecontrol.quantized_finish(s, im, precision, rounds=rounds,
                                                             sweeps=sweeps)
                        for s, im in zip(splats, images)]
            seconds = (time.perf_counter() - t0) / len(images)
            done = np.mean([psnr(gscodec.render(f), im) for f, im in zip(finished, images)])
            print(f"| {precision} | {search} | {done:.3f} | {fit_psnr - done:.3f} | "
                  f"{seconds:.3f} |", flush=True)


def finish_groups(splats, images, fit_psnr) -> None:
    """Where q7's loss comes from: one field group at q7's grid, the others
    near lossless (1/16 pixel, 14 bits), written as is and with the colours
    re-solved (float) for the quantized geometry; then colour bits after the
    solve on q7's geometry."""
    fine = dict(pos=4, scale=14, shear=14, color=14)

    def spec(**k):
        return "q:" + ",".join(f"{g}={'+' if g == 'pos' else ''}{b}" for g, b in dict(fine, **k).items())

    def solved(s, im, precision):
        g = q.roundtrip(s, precision).to_array()
        g[:, 5:] = _core.solve_colors(g, np.ascontiguousarray(im), 0)
        return g

    def loss(arrays):
        return fit_psnr - np.mean([psnr(gscodec.render(gscodec.Splats.from_array(a, 224, 224)), im)
                                   for a, im in zip(arrays, images)])

    print("\n| quantized (q7 grid) | loss, written as is | loss, colours re-solved (float) |")
    print("|---|---:|---:|")
    for name, precision in (("positions", spec(pos=2)), ("log sizes", spec(scale=7)),
                            ("shear", spec(shear=7)), ("colours", spec(color=7)),
                            ("geometry", spec(pos=2, scale=7, shear=7)), ("all (q7)", "q7")):
        as_is = loss([q.roundtrip(s, precision).to_array() for s in splats])
        resolved = loss([solved(s, im, precision) for s, im in zip(splats, images)])
        print(f"| {name} | {as_is:.3f} | {resolved:.3f} |", flush=True)
    print("\n| q7 geometry, colours re-solved then quantized at | loss |\n|---|---:|")
    for bits in (7, 8, 9):
        precision = spec(pos=2, scale=7, shear=7, color=bits)
        finished = [q.roundtrip(gscodec.Splats.from_array(solved(s, im, precision), 224, 224),
                                precision).to_array() for s, im in zip(splats, images)]
        print(f"| {bits} bits | {loss(finished):.3f} |", flush=True)


def encode(args) -> None:
    print("| image | bpp target | splats | fit | iterations | q7 PSNR | bpp | s | JPEG PSNR @bpp "
          "| WebP PSNR @bpp |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for path in kodak_paths(args.images):
        img = np.asarray(Image.open(path).convert("RGB"))
        h, w = img.shape[:2]
        for bpp in args.bpp:
            n = ratecontrol._splats_for(bpp * w * h, "q7", w, h)
            jpeg, webp = pillow_codec(img, bpp, "JPEG"), pillow_codec(img, bpp, "WEBP")
            seconds = {}
            for name, iters, kw in (("paper", 2000, PAPER), ("v2", gscodec.engine.DEFAULT_ITERATIONS,
                                                            dict(quantize_for="q7"))):
                t0 = time.perf_counter()
                s = gscodec.fit(img, n, iterations=iters, device="cpu", **kw)
                data = fmt.dumps(s, precision="q7")
                seconds[name] = time.perf_counter() - t0
                decoded = gscodec.render(gscodec.open(data).splats)
                print(f"| {path.stem} | {bpp} | {n} | {name} | {iters} | {psnr(decoded, img):.2f} "
                      f"| {len(data) * 8 / (w * h):.3f} | {seconds[name]:.1f} "
                      f"| {jpeg['psnr']:.2f} @{jpeg['bpp']:.3f} | {webp['psnr']:.2f} @{webp['bpp']:.3f} |",
                      flush=True)
            print(f"| {path.stem} | {bpp} | | speed-up | | | | "
                  f"{seconds['paper'] / seconds['v2']:.1f}x | | |", flush=True)


SPEED = [("v2 default", {}), ("v2, coarse to fine 0.5", dict(coarse_fraction=0.5))]


def speed(args) -> None:
    print("| image | splats | iterations | fit | PSNR | wall s | CPU s |")
    print("|---|---:|---:|---|---:|---:|---:|")
    totals = {name: [0.0, 0.0, 0.0] for name, _ in SPEED}
    paths = kodak_paths(args.images)
    for path in paths:
        img = np.asarray(Image.open(path).convert("RGB"))
        n = args.splats or 4200
        for iters in args.iterations:
            for name, kw in SPEED:
                t0, c0 = time.perf_counter(), time.process_time()
                _, stats = gscodec.fit(img, n, iterations=iters, device="cpu", return_stats=True, **kw)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                for k, v in enumerate((stats["psnr"], wall, cpu)):
                    totals[name][k] += v / (len(paths) * len(args.iterations))
                print(f"| {path.stem} | {n} | {iters} | {name} | {stats['psnr']:.2f} | {wall:.1f} "
                      f"| {cpu:.1f} |", flush=True)
    for name, (p, wall, cpu) in totals.items():
        print(f"| mean | | | {name} | {p:.2f} | {wall:.1f} | {cpu:.1f} |")


def iterations(args) -> None:
    sample = np.asarray(Image.open(Path(__file__).parent.parent / "examples" / "kodim23-224.png")
                        .convert("RGB"))
    named = [("kodim23-224 (sample)", sample)] + [(p.stem + "-224", kodak224(p))
                                                  for p in kodak_paths(args.images)]
    print(f"v2 default fit, {args.splats} splats: fit PSNR / PSNR of its q7 file "
          f"(`fit(quantize_for='q7')`, written and decoded) / CPU s of the fit per image\n")
    print("| image | " + " | ".join(f"{i} it" for i in args.iterations) + " |")
    print("|---|" + "---:|" * len(args.iterations))
    for name, img in named:
        cells = []
        for iters in args.iterations:
            c0 = time.process_time()
            _, stats = gscodec.fit(img, args.splats, iterations=iters, device="cpu", return_stats=True)
            sec = time.process_time() - c0
            finished = gscodec.fit(img, args.splats, iterations=iters, device="cpu", quantize_for="q7")
            q7 = psnr(gscodec.render(gscodec.open(fmt.dumps(finished, precision="q7")).splats), img)
            cells.append(f"{stats['psnr']:.2f} / {q7:.2f} / {sec:.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


#: The densification before "Densify most of the budget" (docs/benchmarks.md).
HALF_DENSIFIED = dict(densify_fraction=0.5, densify_rounds=4, respawn_fraction=0.05)


def _settings(args) -> list[tuple[str, dict]]:
    """The fit settings ``densify`` compares: before, today's default, and
    each ``--sweep`` entry (``key=value,key=value`` over the default)."""
    out = [("half densified, 4 rounds, 5% respawn (before)", HALF_DENSIFIED), ("default", {})]
    for entry in args.sweep:
        kw = {k: (int(v) if k == "densify_rounds" else float(v))
              for k, v in (kv.split("=") for kv in entry.split(","))}
        out.append((entry, kw))
    return out


@contextlib.contextmanager
def _defaults(kw: dict):
    """`gscodec.engine.CPU_FIT` updated with ``kw`` (rate control fits with the defaults)."""
    saved = dict(gscodec.engine.CPU_FIT)
    gscodec.engine.CPU_FIT.update(kw)
    try:
        yield
    finally:
        gscodec.engine.CPU_FIT.clear()
        gscodec.engine.CPU_FIT.update(saved)


def densify(args) -> None:
    """Fit settings of the densification: Kodak-224 (400 splats, each
    iteration count), CIFAR-10 test (16 and 64 splats, default iterations)
    and full Kodak through rate control at each ``--bpp``; PSNR of the fit and
    of its q7 file (the quantized finish), seconds per image."""
    settings = _settings(args)
    k224 = [kodak224(p) for p in kodak_paths(None)]
    print(f"Kodak-224, 24 images, {args.splats} splats: fit PSNR / q7 file PSNR / s per image\n")
    print("| setting | " + " | ".join(f"{i} it" for i in args.iterations) + " |")
    print("|---|" + "---:|" * len(args.iterations))
    for name, kw in settings:
        cells = []
        for iters in args.iterations:
            splats, stats, sec = timed_fit(k224, args.splats, iterations=iters, **kw)
            q7 = np.mean([psnr(gscodec.render(ratecontrol.quantized_finish(s, im, "q7")), im)
                          for s, im in zip(splats, k224)])
            cells.append(f"{np.mean([s['psnr'] for s in stats]):.2f} / {q7:.2f} / {sec:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    cifar = [np.asarray(Image.open(p).convert("RGB")) for p in cifar_paths(args.cifar)]
    print(f"\nCIFAR-10 test, {len(cifar)} images (the same number per class), "
          f"{gscodec.engine.DEFAULT_ITERATIONS} iterations: fit PSNR / q7 file PSNR\n")
    print("| setting | 16 splats | 64 splats |\n|---|---:|---:|")
    for name, kw in settings:
        cells = []
        for n in (16, 64):
            splats, stats, _ = timed_fit(cifar, n, **kw)
            q7 = np.mean([psnr(gscodec.render(ratecontrol.quantized_finish(s, im, "q7")), im)
                          for s, im in zip(splats, cifar)])
            cells.append(f"{np.mean([s['psnr'] for s in stats]):.2f} / {q7:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    paths = kodak_paths(args.images)
    print(f"\nKodak 768x512, {len(paths)} images ({', '.join(p.stem for p in paths)}), "
          f"`gscodec.encode(bpp=...)`: PSNR / bpp / s per image\n")
    print("| setting | " + " | ".join(f"{b} bpp" for b in args.bpp) + " |")
    print("|---|" + "---:|" * len(args.bpp))
    full = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    for name, kw in settings:
        cells = []
        for bpp in args.bpp:
            rows = []
            with _defaults(kw):
                for img in full:
                    t0 = time.perf_counter()
                    data = ratecontrol.encode_to_rate(img, bpp)
                    sec = time.perf_counter() - t0
                    rows.append((psnr(gscodec.render(fmt.loads(data)), img),
                                 len(data) * 8 / (img.shape[0] * img.shape[1]), sec))
            p_, b_, s_ = np.mean(rows, axis=0)
            cells.append(f"{p_:.2f} / {b_:.3f} / {s_:.1f}")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def rounding(args) -> None:
    """Rate control (`encode_to_rate`, default settings but the iteration
    count) with the finish's geometry rounding and without it (plain geometry,
    colours solved and grid-rounded: the finish before it), per iteration
    count: mean PSNR, bpp and seconds per image."""
    from unittest import mock

    print("| iterations | geometry rounding | PSNR | bpp | s / image |")
    print("|---:|---|---:|---:|---:|")
    images = [np.asarray(Image.open(p).convert("RGB")) for p in kodak_paths(args.images)]
    for iters in args.iterations:
        for name in ("yes", "no"):
            plain = mock.patch.object(ratecontrol, "quantized_finish",
                                      lambda s, im, p, threads=0: _plain_geometry_finish(s, im, p, True))
            rows = []
            with plain if name == "no" else contextlib.nullcontext():
                for img in images:
                    for bpp in args.bpp:
                        t0 = time.perf_counter()
                        data = ratecontrol.encode_to_rate(img, bpp, iterations=iters)
                        rows.append((psnr(gscodec.render(fmt.loads(data)), img),
                                     len(data) * 8 / (img.shape[0] * img.shape[1]),
                                     time.perf_counter() - t0))
            p_, b_, s_ = np.mean(rows, axis=0)
            print(f"| {iters} | {name} | {p_:.3f} | {b_:.3f} | {s_:.2f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["convergence", "ablation", "encode", "finish", "speed",
                                     "iterations", "densify", "rounding"])
    ap.add_argument("--images", type=int, default=None, help="first N Kodak images (default all 24)")
    ap.add_argument("--splats", type=int, default=None,
                    help="default 400 (speed: 4200)")
    ap.add_argument("--iterations", type=int, nargs="+", default=[50, 100, 200, 500])
    ap.add_argument("--bpp", type=float, nargs="+", default=[0.5])
    ap.add_argument("--precisions", nargs="+", default=["q6", "q7", "q8"])
    ap.add_argument("--groups", action="store_true",
                    help="finish: the q7 loss per field group")
    ap.add_argument("--qat", type=int, nargs="*", default=[],
                    help="finish: also with this many straight-through steps first")
    ap.add_argument("--searches", nargs="*", default=[],
                    help="finish: also each search ROUNDSxSWEEPS (e.g. 1x2 3x8)")
    ap.add_argument("--cifar", type=int, default=200,
                    help="densify: CIFAR-10 test images (the same number per class)")
    ap.add_argument("--sweep", nargs="*", default=[],
                    help="densify: more settings, each key=value,key=value over the default")
    args = ap.parse_args()
    print(header("python benchmarks/encoder_v2.py " + " ".join(sys.argv[1:])))
    if args.what != "speed":
        args.splats = args.splats or 400
    if args.what in ("encode", "speed", "iterations", "densify", "rounding"):
        {"encode": encode, "speed": speed, "iterations": iterations,
         "densify": densify, "rounding": rounding}[args.what](args)
        return
    images = [kodak224(p) for p in kodak_paths(args.images)]
    {"convergence": convergence, "ablation": ablation, "finish": finish}[args.what](args, images)


if __name__ == "__main__":
    main()
