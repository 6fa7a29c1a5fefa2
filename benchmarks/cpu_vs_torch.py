"""gscodec's C++ fitting loop against the obvious alternative, timed in one run.

The baseline is the tests' reference twin (dense_fit in python/tests/reference.py):
a straightforward PyTorch autograd implementation of the same model, rendering
every splat at every pixel (same parameterization and cutoff), with the same
clamped L2 loss and torch.optim.Adam at the same per-group learning rates, in
float32 like the C++. Both fit the same Kodak-224 images from the same initial
splats for the same number of iterations on the same threads; the table gives
seconds per iteration and the ratio. Needs torch (the `clip` extra).

    python benchmarks/cpu_vs_torch.py --images 2 --splats 400 1600 --iterations 50
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

import gscodec
from gscodec.metrics import psnr
from common import header, kodak224, kodak_paths

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python" / "tests"))
from reference import dense_fit  # noqa: E402  (the tests' twin is not an installed module)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--splats", type=int, nargs="+", default=[400, 1600])
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lrs = dict(lr_position=0.05, lr_covariance=0.05, lr_color=0.01)

    images = [kodak224(p) for p in kodak_paths(args.images)]
    print(header("python benchmarks/cpu_vs_torch.py " + " ".join(sys.argv[1:])))
    print(f"torch {torch.__version__}, {args.threads} threads for both; "
          f"{args.iterations} iterations, {len(images)} Kodak-224 images\n")
    print("| splats | gscodec s/iter | torch s/iter | speed-up | PSNR gscodec | PSNR torch |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in args.splats:
        t0 = time.perf_counter()
        # the paper's fit, which the torch reference implements
        ours = gscodec.fit(images, n, iterations=args.iterations, threads=args.threads,
                           lr_final_ratio=1.0, **{**gscodec.engine.PAPER_FIT, **lrs})
        t_ours = (time.perf_counter() - t0) / (len(images) * args.iterations)
        inits = gscodec.fit(images, n, iterations=0, **gscodec.engine.PAPER_FIT)
        t0 = time.perf_counter()
        theirs = [dense_fit(img, init.to_array(), args.iterations, dtype=torch.float32, **lrs)
                  for img, init in zip(images, inits)]
        t_torch = (time.perf_counter() - t0) / (len(images) * args.iterations)
        p_ours = np.mean([psnr(gscodec.render(s), img) for s, img in zip(ours, images)])
        p_torch = np.mean([psnr(gscodec.render(gscodec.Splats.from_array(p, s.width, s.height)), img)
                           for p, s, img in zip(theirs, inits, images)])
        print(f"| {n} | {t_ours:.4f} | {t_torch:.4f} | {t_torch / t_ours:.0f}x | {p_ours:.2f} "
              f"| {p_torch:.2f} |", flush=True)


if __name__ == "__main__":
    main()
