"""Splat-space augmentation: one random view, applied to splats and (for the teacher) to pixels.

A view is drawn once (`draw_view`) and applied to the decoded splats
(`augment_splats`) and, where a teacher reads the RGB original, to that
image (`augment_image`), so student and teacher see the same crop, flip and
colours. What each transform does to a splat row ``x, y, l11, l21, l22, r, g, b``
(positions in 0..1 of the image, ``L`` the Cholesky factor of the covariance):

- horizontal flip: ``x -> 1 - x``; the covariance's ``sxy`` changes sign, so ``l21 -> -l21``.
- crop / zoom to the square window ``[x0, x0 + s] x [y0, y0 + s]`` (``s`` <= 1, in
  normalized units, so the aspect ratio is kept): ``xy -> (xy - xy0) / s``,
  ``L -> L / s``; splats whose centre falls outside the window are dropped.
- colour jitter: brightness (``c -> b c``), contrast (``c -> m + k (c - m)``,
  ``m`` the mean luminance of the splats' colours) and saturation
  (``c -> y + t (c - y)``, ``y`` the splat's luminance), in that order as
  PIL's ``ImageEnhance`` applies them to the image. Brightness and saturation
  are linear in the colours and so match the rendered image exactly;
  contrast uses the mean splat colour, an approximation of the mean pixel.
- splat dropout: each splat is dropped with probability ``p`` (student only;
  the teacher sees every pixel, so the student learns to ignore missing splats).

At least one splat is always kept. Views are drawn from the caller's
``random.Random``: the same seed gives the same views.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np
from PIL import Image, ImageEnhance

__all__ = ["SplatAugment", "View", "draw_view", "augment_splats", "augment_image"]

#: ITU-R 601 luma weights, as PIL's ``convert("L")`` uses them.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class SplatAugment:
    """How strongly to augment (all off by default).

    ``flip``: probability of a horizontal flip. ``min_crop``: smallest crop side
    as a fraction of the image (1 = no crop; the side is uniform in
    ``[min_crop, 1]``, the window uniform inside the image). ``jitter``:
    brightness, contrast and saturation factors uniform in ``[1 - j, 1 + j]``.
    ``dropout``: probability of dropping each splat (student side only).
    """

    flip: float = 0.0
    min_crop: float = 1.0
    jitter: float = 0.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name, low, high in (
            ("flip", 0, 1), ("min_crop", 1e-3, 1), ("jitter", 0, 1), ("dropout", 0, 0.99)
        ):  # fmt: skip
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"SplatAugment.{name} must be in [{low}, {high}], got {value}")

    @property
    def enabled(self) -> bool:
        """Whether any transform is on."""
        return self.flip > 0 or self.min_crop < 1 or self.jitter > 0 or self.dropout > 0


@dataclass(frozen=True)
class View:
    """One drawn view: flip, crop window ``(x0, y0, side)``, colour factors.

    The identity view is ``View()``. Stored as a dict beside precomputed teacher embeddings.
    """

    flip: bool = False
    x0: float = 0.0
    y0: float = 0.0
    side: float = 1.0
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "View":
        """Inverse of `as_dict`."""
        return cls(**values)


def draw_view(cfg: SplatAugment, rng: random.Random) -> View:
    """A random view per ``cfg`` (the identity when nothing is enabled)."""
    flip = cfg.flip > 0 and rng.random() < cfg.flip
    side = rng.uniform(cfg.min_crop, 1.0) if cfg.min_crop < 1 else 1.0
    x0, y0 = (rng.uniform(0, 1 - side), rng.uniform(0, 1 - side)) if side < 1 else (0.0, 0.0)
    b, k, t = (
        (rng.uniform(1 - cfg.jitter, 1 + cfg.jitter) for _ in range(3))
        if cfg.jitter > 0
        else (1.0, 1.0, 1.0)
    )
    return View(flip, x0, y0, side, b, k, t)


def augment_splats(
    rows: np.ndarray, view: View, dropout: float = 0.0, rng: random.Random | None = None
) -> np.ndarray:
    """Apply ``view`` (and splat ``dropout``, drawn from ``rng``) to (N, 8) splat rows.

    Returns a new float32 (M, 8) array, 1 <= M <= N (N >= 1).
    """
    rows = np.array(rows, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] != 8:
        raise ValueError(f"splat rows must be (N, 8), got {rows.shape}")
    if len(rows) == 0:
        return rows
    if view.flip:
        rows[:, 0] = 1 - rows[:, 0]
        rows[:, 3] = -rows[:, 3]
    keep = np.ones(len(rows), dtype=bool)
    if view.side < 1:
        rows[:, 0] = (rows[:, 0] - view.x0) / view.side
        rows[:, 1] = (rows[:, 1] - view.y0) / view.side
        rows[:, 2:5] /= view.side
        keep &= ((rows[:, 0:2] >= 0) & (rows[:, 0:2] <= 1)).all(axis=1)
    if dropout > 0:
        if rng is None:
            raise ValueError("splat dropout needs an rng")
        keep &= np.array([rng.random() >= dropout for _ in range(len(rows))])
    if not keep.any():
        # keep the splat nearest the window's centre: an empty set would carry nothing
        centre = np.linalg.norm(rows[:, 0:2] - 0.5, axis=1)
        keep[int(np.argmin(centre))] = True
    rows = rows[keep]
    colour = rows[:, 5:8]
    colour *= view.brightness
    if view.contrast != 1:
        mean = float((colour @ _LUMA).mean())
        colour[:] = mean + view.contrast * (colour - mean)
    if view.saturation != 1:
        luma = (colour @ _LUMA)[:, None]
        colour[:] = luma + view.saturation * (colour - luma)
    return rows


def augment_image(image: Image.Image, view: View) -> Image.Image:
    """Apply ``view``'s flip, crop and colour factors to an RGB image (the teacher's side)."""
    if view.flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if view.side < 1:
        w, h = image.size
        box = (view.x0 * w, view.y0 * h, (view.x0 + view.side) * w, (view.y0 + view.side) * h)
        # resize back to the input size: the preprocessing that follows sees a full image
        image = image.resize((w, h), Image.Resampling.BICUBIC, box=box)
    for enhance, factor in (
        (ImageEnhance.Brightness, view.brightness),
        (ImageEnhance.Contrast, view.contrast),
        (ImageEnhance.Color, view.saturation),
    ):
        if factor != 1:
            image = enhance(image).enhance(factor)
    return image
