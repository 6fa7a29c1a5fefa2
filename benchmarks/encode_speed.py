"""Encode speed of the `gscodec encode --bpp B` CLI against another installation, one run.

Runs the default command of this checkout and of an older installation (its
Python, e.g. a virtual environment built from a git worktree of an earlier
commit) on the same Kodak photos, alternating per image so that both see the
same machine load; wall seconds per encode, file bpp and PSNR (decoded by this
checkout, which reads every format version). Prints a markdown table and the
ratio of the median times. ``--steps`` then times the steps of this
checkout's `ratecontrol.encode_to_rate` in one process (first fit, its
continuation after the trim, `quantize.allocate`, the trims, the finish).

    git worktree add --detach ../old 369d74b   # the first release
    (cd ../old && python3 -m venv .venv && .venv/bin/pip install .)
    nice -n 10 .venv/bin/python benchmarks/encode_speed.py --old-python ../old/.venv/bin/python
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import gscodec
from gscodec import engine, ratecontrol
from gscodec.metrics import psnr

from common import header, kodak_paths

_CLI = "import sys; from gscodec.cli import main; sys.exit(main())"


def encode(python: str, image: Path, out: Path, bpp: float) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, all threads) of one
    `gscodec encode IMAGE -o OUT --bpp B` with ``python``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([python, "-c", _CLI, "encode", str(image), "-o", str(out), "--bpp", str(bpp),
                    "--force", "-q"], check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def measure(out: Path, image: Path) -> tuple[float, float]:
    """(bpp, PSNR) of the file ``out`` against ``image``."""
    pixels = np.asarray(Image.open(image).convert("RGB"))
    decoded = np.asarray(gscodec.decode(out.read_bytes()))
    return out.stat().st_size * 8 / (pixels.shape[0] * pixels.shape[1]), psnr(decoded, pixels)


def time_steps(image: Path, bpp: float) -> dict[str, float]:
    """Wall seconds of each step of one `encode_to_rate` (this checkout, in
    process): the fit, the precision's reallocation, the trims, the
    continuation of the trimmed fit, the finish; and the total."""
    seconds: dict[str, float] = {}
    steps = {(ratecontrol, "precision_for"): "allocate", (ratecontrol, "_trim"): "trims",
             (ratecontrol, "finish_for"): "finish", (engine, "fit"): "fit"}
    originals = {where: getattr(*where) for where in steps}

    def timed(where, fn):
        def run(*args, **kwargs):
            # a warm-started fit is the continuation after the trim
            step = "continuation" if steps[where] == "fit" and "init" in kwargs else steps[where]
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[step] = seconds.get(step, 0.0) + time.perf_counter() - t0
        return run

    pixels = np.asarray(Image.open(image).convert("RGB"))
    try:
        for where, fn in originals.items():
            setattr(*where, timed(where, fn))
        t0 = time.perf_counter()
        ratecontrol.encode_to_rate(pixels, bpp)
        seconds["total"] = time.perf_counter() - t0
    finally:
        for where, fn in originals.items():
            setattr(*where, fn)
    return seconds


def main() -> int:
    """Run the comparison (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old-python", required=True, help="Python of the installation to compare")
    ap.add_argument("--images", type=int, default=4, help="first N Kodak images")
    ap.add_argument("--bpp", type=float, default=0.5)
    ap.add_argument("--steps", action="store_true",
                    help="then time the steps of this checkout's encode of each image")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, image in enumerate(kodak_paths(args.images)):
            row = {"image": image.stem}
            # Alternate which goes first so neither always meets a warm cache.
            order = (("old", args.old_python), ("new", sys.executable))
            for name, python in order if i % 2 == 0 else order[::-1]:
                out = Path(tmp) / f"{name}.gsi"
                seconds, cpu = encode(python, image, out, args.bpp)
                row[name] = (seconds, *measure(out, image), cpu)
                print(f"{image.stem} {name}: {seconds:.1f} s ({cpu:.1f} CPU s), "
                      f"{row[name][1]:.3f} bpp, {row[name][2]:.2f} dB", file=sys.stderr, flush=True)
            rows.append(row)
    print(header(" ".join(["python", *sys.argv])))
    print("| image | old s | old CPU s | old bpp | old PSNR | new s | new CPU s | new bpp | new PSNR "
          "| speed-up (wall) | speed-up (CPU) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        (os_, ob, op, oc), (ns, nb, np_, nc) = r["old"], r["new"]
        print(f"| {r['image']} | {os_:.1f} | {oc:.1f} | {ob:.3f} | {op:.2f} | {ns:.1f} | {nc:.1f} | "
              f"{nb:.3f} | {np_:.2f} | {os_ / ns:.1f}x | {oc / nc:.1f}x |")
    median = {(k, i): statistics.median(r[k][i] for r in rows) for k in ("old", "new") for i in (0, 3)}
    mean = {k: statistics.mean(r[k][2] for r in rows) for k in ("old", "new")}
    print(f"\nmedian encode: old {median['old', 0]:.1f} s, new {median['new', 0]:.1f} s: "
          f"{median['old', 0] / median['new', 0]:.1f}x faster (CPU: old {median['old', 3]:.1f} s, "
          f"new {median['new', 3]:.1f} s, {median['old', 3] / median['new', 3]:.1f}x); "
          f"mean PSNR old {mean['old']:.2f} dB, new {mean['new']:.2f} dB")
    if args.steps:
        print("\n| image | fit s | allocate s | trims s | continuation s | finish s | total s |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for image in kodak_paths(args.images):
            t = time_steps(image, args.bpp)
            print(f"| {image.stem} | " + " | ".join(f"{t.get(k, 0.0):.2f}" for k in (
                "fit", "allocate", "trims", "continuation", "finish", "total")) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
