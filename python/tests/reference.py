"""The reference twin of the codec's math, for the tests of both backends.

Like gsplat's ``_torch_impl.py``: every stage of the compiled core written a
second time, the obvious way (dense, in PyTorch, no tiles), so that each CPU and
CUDA kernel is checked against an independent implementation and each
hand-written backward pass against autograd.

- per-splat math (cpp/splat_math.h, docs/format.md): normalized -> pixel
  parameters, the cutoff box, the Mahalanobis power, the weight and its cutoff;
- the forward render: every splat at every pixel centre;
- the fit's loss (cpp/cpu/loss.h);
- gradients by autograd, float64: of the render (the backward kernels' twin) and
  of the loss (the fused fit step's twin);
- a dense fit (DenseFit, dense_fit) in the fit's own units, which
  benchmarks/cpu_vs_torch.py also times against gscodec.fit.

Precision: the power q, and so which pixels fall inside the cutoff, is computed
in the parameters' dtype with the C++ operations in the C++ order, so float32
parameters make the decisions the float32 kernels make; weights and sums are
float64 unless a dtype is given. Test data generators live here too, so that
every test draws splats the same way.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from gscodec import _core

CUTOFF = float(_core.POWER_CUTOFF)  # the float32 constant; exact as a Python float
TILE = int(_core.TILE_SIZE)
MIN_STD = 0.3  # pixels: cpp/fit_options.h kMinStd, the fit's floor on standard deviations
ADAM_EPS = 1e-15  # cpp/fit_options.h kAdamEps (betas are torch's defaults, as there)

# ---- per-splat math ---------------------------------------------------------------


def pixel_scale(width: int, height: int, dtype: torch.dtype) -> torch.Tensor:
    """Per-column factor from normalized to pixel rows: L_pixels = diag(W, H) L."""
    return torch.tensor([width, height, width, height, height, 1, 1, 1], dtype=dtype)


def to_pixel(params, width: int, height: int) -> torch.Tensor:
    """Normalized (N, 8) splats -> pixel rows (x, y, a, b, c, r, g, b) of a
    width x height render, in the params' dtype (splat_math.h to_pixel_splat)."""
    p = torch.as_tensor(params)
    return p * pixel_scale(width, height, p.dtype)


def cutoff_box(pixel, width: int, height: int):
    """Inclusive pixel box [x0, x1] x [y0, y1] of each splat's cutoff ellipse,
    clipped to the image, and whether it is non-empty (splat_math.h
    cutoff_pixel_box), evaluated in the pixel rows' dtype."""
    p = torch.as_tensor(pixel)
    k = torch.sqrt(torch.tensor(CUTOFF, dtype=p.dtype))
    ext_x = k * p[:, 2].abs()
    ext_y = k * torch.sqrt(p[:, 3] * p[:, 3] + p[:, 4] * p[:, 4])

    def span(centre, extent, size):
        first = torch.ceil(centre - extent - 0.5)
        last = torch.floor(centre + extent - 0.5)
        nonempty = (first <= last) & (last >= 0) & (first <= size - 1)  # False for NaN
        return first.clamp(0, size - 1).long(), last.clamp(0, size - 1).long(), nonempty

    x0, x1, ok_x = span(p[:, 0], ext_x, width)
    y0, y1, ok_y = span(p[:, 1], ext_y, height)
    return x0, x1, y0, y1, ok_x & ok_y


def tile_bins(pixel, width: int, height: int):
    """The splats each TILE x TILE tile holds, as CSR (offsets, ids): every splat
    in every tile its cutoff box touches, tiles row-major, ids ascending (the
    CPU and CUDA binning)."""
    x0, x1, y0, y1, nonempty = (t.numpy() for t in cutoff_box(pixel, width, height))
    tiles_x, tiles_y = -(-width // TILE), -(-height // TILE)
    lists = [[] for _ in range(tiles_x * tiles_y)]
    for i in np.flatnonzero(nonempty):
        for row in range(y0[i] // TILE, y1[i] // TILE + 1):
            for col in range(x0[i] // TILE, x1[i] // TILE + 1):
                lists[row * tiles_x + col].append(i)
    offsets = np.concatenate([[0], np.cumsum([len(tile) for tile in lists])])
    ids = np.array([i for tile in lists for i in tile], dtype=np.int32)
    return offsets, ids


def power(pixel, width: int, height: int) -> torch.Tensor:
    """Mahalanobis power q (N x H x W) of every splat at every pixel centre:
    y1 = dx / a, y2 = (dy - b y1) / c, q = y1^2 + y2^2, op for op as splat_math.h."""
    p = torch.as_tensor(pixel)
    x, y, a, b, c = (p[:, k, None, None] for k in range(5))
    px = torch.arange(width, dtype=p.dtype) + 0.5
    py = (torch.arange(height, dtype=p.dtype) + 0.5)[:, None]
    y1 = (px - x) * (1 / a)
    y2 = (py - y - b * y1) * (1 / c)
    return y1 * y1 + y2 * y2


def weight(q: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """exp(-q/2) where q <= CUTOFF (decided in q's dtype), exactly 0 elsewhere."""
    return torch.where(q <= CUTOFF, torch.exp(-0.5 * q.to(dtype)), 0.0)


def to_u8(img: np.ndarray) -> np.ndarray:
    """The decoder's 8-bit conversion: clamp to [0, 1], scale, round half up."""
    return np.floor(np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


# ---- forward render and loss ----------------------------------------------------


def render(pixel, width: int, height: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Dense render of pixel rows: H x W x 3, unclamped, differentiable; the power
    (and cutoff) in the rows' dtype, weights and sums in `dtype`."""
    p = torch.as_tensor(pixel)
    return torch.einsum("nhw,nc->hwc", weight(power(p, width, height), dtype), p[:, 5:8].to(dtype))


def clamp_straight_through(image: torch.Tensor) -> torch.Tensor:
    """clamp(image, 0, 1) whose gradient is the identity, as the fit's loss has it."""
    return image.clamp(0, 1).detach() + (image - image.detach())


def l2_loss(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The fit's loss (cpp/cpu/loss.h): MSE of the clamped render over pixels and
    channels; its gradient passes straight through the clamp, so overshooting
    pixels are still pulled back."""
    return ((clamp_straight_through(image) - target) ** 2).mean()


# ---- gradients (autograd, float64) ----------------------------------------------


def _leaf(pixel) -> torch.Tensor:
    return torch.tensor(np.asarray(pixel), dtype=torch.float64, requires_grad=True)


def render_grad(pixel, width: int, height: int, grad_image) -> np.ndarray:
    """d sum(render * grad_image) / d pixel rows, (N, 8) float64: the twin of the
    render backward kernels (cpu::render_backward, cuda/render_backward.cu)."""
    p = _leaf(pixel)
    (render(p, width, height) * torch.as_tensor(grad_image, dtype=torch.float64)).sum().backward()
    return p.grad.numpy()


def fit_grad(pixel, width: int, height: int, target: np.ndarray) -> np.ndarray:
    """d loss / d pixel rows, (N, 8) float64, for an H x W x 3 uint8 target: the
    twin of the fit step's forward + loss + backward (the fused CUDA kernel)."""
    p = _leaf(pixel)
    l2_loss(render(p, width, height), torch.tensor(target, dtype=torch.float64) / 255).backward()
    return p.grad.numpy()


# ---- the dense fit ---------------------------------------------------------------


class DenseFit:
    """The fitting loop of cpp/cpu/fit.cpp, dense and with autograd.

    Same units (centre and shear in grid cells of sqrt(W*H/N) pixels, the
    Cholesky diagonal as logarithms, colours as they are), same clamps after
    each step (centres to the image, log standard deviations to
    [log 0.3, log max(W, H)]), same loss, torch.optim.Adam with the same
    per-group rates and eps. No learning-rate decay, no L1 on colours and no
    pruning: compare with gscodec.fit(..., lr_final_ratio=1.0) and their defaults.
    """

    def __init__(self, image: np.ndarray, init: np.ndarray, lr_position: float, lr_covariance: float,
                 lr_color: float, dtype: torch.dtype = torch.float64):
        self.height, self.width = image.shape[:2]
        self.dtype = dtype
        self.cell = math.sqrt(self.width * self.height / len(init))
        self.target = torch.tensor(image, dtype=dtype) / 255
        p = to_pixel(np.asarray(init, np.float64), self.width, self.height).to(dtype)

        def leaf(t):
            return t.clone().requires_grad_()

        self.xy = leaf(p[:, 0:2] / self.cell)
        self.log_a = leaf(p[:, 2].log())
        self.shear = leaf(p[:, 3] / self.cell)
        self.log_c = leaf(p[:, 4].log())
        self.rgb = leaf(p[:, 5:8])
        self.log_std_range = (math.log(MIN_STD), math.log(max(self.width, self.height)))
        self.xy_max = torch.tensor([self.width, self.height], dtype=dtype) / self.cell
        self.optimizer = torch.optim.Adam([
            {"params": [self.xy], "lr": lr_position},
            {"params": [self.log_a, self.shear, self.log_c], "lr": lr_covariance},
            {"params": [self.rgb], "lr": lr_color},
        ], eps=ADAM_EPS)

    def pixel(self) -> torch.Tensor:
        """The current splats as pixel rows (differentiable)."""
        c = self.cell
        return torch.cat([self.xy * c, self.log_a.exp()[:, None], (self.shear * c)[:, None],
                          self.log_c.exp()[:, None], self.rgb], dim=1)

    def step(self) -> float:
        """One Adam step; returns the loss before it."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = l2_loss(render(self.pixel(), self.width, self.height, self.dtype), self.target)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self.xy.clamp_(torch.zeros_like(self.xy_max), self.xy_max)
            self.log_a.clamp_(*self.log_std_range)
            self.log_c.clamp_(*self.log_std_range)
        return loss.item()

    def normalized(self) -> np.ndarray:
        """The current splats as normalized (N, 8) float32 rows (Splats.from_array)."""
        with torch.no_grad():
            scale = pixel_scale(self.width, self.height, self.dtype)
            return (self.pixel() / scale).numpy().astype(np.float32)


def dense_fit(image: np.ndarray, init: np.ndarray, iterations: int, lr_position: float,
              lr_covariance: float, lr_color: float, dtype: torch.dtype = torch.float64) -> np.ndarray:
    """`iterations` DenseFit steps from normalized `init`; returns normalized (N, 8) float32."""
    fit = DenseFit(image, init, lr_position, lr_covariance, lr_color, dtype)
    for _ in range(iterations):
        fit.step()
    return fit.normalized()


# ---- test data ----------------------------------------------------------------------


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


def random_pixel_splats(rng: np.random.Generator, n: int, width: int, height: int,
                        lo: float = 0.6, hi: float = 4.0, overhang: float = 3.0) -> np.ndarray:
    """Random pixel rows (x, y, a, b, c, r, g, b), float32: centres up to
    `overhang` pixels outside the image (negative: that far inside), diagonal
    Cholesky terms in [lo, hi] pixels."""
    p = np.empty((n, 8), np.float32)
    p[:, 0] = rng.uniform(-overhang, width + overhang, n)
    p[:, 1] = rng.uniform(-overhang, height + overhang, n)
    p[:, 2] = rng.uniform(lo, hi, n)
    p[:, 3] = rng.uniform(-2, 2, n)
    p[:, 4] = rng.uniform(lo, hi, n)
    p[:, 5:8] = rng.uniform(-0.5, 1, (n, 3))
    return p


def smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random but smooth test image (sums of a few sinusoids), H x W x 3 uint8."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    img = np.zeros((height, width, 3))
    for ch in range(3):
        for _ in range(3):
            fx, fy, ph = rng.uniform(0.5, 4, 3)
            img[:, :, ch] += np.sin(2 * np.pi * (fx * x + fy * y) + ph * 6)
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 255).astype(np.uint8)
