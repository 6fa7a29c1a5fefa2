"""Decode speed on this CPU: one 768 x 512 image from 20k splats, and batched
224 x 224 decode. The splats come from a short fit of Kodak images (so their
sizes are realistic, not random). Reports the median of repeated renders.

    python benchmarks/render_speed.py
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from PIL import Image

import gscodec
from common import header, kodak224, kodak_paths, median_seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--splats", type=int, default=20000)
    ap.add_argument("--fit-iterations", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()

    print(header("python benchmarks/render_speed.py " + " ".join(sys.argv[1:])))
    img = np.asarray(Image.open(kodak_paths(1)[0]).convert("RGB"))  # kodim01, 768 x 512
    big = gscodec.fit(img, args.splats, iterations=args.fit_iterations)
    t = median_seconds(lambda: gscodec.render(big), args.repeats)
    print(f"| 768x512, {len(big)} splats, uint8 | {t * 1e3:.1f} ms | {1 / t:.0f} images/s |")

    small = gscodec.fit([kodak224(p) for p in kodak_paths(4)], 400, iterations=args.fit_iterations)
    batch = [small[i % len(small)] for i in range(args.batch)]
    t = median_seconds(lambda: gscodec.render_batch(batch), max(3, args.repeats // 4))
    print(f"| 224x224, 400 splats, batch of {args.batch} | {t / args.batch * 1e3:.2f} ms per image "
          f"| {args.batch / t:.0f} images/s |")


if __name__ == "__main__":
    main()
