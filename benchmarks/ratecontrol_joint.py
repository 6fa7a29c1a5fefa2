"""Rate control with count and precision chosen together vs at a fixed preset.

For each Kodak-224 image and target bpp, `gscodec.encode(..., bpp=)` twice
with the same fit settings: ``precision="q7"`` (only the splat count adapts)
and the default (q7's distortion, per-field precision reallocated by
`gscodec.quantize.allocate`, the bits saved spent on splats). Reports the
achieved bpp, PSNR against the image, splat count and fits made.

    nice -n 10 .venv/bin/python benchmarks/ratecontrol_joint.py --images 4 --iterations 300
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, kodak224, kodak_paths  # noqa: E402

import gscodec  # noqa: E402
from gscodec import engine  # noqa: E402
from gscodec.metrics import psnr  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--targets", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    ap.add_argument("--iterations", type=int, default=300)
    args = ap.parse_args()
    fit = engine.fit
    calls: list[int] = []

    def counting_fit(*a, **k):
        calls.append(1)
        return fit(*a, **k)

    engine.fit = counting_fit  # counts the fits rate control makes
    rows = []
    for path in kodak_paths(args.images):
        image = kodak224(path)
        for target in args.targets:
            for label, precision in (("q7", "q7"), ("joint", None)):
                calls.clear()
                t0 = time.perf_counter()
                g = gscodec.encode(image, bpp=target, precision=precision,
                                   iterations=args.iterations)
                seconds = time.perf_counter() - t0
                out = np.asarray(gscodec.decode(g.tobytes()))
                rows.append(dict(image=path.stem, target=target, mode=label, bpp=g.info["bpp"],
                                 psnr=psnr(out, image), splats=g.n_splats, fits=len(calls),
                                 precision=g.precision, seconds=seconds))
                print(rows[-1], flush=True)
    command = "benchmarks/ratecontrol_joint.py " + " ".join(sys.argv[1:])
    print(header(command))
    print(f"Kodak-224, first {args.images} images, {args.iterations} iterations; means:\n")
    print("| target bpp | mode | bpp | PSNR (dB) | splats | fits | s / image |")
    print("|---|---|---|---|---|---|---|")
    for target in args.targets:
        for mode in ("q7", "joint"):
            r = [x for x in rows if x["target"] == target and x["mode"] == mode]
            print(f"| {target} | {mode} | {np.mean([x['bpp'] for x in r]):.3f} | "
                  f"{np.mean([x['psnr'] for x in r]):.2f} | "
                  f"{np.mean([x['splats'] for x in r]):.0f} | "
                  f"{np.mean([x['fits'] for x in r]):.1f} | "
                  f"{np.mean([x['seconds'] for x in r]):.1f} |")
    OUT.mkdir(exist_ok=True)
    (OUT / "ratecontrol_joint.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
