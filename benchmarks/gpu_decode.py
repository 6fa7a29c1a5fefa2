"""Decode speed of the CUDA backend (issue 4), printed as a markdown table.

    python benchmarks/gpu_decode.py
    python benchmarks/gpu_decode.py --batch 1024 --repeats 10

Rows: one 768 x 512 image from 20k splats (GaussianImage's ~2000 FPS claim),
the same image decoded in batches (amortizes launch and transfer latency), and
batched 224 x 224 decode of 400-splat Kodak-224 fits. The splats come from short
fits (realistic sizes, not random ones). Times are medians of wall-clock calls
to gscodec.render / render_batch, host transfers included; the CPU backend
decodes the same splats for the speed ratio.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from PIL import Image

import gscodec
from common import header, kodak224, kodak_paths, median_seconds


def rate(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--splats", type=int, default=20000)
    ap.add_argument("--fit-iterations", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--big-batch", type=int, default=64, help="copies of the 768 x 512 image per call")
    ap.add_argument("--batch", type=int, default=4096, help="224 x 224 images per call")
    ap.add_argument("--no-cpu", action="store_true")
    args = ap.parse_args()

    info = gscodec.backends()
    if not info["cuda_available"]:
        raise SystemExit(f"no CUDA device: {info.get('cuda_reason', 'built without CUDA')}")
    print(header("python benchmarks/gpu_decode.py " + " ".join(sys.argv[1:])))
    print(f"GPU: {info['cuda_device']} (compute capability {info['cuda_compute_capability']})\n")

    img = np.asarray(Image.open(kodak_paths(1)[0]).convert("RGB"))  # kodim01, 768 x 512
    big = gscodec.fit(img, args.splats, iterations=args.fit_iterations, device="cuda")
    small = gscodec.fit([kodak224(p) for p in kodak_paths()], 400, iterations=args.fit_iterations, device="cuda")
    batch = [small[i % len(small)] for i in range(args.batch)]
    bigs = [big] * args.big_batch

    rows = [
        (f"768x512, {len(big)} splats, one image per call", 1,
         lambda d: gscodec.render(big, device=d)),
        (f"768x512, {len(big)} splats, {args.big_batch} per call", args.big_batch,
         lambda d: gscodec.render_batch(bigs, device=d)),
        (f"224x224, 400 splats, {args.batch} per call", args.batch,
         lambda d: gscodec.render_batch(batch, device=d)),
    ]
    print("| decode (uint8) | CUDA images/s | CUDA ms per call | CPU images/s | CUDA / CPU |")
    print("|---|---:|---:|---:|---:|")
    for name, per_call, fn in rows:
        t = median_seconds(lambda: fn("cuda"), args.repeats)
        cpu = ratio = "-"
        if not args.no_cpu:
            tc = median_seconds(lambda: fn("cpu"), max(1, args.repeats // 10))
            cpu, ratio = rate(per_call / tc), f"{tc / t:.3g}x"
        print(f"| {name} | {rate(per_call / t)} | {t * 1e3:.2f} | {cpu} | {ratio} |", flush=True)
    same = all(np.array_equal(gscodec.render(s, device="cuda"), gscodec.render(s, device="cpu"))
               for s in [big, *small[:4]])
    print(f"\nCUDA decode identical to the CPU decode on these images: {same}")


if __name__ == "__main__":
    main()
