"""The `Splats` type: one image as a set of colored anisotropic 2D Gaussians."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .limits import MAX_SIDE

__all__ = ["Splats", "FIELDS"]

#: Column names of the (N, 8) array form, in order.
FIELDS = ("x", "y", "l11", "l21", "l22", "r", "g", "b")


@dataclass(frozen=True, eq=False)
class Splats:
    """N Gaussians fitted to an image of reference size ``width`` x ``height``.

    All geometry is normalized to the image, so the same splats render at any
    output size:

    - ``xy`` (N, 2): centre, as a fraction of width and height (0..1).
    - ``chol`` (N, 3): ``(l11, l21, l22)``, the lower-triangular Cholesky factor
      ``L`` of the covariance ``Sigma = L Lᵀ`` in normalized coordinates, i.e.
      ``L_pixels = diag(W, H) @ L``. ``l11`` and ``l22`` are positive.
    - ``rgb`` (N, 3): colour weights (0..1 scale; an additive sum, so values
      outside 0..1 are legal).

    Arrays are float32 and read-only; build a new `Splats` to change them.
    """

    xy: np.ndarray
    chol: np.ndarray
    rgb: np.ndarray
    width: int
    height: int

    def __post_init__(self) -> None:
        n = None
        for name, cols in (("xy", 2), ("chol", 3), ("rgb", 3)):
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray):
                raise TypeError(f"Splats.{name} must be a numpy array, got {type(arr).__name__}")
            if arr.ndim != 2 or arr.shape[1] != cols:
                raise ValueError(f"Splats.{name} must have shape (N, {cols}), got {arr.shape}")
            if n is not None and arr.shape[0] != n:
                raise ValueError(f"Splats.{name} has {arr.shape[0]} rows, expected {n}")
            n = arr.shape[0]
            if not np.issubdtype(arr.dtype, np.floating):
                raise TypeError(f"Splats.{name} must be floating point, got {arr.dtype}")
            frozen = np.array(arr, dtype=np.float32, order="C", copy=True)
            if not np.isfinite(frozen).all():
                raise ValueError(f"Splats.{name} contains NaN or infinity")
            frozen.flags.writeable = False
            object.__setattr__(self, name, frozen)
        if not (self.chol[:, 0] > 0).all() or not (self.chol[:, 2] > 0).all():
            raise ValueError("Splats.chol: l11 and l22 (columns 0 and 2) must be positive")
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"Splats.{name} must be an int, got {type(value).__name__}")
            if not 1 <= value <= MAX_SIDE:
                raise ValueError(f"Splats.{name} must be in 1..{MAX_SIDE}, got {value}")
            object.__setattr__(self, name, int(value))

    def __len__(self) -> int:
        return self.xy.shape[0]

    def __repr__(self) -> str:
        return f"Splats(n={len(self)}, width={self.width}, height={self.height})"

    @property
    def covariance(self) -> np.ndarray:
        """(N, 3) ``(sxx, sxy, syy)`` of ``Sigma = L Lᵀ``, normalized coordinates."""
        l11, l21, l22 = self.chol.T.astype(np.float64)
        return np.stack([l11 * l11, l11 * l21, l21 * l21 + l22 * l22], axis=1)

    def to_array(self) -> np.ndarray:
        """Return the (N, 8) float32 array ``x, y, l11, l21, l22, r, g, b``."""
        return np.concatenate([self.xy, self.chol, self.rgb], axis=1)

    @classmethod
    def from_array(cls, array: np.ndarray, width: int, height: int) -> "Splats":
        """Build `Splats` from an (N, 8) array laid out as `to_array` returns it."""
        array = np.asarray(array)
        if array.ndim != 2 or array.shape[1] != 8:
            raise ValueError(f"array must have shape (N, 8), got {array.shape}")
        return cls(array[:, 0:2], array[:, 2:5], array[:, 5:8], width, height)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Splats):
            return NotImplemented
        return (
            self.width == other.width
            and self.height == other.height
            and np.array_equal(self.to_array(), other.to_array())
        )
