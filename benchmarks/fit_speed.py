"""Fit and decode speed of this checkout against another installation, one run.

The default `gscodec.fit` of Kodak photos (768 x 512) at ``--splats`` splats
and ``--iterations`` iterations, run by this checkout's Python and by an older
installation's (e.g. a virtual environment built from a git worktree of an
earlier commit), alternating per image so that both see the same machine
load: wall and CPU seconds per fit and PSNR of the fit's render. Then the
decode of one file (this checkout's fit of the first image, written at fp16)
by both: median wall milliseconds of ``gscodec.decode``. Prints a markdown
table and the ratios of the medians. The older installation must read the
file format this checkout writes (format v3: commits from 2026-11 on).

    git worktree add --detach ../head HEAD
    (cd ../head && python3 -m venv .venv && .venv/bin/pip install .)
    .venv/bin/python benchmarks/fit_speed.py --old-python ../head/.venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

import gscodec
from gscodec import format as fmt
from common import header, kodak_paths

# Run by each installation's Python: one fit, or repeated decodes of one file;
# prints one JSON line.
_CHILD = r"""
import json, resource, sys, time
import numpy as np
from PIL import Image
import gscodec
from gscodec.metrics import psnr
task, path = sys.argv[1], sys.argv[2]
if task == "fit":
    pixels = np.asarray(Image.open(path).convert("RGB"))
    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    splats = gscodec.fit(pixels, int(sys.argv[3]), iterations=int(sys.argv[4]))
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(json.dumps({"wall": wall, "cpu": cpu,
                      "psnr": psnr(np.asarray(gscodec.render(splats)), pixels)}))
else:
    data = open(path, "rb").read()
    gscodec.decode(data)
    times = []
    for _ in range(int(sys.argv[3])):
        t0 = time.perf_counter()
        gscodec.decode(data)
        times.append(time.perf_counter() - t0)
    times.sort()
    print(json.dumps({"ms": 1e3 * times[len(times) // 2]}))
"""


def child(python: str, *args: object) -> dict:
    """The JSON line that ``_CHILD`` prints when run by ``python`` with ``args``."""
    out = subprocess.run([python, "-c", _CHILD, *map(str, args)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    """Run the comparison (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old-python", required=True, help="Python of the installation to compare")
    ap.add_argument("--images", type=int, default=4, help="first N Kodak images")
    ap.add_argument("--splats", type=int, default=4000)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--decode-repeats", type=int, default=21)
    args = ap.parse_args()
    pythons = {"old": args.old_python, "new": sys.executable}
    rows = []
    for i, image in enumerate(kodak_paths(args.images)):
        row = {"image": image.stem}
        # Alternate which goes first so neither always meets a warm cache.
        for name in ("old", "new") if i % 2 == 0 else ("new", "old"):
            row[name] = child(pythons[name], "fit", image, args.splats, args.iterations)
            print(f"{image.stem} {name}: {row[name]['wall']:.2f} s ({row[name]['cpu']:.2f} CPU s), "
                  f"{row[name]['psnr']:.3f} dB", file=sys.stderr, flush=True)
        rows.append(row)
    with tempfile.TemporaryDirectory() as tmp:
        pixels = np.asarray(Image.open(kodak_paths(1)[0]).convert("RGB"))
        path = Path(tmp) / "decode.gsi"
        splats = gscodec.fit(pixels, args.splats, iterations=args.iterations)
        path.write_bytes(fmt.dumps(splats, precision="fp16"))
        decode = {name: child(pythons[name], "decode", path, args.decode_repeats)["ms"]
                  for name in ("old", "new")}

    print(header(" ".join(["python", *sys.argv])))
    print(f"Fit: {args.splats} splats, {args.iterations} iterations, default settings.\n")
    print("| image | old s | old CPU s | old PSNR | new s | new CPU s | new PSNR | speed-up (wall) "
          "| speed-up (CPU) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        o, n = r["old"], r["new"]
        print(f"| {r['image']} | {o['wall']:.2f} | {o['cpu']:.2f} | {o['psnr']:.3f} | {n['wall']:.2f} | "
              f"{n['cpu']:.2f} | {n['psnr']:.3f} | {o['wall'] / n['wall']:.2f}x | "
              f"{o['cpu'] / n['cpu']:.2f}x |")
    med = {(k, f): statistics.median(r[k][f] for r in rows) for k in pythons for f in ("wall", "cpu")}
    mean = {k: statistics.mean(r[k]["psnr"] for r in rows) for k in pythons}
    print(f"\nmedian fit: old {med['old', 'wall']:.2f} s, new {med['new', 'wall']:.2f} s: "
          f"{med['old', 'wall'] / med['new', 'wall']:.2f}x (CPU {med['old', 'cpu']:.2f} → "
          f"{med['new', 'cpu']:.2f} s, {med['old', 'cpu'] / med['new', 'cpu']:.2f}x); mean PSNR "
          f"old {mean['old']:.3f} dB, new {mean['new']:.3f} dB")
    print(f"decode of {kodak_paths(1)[0].stem} at {len(splats)} splats (fp16 file), median of "
          f"{args.decode_repeats}: old {decode['old']:.1f} ms, new {decode['new']:.1f} ms: "
          f"{decode['old'] / decode['new']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
