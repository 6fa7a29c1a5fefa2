"""The main job: encode the sample image to .gsi, decode it, print size and PSNR.

    python examples/demo.py [IMAGE] [--splats N] [--iterations K] [--precision P]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import gscodec

SAMPLE = Path(__file__).with_name("kodim23-224.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image", nargs="?", default=str(SAMPLE))
    ap.add_argument("--splats", type=int, default=1600)
    ap.add_argument("--iterations", type=int, default=gscodec.engine.DEFAULT_ITERATIONS)
    ap.add_argument("--precision", default=None,
                    help="fp16, q7, q:<spec>, ... (default: q7's quality, grids chosen per image)")
    args = ap.parse_args()

    original = np.asarray(Image.open(args.image).convert("RGB"))
    height, width = original.shape[:2]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sample.gsi"
        t0 = time.perf_counter()
        gscodec.encode(original, n_splats=args.splats, iterations=args.iterations,
                       precision=args.precision).save(out)
        encode_s = time.perf_counter() - t0
        size = out.stat().st_size
        t0 = time.perf_counter()
        with gscodec.open(out) as gsi:
            decoded = gsi.render()
            n, precision = gsi.n_splats, gsi.precision
        decode_ms = (time.perf_counter() - t0) * 1e3

    mse = np.mean((decoded.astype(np.float64) - original.astype(np.float64)) ** 2)
    psnr = 10 * np.log10(255**2 / mse)
    raw = width * height * 3
    print(f"image      {args.image} ({width}x{height})")
    print(f"splats     {n} ({args.iterations} iterations, {precision})")
    print(f".gsi size  {size} bytes = {size * 8 / (width * height):.3f} bpp "
          f"({raw / size:.1f}x smaller than raw pixels)")
    print(f"PSNR       {psnr:.2f} dB")
    print(f"encode     {encode_s:.2f} s   decode {decode_ms:.1f} ms   "
          f"backends {gscodec.backends()}")


if __name__ == "__main__":
    main()
