"""Fit Kodak and CIFAR-10 test images once and cache the Splats as .npz (bitstream benchmarks).

    nice -n 10 .venv/bin/python benchmarks/fit_cache.py kodak --limit 24
    nice -n 10 .venv/bin/python benchmarks/fit_cache.py cifar --limit 500
    nice -n 10 .venv/bin/python benchmarks/fit_cache.py kodak224 --limit 24

Kodak: 3000 splats, 300 iterations at 768x512. CIFAR-10 test (the first `limit`
images, classes in name order, 50 per class): 16, 32 and 64 splats, 300 iterations.
Kodak-224 (`common.kodak224`): 400 splats, 300 iterations.
Fits go to benchmarks/out/fits/ and are reused by bitstream_v2.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, kodak224, kodak_paths  # noqa: E402

import gscodec  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "fits"
CIFAR = SHARED_DATA / "cifar10_test_jpg"
KODAK_SPLATS, KODAK_ITERATIONS = 3000, 300
CIFAR_SPLATS, CIFAR_ITERATIONS = (16, 32, 64), 300
KODAK224_SPLATS, KODAK224_ITERATIONS = 400, 300


def cifar_paths(limit: int) -> list[Path]:
    """``limit`` CIFAR-10 test images, the same number from each class (name order)."""
    classes = sorted(p for p in CIFAR.iterdir() if p.is_dir())
    per_class = -(-limit // len(classes))
    paths = [p for c in classes for p in sorted(c.glob("*.jpg"))[:per_class]]
    return paths[:limit]


def cache_path(kind: str, name: str, n_splats: int) -> Path:
    return OUT / f"{kind}-{name}-{n_splats}.npz"


def load(path: Path) -> gscodec.Splats:
    z = np.load(path)
    return gscodec.Splats.from_array(z["splats"], int(z["width"]), int(z["height"]))


def fit_cached(kind: str, image_path: Path, n_splats: int, iterations: int) -> gscodec.Splats:
    name = image_path.stem if kind != "cifar" else f"{image_path.parent.name}{image_path.stem}"
    out = cache_path(kind, name, n_splats)
    if out.exists():
        return load(out)
    image = (kodak224(image_path) if kind == "kodak224"
             else np.asarray(Image.open(image_path).convert("RGB")))
    splats = gscodec.fit(image, n_splats, iterations=iterations)
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(out, splats=splats.to_array(), width=splats.width, height=splats.height)
    return splats


def kodak_fits(limit: int) -> list[tuple[str, gscodec.Splats]]:
    return [(p.stem, fit_cached("kodak", p, KODAK_SPLATS, KODAK_ITERATIONS))
            for p in kodak_paths(limit)]


def kodak224_fits(limit: int) -> list[gscodec.Splats]:
    return [fit_cached("kodak224", p, KODAK224_SPLATS, KODAK224_ITERATIONS)
            for p in kodak_paths(limit)]


def cifar_fits(limit: int, n_splats: int) -> list[gscodec.Splats]:
    return [fit_cached("cifar", p, n_splats, CIFAR_ITERATIONS) for p in cifar_paths(limit)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("which", choices=["kodak", "kodak224", "cifar"])
    ap.add_argument("--limit", type=int, default=24)
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.which == "kodak":
        for p in kodak_paths(args.limit):
            fit_cached("kodak", p, KODAK_SPLATS, KODAK_ITERATIONS)
            print(f"{p.stem} {time.perf_counter() - t0:.0f} s", flush=True)
    elif args.which == "kodak224":
        kodak224_fits(args.limit)
        print(f"kodak224 {time.perf_counter() - t0:.0f} s", flush=True)
    else:
        for n in CIFAR_SPLATS:
            cifar_fits(args.limit, n)
            print(f"cifar {n} splats {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
