"""The bitstream's own rate–distortion gain on Kodak: the same encoder, two file formats.

For every image and target bpp, rate control (`ratecontrol.encode_to_rate`,
the default encoder: fit, trim, continuation, finish) writes

- **before**: format 1.0 files at the ``q7`` preset, the bitstream of the
  first release (fields quantized independently, byte planes to zstd);
- **after**: today's default, format 3.0 with the precision chosen per image
  at ``q7``'s distortion (`quantize.allocate`), predictors, Elias-Fano
  positions and the compact header.

The fit settings are the same; rate control aims both fits with the
format-3 bits-per-splat estimate and then trims each to its own file's size,
so the "before" fits start further over their count. The gain in dB at each
rate, and the BD-rate of after against before, is what the bitstream buys.
Prints a markdown table; writes the rows as JSON (``--out``).

    nice -n 5 .venv/bin/python benchmarks/bitstream_rd.py --out /tmp/bitstream_rd.json
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import statistics
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import gscodec
from gscodec import format as fmt
from gscodec import ratecontrol
from gscodec.metrics import psnr

from common import header, kodak_paths
from rate_distortion import TARGETS, bd_rate


def encode(pixels: np.ndarray, bpp: float, version_1: bool) -> dict:
    """One rate-controlled file: bpp, PSNR and splat count."""
    if version_1:
        dumps = fmt.dumps
        ratecontrol.fmt.dumps = functools.partial(dumps, version=fmt.VERSION_1)
        try:
            data = ratecontrol.encode_to_rate(pixels, bpp, precision="q7")
        finally:
            ratecontrol.fmt.dumps = dumps
    else:
        data = ratecontrol.encode_to_rate(pixels, bpp)
    splats = fmt.loads(data)
    h, w = pixels.shape[:2]
    version = fmt.read_header(io.BytesIO(data)).version
    assert version == (fmt.VERSION_1 if version_1 else fmt.VERSION), version
    return {"bpp": len(data) * 8 / (w * h), "n_splats": len(splats),
            "psnr": psnr(np.asarray(gscodec.render(splats)), pixels)}


def main() -> int:
    """Run the comparison (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=0, help="first N Kodak images (0: all)")
    ap.add_argument("--targets", type=float, nargs="+", default=list(TARGETS))
    ap.add_argument("--out", type=Path, default=None, help="JSON of every row")
    args = ap.parse_args()
    rows = []
    for image in kodak_paths(args.images or None):
        pixels = np.asarray(Image.open(image).convert("RGB"))
        for bpp in args.targets:
            row = {"image": image.stem, "target_bpp": bpp,
                   "before": encode(pixels, bpp, True), "after": encode(pixels, bpp, False)}
            rows.append(row)
            print(f"{image.stem} {bpp}: before {row['before']['bpp']:.3f} bpp "
                  f"{row['before']['psnr']:.2f} dB, after {row['after']['bpp']:.3f} bpp "
                  f"{row['after']['psnr']:.2f} dB", file=sys.stderr, flush=True)
            if args.out:
                args.out.write_text(json.dumps(rows, indent=1))

    print(header(" ".join(["python", *sys.argv])))
    print("| target bpp | before bpp | before PSNR | before splats | after bpp | after PSNR "
          "| after splats | gain dB | images better |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    curves: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
    for bpp in args.targets:
        rs = [r for r in rows if r["target_bpp"] == bpp]
        mean = {(k, f): statistics.mean(r[k][f] for r in rs)
                for k in curves for f in ("bpp", "psnr", "n_splats")}
        for k in curves:
            curves[k].append((mean[k, "bpp"], mean[k, "psnr"]))
        better = sum(r["after"]["psnr"] > r["before"]["psnr"] for r in rs)
        print(f"| {bpp:.3f} | {mean['before', 'bpp']:.3f} | {mean['before', 'psnr']:.2f} | "
              f"{mean['before', 'n_splats']:.0f} | {mean['after', 'bpp']:.3f} | "
              f"{mean['after', 'psnr']:.2f} | {mean['after', 'n_splats']:.0f} | "
              f"{mean['after', 'psnr'] - mean['before', 'psnr']:+.2f} | {better} of {len(rs)} |")
    rate = bd_rate(curves["before"], curves["after"])
    print(f"\nBD-rate of after against before (mean curves): "
          f"{'n/a' if rate is None else f'{rate:+.1f}%'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
