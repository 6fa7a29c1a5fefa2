"""gscodec's C++ fitting loop against the obvious alternative, timed in one run.

The baseline is a straightforward PyTorch autograd implementation of the same
model: dense render of every splat at every pixel (same parameterization and
cutoff), the same clamped L2 loss, torch.optim.Adam with the same per-group
learning rates. Both fit the same Kodak-224 images for the same number of
iterations on the same threads; the table gives seconds per iteration and the
ratio. Needs torch (the `clip` extra).

    python benchmarks/cpu_vs_torch.py --images 2 --splats 400 1600 --iterations 50
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch

import gscodec
from common import header, kodak224, kodak_paths, psnr

CUTOFF = 2 * math.log(255)


def torch_fit(image: np.ndarray, init: gscodec.Splats, iterations: int, lrs: dict) -> np.ndarray:
    """Dense autograd fit from the same initial splats; returns the 8-bit render."""
    h, w = image.shape[:2]
    cell = math.sqrt(w * h / len(init))
    p = init.to_array().astype(np.float32)
    target = torch.from_numpy(image.astype(np.float32) / 255)
    xy = torch.tensor(np.stack([p[:, 0] * w, p[:, 1] * h], 1) / cell, requires_grad=True)
    log_a = torch.tensor(np.log(p[:, 2] * w), requires_grad=True)
    shear = torch.tensor(p[:, 3] * h / cell, requires_grad=True)
    log_c = torch.tensor(np.log(p[:, 4] * h), requires_grad=True)
    rgb = torch.tensor(p[:, 5:8], requires_grad=True)
    opt = torch.optim.Adam([
        {"params": [xy], "lr": lrs["lr_position"]},
        {"params": [log_a, shear, log_c], "lr": lrs["lr_covariance"]},
        {"params": [rgb], "lr": lrs["lr_color"]},
    ], eps=1e-15)
    px = torch.arange(w, dtype=torch.float32) + 0.5
    py = torch.arange(h, dtype=torch.float32) + 0.5

    def render():
        mean = xy * cell
        dx = px[None, None, :] - mean[:, 0, None, None]          # N x 1 x W
        dy = py[None, :, None] - mean[:, 1, None, None]          # N x H x 1
        y1 = dx / log_a.exp()[:, None, None]
        y2 = (dy - (shear * cell)[:, None, None] * y1) / log_c.exp()[:, None, None]
        q = y1 * y1 + y2 * y2                                    # N x H x W
        wgt = torch.where(q <= CUTOFF, torch.exp(-0.5 * q), torch.zeros_like(q))
        return torch.einsum("nhw,nc->hwc", wgt, rgb)

    for _ in range(iterations):
        opt.zero_grad(set_to_none=True)
        loss = ((render().clamp(0, 1) - target) ** 2).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (render().clamp(0, 1) * 255 + 0.5).floor().to(torch.uint8).numpy()


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
        theirs = [torch_fit(img, init, args.iterations, lrs) for img, init in zip(images, inits)]
        t_torch = (time.perf_counter() - t0) / (len(images) * args.iterations)
        p_ours = np.mean([psnr(gscodec.render(s), img) for s, img in zip(ours, images)])
        p_torch = np.mean([psnr(r, img) for r, img in zip(theirs, images)])
        print(f"| {n} | {t_ours:.4f} | {t_torch:.4f} | {t_torch / t_ours:.0f}x | {p_ours:.2f} "
              f"| {p_torch:.2f} |", flush=True)


if __name__ == "__main__":
    main()
