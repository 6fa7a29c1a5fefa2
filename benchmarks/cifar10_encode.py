"""CIFAR-10 dataset encoding on this CPU: images/s and PSNR at 16, 32 and 64 splats.

Encodes the CIFAR-10 train shards (45,000 images, webdataset tars) and the
test set (10,000 images, class folders) at native 32x32 with
`gscodec.datasets.encode_dataset`, into ``OUT_ROOT/cifar10_gs{N}/{train,test}/``
(reused as training data by ``gscodec.clip``), and prints a markdown table.
Reruns skip finished shards (their time is then read from the manifests).

    python benchmarks/cifar10_encode.py                       # everything
    python benchmarks/cifar10_encode.py --train-shards 1 --no-test --out-root /tmp/bench
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import gscodec
from gscodec.datasets import encode_dataset

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def from_manifests(output: Path) -> tuple[int, float]:
    """(images, seconds) summed over the shard manifests in ``output``."""
    images = seconds = 0.0
    for path in output.glob("*.manifest.json"):
        m = json.loads(path.read_text())
        images += m["count"] + m["failures"]
        seconds += m["seconds"]
    return int(images), seconds


def run_one(inputs: list[str], output: Path, args: argparse.Namespace, splats: int) -> dict:
    start = time.monotonic()
    summary = encode_dataset(
        inputs, output, splats=splats, iterations=args.iterations, size=None,
        precision=args.precision, device=args.device, batch_size=args.batch_size,
        workers=args.workers, shard_size=1000, progress=not args.quiet,
    )
    wall = time.monotonic() - start
    if summary["errors"]:
        raise SystemExit(f"{output}: shards not encoded: {summary['errors']}")
    run = summary["run"]
    if run["shards_skipped"]:
        images, seconds = from_manifests(output)  # resumed: the manifests hold every shard's time
        how = "manifests"
    else:
        images, seconds = run["images_encoded"] + run["images_failed"], wall
        how = "wall"
    return {
        "images": summary["count"],
        "failures": summary["failures"],
        "seconds": seconds,
        "rate": images / seconds if seconds else float("nan"),
        "how": how,
        "psnr_mean": summary["psnr_mean"],
        "psnr_min": summary["psnr_min"],
        "gsi_bytes": summary["gsi_bytes"] / max(1, summary["count"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--splats", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--iterations", type=int, default=75)
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--train-shards", type=int, default=9, help="first N of the 9 train shards")
    parser.add_argument("--no-test", action="store_true", help="skip the 10,000 test images")
    parser.add_argument("--out-root", type=Path, default=REPO / "build")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args()

    train = sorted(str(p) for p in (args.data / "cifar10_train_wds").glob("cifar10-train-*.tar"))
    train = train[: args.train_shards]
    test_dir = args.data / "cifar10_test_jpg"
    if not train:
        raise SystemExit(f"no CIFAR-10 train shards under {args.data / 'cifar10_train_wds'}")
    started = datetime.datetime.now(datetime.timezone.utc)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = []
    for splats in args.splats:
        splits = [("train", train)] + ([] if args.no_test else [("test", [str(test_dir)])])
        for split, inputs in splits:
            output = args.out_root / f"cifar10_gs{splats}" / split
            result = run_one(inputs, output, args, splats)
            rows.append((splats, split, output, result))
            print(f"{split} {splats} splats: {result['images']} images, "
                  f"{result['rate']:.1f} img/s, {result['psnr_mean']:.2f} dB -> {output}",
                  file=sys.stderr, flush=True)

    info = gscodec.backends()
    print(f"**Command:** `python {' '.join(shlex.quote(a) for a in sys.argv)}`  ")
    print(f"**Date:** {started:%Y-%m-%d %H:%M} UTC  ")
    print(f"**Machine:** {cpu_name()}, {info['cpu_threads']} CPU threads "
          f"(shared; 1-min load {load:.1f} at start), CUDA available: {info['cuda_available']}  ")
    print(f"**Settings:** native 32x32, {args.iterations} iterations, precision {args.precision}, "
          f"device {args.device}, batch {args.batch_size}, {args.workers} worker(s)\n")
    print("| splats | split | images | failed | time (s) | images/s | mean PSNR (dB) "
          "| min PSNR (dB) | .gsi bytes/image | bpp |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for splats, split, _, r in rows:
        print(f"| {splats} | {split} | {r['images']} | {r['failures']} | {r['seconds']:.0f} "
              f"| {r['rate']:.1f} | {r['psnr_mean']:.2f} | {r['psnr_min']:.2f} "
              f"| {r['gsi_bytes']:.0f} | {r['gsi_bytes'] * 8 / 1024:.2f} |")
    print("\nPSNR: the stored .gsi as decoded, against the 32x32 JPEG-decoded input. "
          "images/s: wall clock of the run (summed shard times when resumed).")
    print("Shards: " + ", ".join(sorted({str(o.parent) for _, _, o, _ in rows})))


if __name__ == "__main__":
    main()
