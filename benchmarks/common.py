"""Shared benchmark helpers: the data sets of ../shared/ANCHORS.md and a machine line."""

from __future__ import annotations

import datetime
import statistics
import time
import os
import platform
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

# ../shared/data next to the checkout; GSCODEC_SHARED_DATA overrides it (worktrees).
SHARED_DATA = Path(os.environ.get("GSCODEC_SHARED_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))
KODAK = SHARED_DATA / "kodak"


def kodak_paths(limit: int | None = None) -> list[Path]:
    """The 24 Kodak PNGs in name order (the first ``limit`` of them)."""
    paths = sorted(KODAK.glob("kodim*.png"))
    if not paths:
        raise SystemExit(f"no Kodak images under {KODAK}")
    return paths[:limit]


def kodak224(path: Path) -> np.ndarray:
    """Kodak-224: resize (LANCZOS) so the short side is 224, centre-crop 224 x 224."""
    im = Image.open(path).convert("RGB")
    scale = 224 / min(im.size)
    im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
    left, top = (im.width - 224) // 2, (im.height - 224) // 2
    return np.asarray(im.crop((left, top, left + 224, top + 224)))


def machine() -> str:
    """One line naming this machine, for the benchmark record."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def header(command: str) -> str:
    """Markdown lines recording how, when and where a figure was measured."""
    today = datetime.date.today().isoformat()
    return f"Command: `{command}`  \nDate: {today}  \nMachine: {machine()}\n"


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn``, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
