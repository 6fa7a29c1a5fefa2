"""Kodak-224 fitting quality and speed: the paper's init ablation, reproduced.

For each splat count, iteration budget and init (grid / random), fits every
Kodak-224 image with the paper's fit (`gscodec.engine.PAPER_FIT`; encoder v2 is
benchmarks/encoder_v2.py) (one call, so the C++ core spreads images over the cores) and
reports mean PSNR and wall seconds per image.

    python benchmarks/fit_kodak224.py                  # full: 24 images
    python benchmarks/fit_kodak224.py --images 4 --splats 400 --iterations 500
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

import gscodec
from common import header, kodak224, kodak_paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=None, help="first N Kodak images (default all 24)")
    ap.add_argument("--splats", type=int, nargs="+", default=[400, 1600, 4900])
    ap.add_argument("--iterations", type=int, nargs="+", default=[500, 2000])
    ap.add_argument("--init", nargs="+", default=["grid", "random"])
    ap.add_argument("--json", help="also write the rows to this JSON file")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra gscodec.fit options, e.g. lr_color=0.02")
    args = ap.parse_args()
    extra = {k: float(v) for k, v in (kv.split("=", 1) for kv in args.set)}

    images = [kodak224(p) for p in kodak_paths(args.images)]
    rows = []
    print(header("python benchmarks/fit_kodak224.py " + " ".join(sys.argv[1:])))
    print("| splats | iterations | init | mean PSNR (dB) | min PSNR | s / image |")
    print("|---:|---:|---|---:|---:|---:|")
    for n in args.splats:
        for iters in args.iterations:
            for init in args.init:
                t0 = time.perf_counter()
                options = {**gscodec.engine.PAPER_FIT, "init": init, **extra}
                _, stats = gscodec.fit(images, n, iterations=iters, return_stats=True, **options)
                seconds = (time.perf_counter() - t0) / len(images)
                psnrs = np.array([s["psnr"] for s in stats])
                rows.append(dict(splats=n, iterations=iters, init=init, mean_psnr=psnrs.mean(),
                                 min_psnr=psnrs.min(), seconds_per_image=seconds))
                print(f"| {n} | {iters} | {init} | {psnrs.mean():.2f} | {psnrs.min():.2f} "
                      f"| {seconds:.2f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
