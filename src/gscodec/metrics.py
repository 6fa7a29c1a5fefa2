"""Image quality metrics shared by the CLI, the dataset pipeline and the benchmarks."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["psnr", "PSNR_MAX"]

#: PSNR reported for identical images (MSE 0) and the cap for near-identical
#: ones: finite, so means, JSON manifests and plots stay well defined.
PSNR_MAX = 100.0


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images of the same shape, in dB (peak 255).

    Identical images give `PSNR_MAX` (100 dB), never infinity; any other pair
    gives ``min(PSNR_MAX, 10 log10(255^2 / MSE))``.
    """
    reference, test = np.asarray(reference), np.asarray(test)
    if reference.shape != test.shape:
        raise ValueError(f"psnr: shapes differ: {reference.shape} vs {test.shape}")
    diff = reference.astype(np.float64) - test.astype(np.float64)
    mse = float(np.mean(diff * diff))
    return PSNR_MAX if mse == 0 else min(PSNR_MAX, 10.0 * math.log10(255.0**2 / mse))
