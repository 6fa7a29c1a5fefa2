"""Fit throughput of the CUDA backend (issue 4), printed as a markdown table.

    python benchmarks/gpu_fit_throughput.py                 # the issue's full set
    python benchmarks/gpu_fit_throughput.py --batch 512 --splats 400 --iterations 100 --no-cpu

For each splat count and iteration count: images/s fitting a batch of
Kodak-224 images (the 24 images repeated up to --batch) with default options,
and the mean PSNR reached. Then time-to-quality: the fewest iterations (on a
grid of iteration counts) at which 400 splats reach the paper's 25.75 dB mean
PSNR on Kodak-224, and the images/s of a full batch fitted that way. The CPU
backend is timed on --cpu-images of the same images with the same options
(images are independent, so its images/s does not depend on the batch size)
for the speed ratio. Times are wall-clock around gscodec.fit, host transfers
included, after one warm-up fit.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import gscodec
from common import header, kodak224, kodak_paths


def rate(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"

PAPER_400 = 25.75  # dB, structured init, 400 splats, Kodak-224 (ANCHORS.md)
SEARCH = [25, 50, 75, 100, 150, 200, 300, 400, 600, 800, 1200, 1600, 2000]


def fit_timed(images, n, iterations, device):
    t0 = time.perf_counter()
    # the paper's fit on both devices: the throughput the paper reports (the GPU anchors)
    _, stats = gscodec.fit(images, n, iterations=iterations, device=device, return_stats=True,
                           **gscodec.engine.PAPER_FIT)
    return time.perf_counter() - t0, float(np.mean([s["psnr"] for s in stats]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--splats", type=int, nargs="+", default=[400, 1600, 3136])
    ap.add_argument("--iterations", type=int, nargs="+", default=[500, 2000])
    ap.add_argument("--cpu-images", type=int, default=4, help="images the CPU is timed on")
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU timings")
    ap.add_argument("--no-target", action="store_true", help="skip time-to-quality")
    args = ap.parse_args()

    info = gscodec.backends()
    if not info["cuda_available"]:
        raise SystemExit(f"no CUDA device: {info.get('cuda_reason', 'built without CUDA')}")
    print(header("python benchmarks/gpu_fit_throughput.py " + " ".join(sys.argv[1:])))
    print(f"GPU: {info['cuda_device']} (compute capability {info['cuda_compute_capability']})\n")

    kodak = [kodak224(p) for p in kodak_paths()]
    batch = [kodak[i % len(kodak)] for i in range(args.batch)]
    cpu_batch = kodak[: args.cpu_images]
    gscodec.fit(batch[:64], 400, iterations=5, device="cuda")  # context, module load, memory pool

    print("| splats | iterations | batch | CUDA images/s | CUDA s | mean PSNR dB | CPU images/s | CUDA / CPU |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.splats:
        for it in args.iterations:
            t, p = fit_timed(batch, n, it, "cuda")
            cpu = ratio = "-"
            if not args.no_cpu:
                tc, _ = fit_timed(cpu_batch, n, it, "cpu")
                cpu_rate = len(cpu_batch) / tc
                cpu, ratio = rate(cpu_rate), f"{len(batch) / t / cpu_rate:.3g}x"
            print(f"| {n} | {it} | {len(batch)} | {rate(len(batch) / t)} | {t:.2f} | {p:.2f} | {cpu} | {ratio} |",
                  flush=True)

    if args.no_target:
        return
    # Time to quality: the search runs on the 24 distinct images (PSNR is a
    # property of the images, not of the batch), then a full batch is timed.
    print(f"\nTime to {PAPER_400} dB (400 splats, mean over Kodak-224):\n")
    reached = None
    for it in SEARCH:
        _, p = fit_timed(kodak, 400, it, "cuda")
        print(f"- {it} iterations: {p:.2f} dB")
        if p >= PAPER_400:
            reached = it
            break
    if reached is None:
        print(f"\nnot reached within {SEARCH[-1]} iterations")
        return
    t, p = fit_timed(batch, 400, reached, "cuda")
    line = (f"\n**{reached} iterations reach {p:.2f} dB; batch {len(batch)}: {rate(len(batch) / t)} images/s "
            f"({t / len(batch) * 1e3:.3f} ms per image; the paper: ~7 ms per image, target >= 2000 images/s)**")
    if not args.no_cpu:
        tc, _ = fit_timed(cpu_batch, 400, reached, "cpu")
        line += f"  \nCPU backend, same settings: {rate(len(cpu_batch) / tc)} images/s"
    print(line)


if __name__ == "__main__":
    main()
