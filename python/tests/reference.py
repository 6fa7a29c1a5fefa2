"""Plain NumPy twin of the render equation (docs/format.md), for the tests.

It mirrors the C++ float32 arithmetic for the per-pixel power q (so both sides
agree on which pixels fall inside the cutoff) and evaluates weights and sums in
float64.
"""

from __future__ import annotations

import numpy as np

from gscodec import _core

CUTOFF = np.float32(_core.POWER_CUTOFF)


def render_reference(params: np.ndarray, width: int, height: int) -> np.ndarray:
    """Render normalized (N, 8) float32 splats; returns H x W x 3 float64, unclamped."""
    p = np.asarray(params, dtype=np.float32)
    f32 = np.float32
    mx, my = p[:, 0] * f32(width), p[:, 1] * f32(height)
    a, b, c = p[:, 2] * f32(width), p[:, 3] * f32(height), p[:, 4] * f32(height)
    inv_a, inv_c = f32(1) / a, f32(1) / c
    px = np.arange(width, dtype=np.float32) + f32(0.5)
    py = np.arange(height, dtype=np.float32) + f32(0.5)
    out = np.zeros((height, width, 3))
    for i in range(p.shape[0]):
        dx = (px - mx[i])[None, :]
        dy = (py - my[i])[:, None]
        y1 = dx * inv_a[i]
        y2 = (dy - b[i] * y1) * inv_c[i]
        q = y1 * y1 + y2 * y2
        w = np.where(q <= CUTOFF, np.exp(-0.5 * q.astype(np.float64)), 0.0)
        out += w[:, :, None] * p[i, 5:8].astype(np.float64)
    return out


def to_u8(img: np.ndarray) -> np.ndarray:
    """The decoder's 8-bit conversion: clamp to [0, 1], scale, round half up."""
    return np.floor(np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def random_splats(rng: np.random.Generator, n: int, width: int, height: int) -> np.ndarray:
    """Random normalized splats of 1..6 pixel standard deviation, some rotated."""
    p = np.empty((n, 8), np.float32)
    p[:, 0] = rng.uniform(-0.1, 1.1, n)
    p[:, 1] = rng.uniform(-0.1, 1.1, n)
    p[:, 2] = rng.uniform(1, 6, n) / width
    p[:, 3] = rng.uniform(-4, 4, n) / height
    p[:, 4] = rng.uniform(1, 6, n) / height
    p[:, 5:8] = rng.uniform(-0.3, 1.0, (n, 3))
    return p


def smooth_image(rng, height, width):
    """A random but smooth test image (sums of a few sinusoids)."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    img = np.zeros((height, width, 3))
    for ch in range(3):
        for _ in range(3):
            fx, fy, ph = rng.uniform(0.5, 4, 3)
            img[:, :, ch] += np.sin(2 * np.pi * (fx * x + fy * y) + ph * 6)
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 255).astype(np.uint8)
