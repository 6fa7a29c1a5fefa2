"""Rate-distortion of gscodec on Kodak beside JPEG, WebP and AVIF (Pillow), one run.

For every image and every target bpp: gscodec's achieved bpp (file bytes x 8 /
pixels), PSNR (RGB, 8-bit, per image then averaged), encode seconds and
decode milliseconds (median of 3: parse + decompress + render at 768x512);
JPEG, WebP and AVIF at the quality whose file lands closest to the same
target. BD-rate (Bjontegaard: cubic fits of log rate against PSNR on the
mean curves, integrated over the PSNR range both cover) of gscodec against
each. Writes a JSON file (updated after every image; ``--resume`` keeps the
rows of a partial run made with the same settings), a PSNR-vs-bpp plot (PNG,
drawn with Pillow's ImageDraw: the codec itself depends on numpy, pillow and
zstandard only) and prints a markdown table.

    nice -n 10 .venv/bin/python benchmarks/rate_distortion.py \\
        --out docs/rd-kodak.json --plot docs/rd-kodak.png

``--iterations`` defaults to the encoder's own default (what `gscodec encode`
does).
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import gscodec
from gscodec.metrics import psnr

from common import KODAK

REPO = Path(__file__).resolve().parents[1]
#: Pillow codecs compared, with their encoder options (JPEG with optimized Huffman
#: tables, WebP at its slowest method, AVIF at libavif's default speed).
PILLOW = {"jpeg": ("JPEG", {"optimize": True}), "webp": ("WEBP", {"method": 6}),
          "avif": ("AVIF", {"speed": 6})}
TARGETS = (0.125, 0.25, 0.5, 1.0)
#: GaussianImage (ECCV'24) on Kodak, from ../shared/ANCHORS.md: (bpp, PSNR).
GAUSSIANIMAGE = ((0.114, 24.7), (0.43, 27.4), (0.71, 28.7), (1.0, 29.7))


def pillow_codec(pixels: np.ndarray, target: float, codec: str,
                 cache: dict[int, tuple[float, bytes]]) -> dict:
    """Encode with Pillow at the quality whose size is closest to ``target`` bpp.
    ``cache`` holds this image's encodes by quality (shared by the targets)."""
    h, w = pixels.shape[:2]
    im = Image.fromarray(pixels)
    fmt, options = PILLOW[codec]

    def at(quality: int) -> tuple[float, bytes]:
        if quality not in cache:
            buf = io.BytesIO()
            im.save(buf, fmt, quality=quality, **options)
            cache[quality] = (len(buf.getvalue()) * 8 / (w * h), buf.getvalue())
        return cache[quality]

    lo, hi = 1, 100  # bpp grows with quality: binary search the crossing
    while lo < hi:
        mid = (lo + hi) // 2
        if at(mid)[0] < target:
            lo = mid + 1
        else:
            hi = mid
    candidates = [at(qq) + (qq,) for qq in {max(1, lo - 1), lo}]
    bpp, data, quality = min(candidates, key=lambda c: abs(c[0] - target))
    t0 = time.perf_counter()
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    decode_ms = (time.perf_counter() - t0) * 1000
    return {"bpp": bpp, "psnr": psnr(decoded, pixels), "quality": quality,
            "decode_ms": decode_ms}


def gscodec_codec(pixels: np.ndarray, target: float, iterations: int | None) -> dict:
    """Encode with rate control to ``target`` bpp; time encode and decode."""
    h, w = pixels.shape[:2]
    options = {} if iterations is None else {"iterations": iterations}
    t0 = time.perf_counter()
    gsi = gscodec.encode(pixels, bpp=target, **options)
    encode_s = time.perf_counter() - t0
    data = gsi.tobytes()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        decoded = np.asarray(gscodec.decode(data))
        times.append((time.perf_counter() - t0) * 1000)
    return {"bpp": len(data) * 8 / (w * h), "psnr": psnr(decoded, pixels),
            "n_splats": gsi.n_splats, "precision": gsi.precision,
            "encode_s": encode_s, "decode_ms": statistics.median(times)}


def summarize(rows: list[dict], targets: list[float]) -> list[dict]:
    """Per target and codec: mean bpp and PSNR, median encode s / decode ms."""
    out = []
    for t in targets:
        entry: dict = {"target_bpp": t}
        for codec in ("gscodec", *PILLOW):
            rs = [r[codec] for r in rows if r["target_bpp"] == t]
            if not rs:
                continue
            entry[codec] = {
                "bpp": statistics.mean(r["bpp"] for r in rs),
                "psnr": statistics.mean(r["psnr"] for r in rs),
                "decode_ms": statistics.median(r["decode_ms"] for r in rs),
                "images": len(rs),
            }
            if codec == "gscodec":
                entry[codec]["encode_s"] = statistics.median(r["encode_s"] for r in rs)
                entry[codec]["n_splats"] = statistics.median(r["n_splats"] for r in rs)
                entry[codec]["within_10pct"] = sum(abs(r["bpp"] / t - 1) <= 0.1 for r in rs)
                for other in PILLOW:
                    entry[codec][f"above_{other}"] = sum(
                        r["gscodec"]["psnr"] > r[other]["psnr"]
                        for r in rows if r["target_bpp"] == t)
        out.append(entry)
    return out


def bd_rate(anchor: list[tuple[float, float]], test: list[tuple[float, float]]) -> float | None:
    """Bjontegaard delta rate of ``test`` against ``anchor`` in percent (negative:
    fewer bits at equal PSNR), from (bpp, PSNR) points: cubic fits of log rate
    against PSNR, integrated over the PSNR interval both curves cover. None
    when the curves do not overlap or have fewer than 4 points."""
    if len(anchor) < 4 or len(test) < 4:
        return None
    lo = max(min(p for _, p in anchor), min(p for _, p in test))
    hi = min(max(p for _, p in anchor), max(p for _, p in test))
    if hi <= lo:
        return None
    integrals = []
    for pts in (anchor, test):
        poly = np.polyint(np.polyfit([p for _, p in pts], [np.log(b) for b, _ in pts], 3))
        integrals.append((np.polyval(poly, hi) - np.polyval(poly, lo)) / (hi - lo))
    return float((np.exp(integrals[1] - integrals[0]) - 1) * 100)


def bd_rates(summary: list[dict]) -> dict[str, float | None]:
    """gscodec's BD-rate against each Pillow codec, on the mean curves."""
    test = [(e["gscodec"]["bpp"], e["gscodec"]["psnr"]) for e in summary]
    return {c: bd_rate([(e[c]["bpp"], e[c]["psnr"]) for e in summary], test) for c in PILLOW}


def markdown(summary: list[dict]) -> str:
    """The summary as a markdown table."""
    lines = [
        "| target bpp | gscodec bpp | gscodec PSNR | encode s | decode ms | splats "
        "| JPEG bpp | JPEG PSNR | WebP bpp | WebP PSNR | AVIF bpp | AVIF PSNR "
        "| images above JPEG / WebP / AVIF |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in summary:
        g, j, w, a = e["gscodec"], e["jpeg"], e["webp"], e["avif"]
        lines.append(
            f"| {e['target_bpp']:.3f} | {g['bpp']:.3f} | {g['psnr']:.2f} | {g['encode_s']:.1f} "
            f"| {g['decode_ms']:.0f} | {g['n_splats']:.0f} | {j['bpp']:.3f} | {j['psnr']:.2f} "
            f"| {w['bpp']:.3f} | {w['psnr']:.2f} | {a['bpp']:.3f} | {a['psnr']:.2f} "
            f"| {g['above_jpeg']} / {g['above_webp']} / {g['above_avif']} of {g['images']} |")
    rates = bd_rates(summary)
    lines.append("")
    lines.append("BD-rate of gscodec (mean curves): " + ", ".join(
        f"vs {c.upper()} {'n/a' if r is None else f'{r:+.1f}%'}" for c, r in rates.items()))
    return "\n".join(lines)


def plot(summary: list[dict], path: Path, title: str) -> None:
    """PSNR vs bpp for gscodec, JPEG, WebP and the GaussianImage anchors."""
    W, H, left, right, top, bottom = 900, 600, 80, 190, 50, 70
    series = {
        "gscodec": ([(e["gscodec"]["bpp"], e["gscodec"]["psnr"]) for e in summary],
                    (200, 30, 30)),
        "JPEG (Pillow)": ([(e["jpeg"]["bpp"], e["jpeg"]["psnr"]) for e in summary],
                          (30, 90, 200)),
        "WebP (Pillow)": ([(e["webp"]["bpp"], e["webp"]["psnr"]) for e in summary],
                          (30, 150, 60)),
        "AVIF (Pillow)": ([(e["avif"]["bpp"], e["avif"]["psnr"]) for e in summary],
                          (150, 60, 170)),
        "GaussianImage (paper)": (list(GAUSSIANIMAGE), (140, 140, 140)),
    }
    xs = [x for pts, _ in series.values() for x, _ in pts]
    ys = [y for pts, _ in series.values() for _, y in pts]
    x0, x1 = 0.0, max(1.1, max(xs) * 1.05)
    y0, y1 = np.floor(min(ys) - 1), np.ceil(max(ys) + 1)
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()

    def px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (W - left - right),
                H - bottom - (y - y0) / (y1 - y0) * (H - top - bottom))

    for gx in np.arange(0, x1 + 1e-9, 0.125):
        a, b = px(gx, y0), px(gx, y1)
        d.line([a, b], fill=(225, 225, 225))
        if abs(gx * 4 - round(gx * 4)) < 1e-9:
            d.text((a[0] - 12, a[1] + 6), f"{gx:.2f}", fill="black", font=font)
    for gy in np.arange(y0, y1 + 1e-9, 1.0):
        a, b = px(x0, gy), px(x1, gy)
        d.line([a, b], fill=(225, 225, 225))
        d.text((a[0] - 30, a[1] - 6), f"{gy:.0f}", fill="black", font=font)
    d.rectangle([px(x0, y1), px(x1, y0)], outline="black")
    d.text((left + (W - left - right) // 2 - 60, H - 35), "bits per pixel (file)",
           fill="black", font=font)
    d.text((10, top - 22), "PSNR (dB, RGB)", fill="black", font=font)
    d.text((left + 150, 15), title, fill="black", font=font)
    for i, (name, (pts, colour)) in enumerate(series.items()):
        pts = sorted(pts)
        d.line([px(x, y) for x, y in pts], fill=colour, width=3)
        for x, y in pts:
            cx, cy = px(x, y)
            d.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill=colour)
        ly = top + 20 + 22 * i
        d.line([(W - right + 15, ly), (W - right + 45, ly)], fill=colour, width=3)
        d.text((W - right + 52, ly - 6), name, fill="black", font=font)
    img.save(path)


def main() -> int:
    """Run the benchmark (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=KODAK)
    ap.add_argument("--images", type=int, default=0, help="first N images only (0: all)")
    ap.add_argument("--targets", type=float, nargs="+", default=list(TARGETS))
    ap.add_argument("--iterations", type=int, default=None,
                    help="fit iterations (default: the encoder's default)")
    ap.add_argument("--resume", action="store_true",
                    help="keep the rows of --out made with the same settings")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "rd-kodak.json")
    ap.add_argument("--plot", type=Path, default=REPO / "docs" / "rd-kodak.png")
    args = ap.parse_args()

    paths = sorted(args.data.glob("kodim*.png"))
    paths = [p for p in paths if Image.open(p).size in ((768, 512), (512, 768))]
    if args.images:
        paths = paths[:args.images]
    if not paths:
        print(f"no Kodak images in {args.data}", file=sys.stderr)
        return 1
    meta = {
        "command": " ".join(sys.argv),
        "default_iterations": gscodec.engine.DEFAULT_ITERATIONS,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {platform.processor()}".strip(),
        "cpu_threads": gscodec.backends()["cpu_threads"],
        "iterations": args.iterations,
        "gscodec": gscodec.__version__,
        "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True).stdout.strip(),
        "pillow": Image.__version__,
        "images": [p.name for p in paths],
    }
    rows: list[dict] = []
    if args.resume and args.out.exists():
        old = json.loads(args.out.read_text())
        same = all(old["meta"].get(k) == meta[k] for k in ("iterations", "default_iterations",
                                                            "gscodec", "commit"))
        rows = old["rows"] if same else []
        print(f"resuming with {len(rows)} rows" if same else "settings differ: starting over",
              file=sys.stderr)
    done = {(r["image"], r["target_bpp"]) for r in rows}
    start = time.perf_counter()
    summary = summarize(rows, args.targets)
    for i, path in enumerate(paths):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        caches: dict[str, dict] = {c: {} for c in PILLOW}
        for t in args.targets:
            if (path.name, t) in done:
                continue
            row = {"image": path.name, "target_bpp": t,
                   "gscodec": gscodec_codec(pixels, t, args.iterations),
                   **{c: pillow_codec(pixels, t, c, caches[c]) for c in PILLOW}}
            rows.append(row)
            g = row["gscodec"]
            print(f"[{i + 1}/{len(paths)}] {path.name} @ {t}: gscodec {g['bpp']:.3f} bpp "
                  f"{g['psnr']:.2f} dB ({g['encode_s']:.0f} s) | JPEG {row['jpeg']['psnr']:.2f} "
                  f"| WebP {row['webp']['psnr']:.2f} | AVIF {row['avif']['psnr']:.2f}  [{time.perf_counter() - start:.0f} s]",
                  file=sys.stderr, flush=True)
        summary = summarize(rows, args.targets)
        args.out.write_text(json.dumps({"meta": meta, "summary": summary, "rows": rows},
                                       indent=1))
    meta["wall_s"] = time.perf_counter() - start
    meta["bd_rate_percent"] = bd_rates(summary)
    args.out.write_text(json.dumps({"meta": meta, "summary": summary, "rows": rows}, indent=1))
    iterations = args.iterations or gscodec.engine.DEFAULT_ITERATIONS
    plot(summary, args.plot, f"Kodak ({len(paths)} images), gscodec default encoder "
                             f"({iterations} iterations), CPU")
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
