"""The decode-work limit (gscodec.limits) on normal files: what real fits need,
and what the check costs. In one run, renders with the limit checked (the
default) and with ``MAX_DECODE_WORK = None`` (the pair count skipped)
alternate, and the ratio of their medians is reported; also how long refusing
the 588-byte bomb of issue 9 takes.

    python benchmarks/decode_limits.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from PIL import Image

import gscodec
from gscodec import _core, limits
from common import header, kodak224, kodak_paths, median_seconds


def paired_medians(fn, repeats: int) -> tuple[float, float]:
    """Median seconds of ``fn`` with the work limit on and off, alternating."""
    default = limits.MAX_DECODE_WORK
    on, off = [], []
    fn()
    for _ in range(repeats):
        for setting, times in ((default, on), (None, off)):
            limits.MAX_DECODE_WORK = setting
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    limits.MAX_DECODE_WORK = default
    return statistics.median(on), statistics.median(off)


def work(splats: gscodec.Splats, width: int, height: int) -> int:
    return _core.decode_work([splats.to_array()], [width], [height])[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--splats", type=int, default=20000)
    ap.add_argument("--fit-iterations", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()

    print(header("python benchmarks/decode_limits.py " + " ".join(sys.argv[1:])))
    print(f"Limits: MAX_DECODE_PIXELS = {limits.MAX_DECODE_PIXELS}, "
          f"MAX_DECODE_WORK = {limits.MAX_DECODE_WORK} splat-tile pairs\n")
    img = np.asarray(Image.open(kodak_paths(1)[0]).convert("RGB"))  # kodim01, 768 x 512
    big = gscodec.fit(img, args.splats, iterations=args.fit_iterations)
    small = gscodec.fit([kodak224(p) for p in kodak_paths(4)], 400, iterations=args.fit_iterations)
    batch = [small[i % len(small)] for i in range(args.batch)]

    print("| decode | pixels | splat-tile pairs | share of MAX_DECODE_WORK |")
    print("|---|---|---|---|")
    for scale in (1, 4, 10):
        w, h = big.width * scale, big.height * scale
        pairs = work(big, w, h)
        print(f"| kodim01, {len(big)} splats, {w}x{h} | {w * h} | {pairs} | "
              f"{pairs / limits.MAX_DECODE_WORK:.4f} |")
    pairs = work(small[0], 224, 224)
    print(f"| Kodak-224, 400 splats, 224x224 | {224 * 224} | {pairs} | "
          f"{pairs / limits.MAX_DECODE_WORK:.5f} |")
    bomb = gscodec.open(gscodec.format.dumps(gscodec.Splats.from_array(
        np.tile([[.5, .5, 10, 0, 10, 1e-6, 1e-6, 1e-6]], (1 << 20, 1)), 224, 224)))
    pairs = work(bomb.splats, 224, 224)
    print(f"| 588-byte bomb, 2^20 splats, 224x224 | {224 * 224} | {pairs} | "
          f"{pairs / limits.MAX_DECODE_WORK:.2f} (refused) |\n")

    print("| render | limit checked | limit off | ratio | the pair count alone |")
    print("|---|---|---|---|---|")
    on, off = paired_medians(lambda: gscodec.render(big), args.repeats)
    count = median_seconds(lambda: work(big, big.width, big.height), args.repeats)
    print(f"| 768x512, {len(big)} splats | {on * 1e3:.2f} ms | {off * 1e3:.2f} ms | "
          f"{on / off:.3f} | {count * 1e3:.3f} ms ({count / off:.2%}) |")
    on, off = paired_medians(lambda: gscodec.render_batch(batch), max(5, args.repeats // 3))
    params = [s.to_array() for s in batch]
    count = median_seconds(lambda: _core.decode_work(params, [224] * len(batch),
                                                     [224] * len(batch)), args.repeats)
    print(f"| 224x224, 400 splats, batch of {args.batch} | {on / args.batch * 1e3:.3f} ms/image | "
          f"{off / args.batch * 1e3:.3f} ms/image | {on / off:.3f} | "
          f"{count / args.batch * 1e3:.4f} ms/image ({count / off:.2%}) |")
    t0 = time.perf_counter()
    try:
        bomb.render()
    except gscodec.GSIError:
        pass
    print(f"| 588-byte bomb, 2^20 splats, 224x224 | refused in "
          f"{(time.perf_counter() - t0) * 1e3:.0f} ms | (64 s before the limit) | | |")


if __name__ == "__main__":
    main()
