"""The CPU backward pass and loss (float64 test hooks) against central finite
differences and against the reference twin's autograd; the fitting loop (CPU,
and CUDA where present) against the twin's dense fit."""

import numpy as np
import pytest
import torch

import gscodec
from gscodec import _core
from reference import dense_fit, fit_grad, l2_loss, random_pixel_splats, render, render_grad, smooth_image

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # conftest.py

GROUPS = {"position": [0, 1], "covariance": [2, 3, 4], "colour": [5, 6, 7]}


def pixel_splats(rng, n, width, height):
    """Random float64 pixel rows well inside the image (finite differences need
    every splat's cutoff box away from the border)."""
    return random_pixel_splats(rng, n, width, height, lo=1.2, overhang=-3).astype(np.float64)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("group", GROUPS)
def test_render_backward_matches_finite_differences(seed, group):
    rng = np.random.default_rng(seed)
    width, height = 23, 17
    params = pixel_splats(rng, 5, width, height)
    upstream = rng.normal(size=(height, width, 3))

    def loss(p):
        return float((_core._render_px_f64(p, width, height) * upstream).sum())

    analytic = _core._render_backward_px_f64(params, width, height, upstream)
    eps = 1e-6
    for i in range(params.shape[0]):
        for k in GROUPS[group]:
            plus, minus = params.copy(), params.copy()
            plus[i, k] += eps
            minus[i, k] -= eps
            numeric = (loss(plus) - loss(minus)) / (2 * eps)
            assert analytic[i, k] == pytest.approx(numeric, rel=1e-5, abs=1e-6), (i, k)


@pytest.mark.parametrize("seed", range(4))
def test_render_forward_and_backward_match_twin(seed):
    """Splats anywhere, on and off the image: the same cutoff decisions in float64,
    so forward and gradient agree to summation order."""
    rng = np.random.default_rng(seed)
    width, height = int(rng.integers(1, 40)), int(rng.integers(1, 30))
    params = random_pixel_splats(rng, 30, width, height, hi=6.0).astype(np.float64)
    upstream = rng.normal(size=(height, width, 3))
    np.testing.assert_allclose(_core._render_px_f64(params, width, height),
                               render(params, width, height).numpy(), rtol=1e-12, atol=1e-12)
    got = _core._render_backward_px_f64(params, width, height, upstream)
    want = render_grad(params, width, height, upstream)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


@pytest.mark.parametrize("width", [5, 8, 9, 61])
def test_backward_matches_twin_for_thin_rotated_splats(width):
    """The backward walks each row's chord of the cutoff ellipse
    (cutoff_row_span) in masked 8-pixel chunks: thin splats at steep angles,
    whose chords cover a sliver of their box, lose no pixel against the twin,
    which evaluates every pixel; widths below, at and above one chunk."""
    rng = np.random.default_rng(width)
    height = 47
    params = random_pixel_splats(rng, 40, width, height, lo=0.25, hi=1.0).astype(np.float64)
    params[:, 3] = rng.uniform(-9, 9, len(params))  # shear: ellipses at steep angles
    upstream = rng.normal(size=(height, width, 3))
    got = _core._render_backward_px_f64(params, width, height, upstream)
    want = render_grad(params, width, height, upstream)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


def test_l2_loss_gradient():
    """Inside (0, 1) the gradient is exact; outside it passes straight through the clamp."""
    rng = np.random.default_rng(0)
    render_values = rng.uniform(-0.5, 1.5, 300)
    target = rng.uniform(0, 1, 300)
    loss, grad = _core._l2_loss_and_grad_f64(render_values, target)
    clamped = np.clip(render_values, 0, 1)
    assert loss == pytest.approx(np.mean((clamped - target) ** 2), rel=1e-12)
    np.testing.assert_allclose(grad, 2 * (clamped - target) / render_values.size, rtol=1e-12)
    inside = np.flatnonzero((render_values > 0.01) & (render_values < 0.99))[:20]
    eps = 1e-7
    for k in inside:
        plus, minus = render_values.copy(), render_values.copy()
        plus[k] += eps
        minus[k] -= eps
        numeric = (_core._l2_loss_and_grad_f64(plus, target)[0]
                   - _core._l2_loss_and_grad_f64(minus, target)[0]) / (2 * eps)
        assert grad[k] == pytest.approx(numeric, rel=1e-5)
    # the twin's loss, differentiated by autograd, everywhere (clamped pixels too)
    leaf = torch.tensor(render_values, requires_grad=True)
    twin_loss = l2_loss(leaf, torch.from_numpy(target))
    twin_loss.backward()
    assert loss == pytest.approx(twin_loss.item(), rel=1e-12)
    np.testing.assert_allclose(grad, leaf.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_fit_gradient_matches_twin(seed):
    """The CPU fit step's chain (render, loss, backward) against autograd of the
    twin's loss of the twin's render."""
    rng = np.random.default_rng(seed)
    width, height = 31, 26
    params = random_pixel_splats(rng, 40, width, height).astype(np.float64)
    target = smooth_image(rng, height, width)
    image = _core._render_px_f64(params, width, height)
    _, grad_image = _core._l2_loss_and_grad_f64(image, target.astype(np.float64) / 255)
    got = _core._render_backward_px_f64(params, width, height, grad_image)
    want = fit_grad(params, width, height, target)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_fit_steps_follow_twin(sample_image, device):
    """The fitting loop (constant learning rates, no pruning) against the twin's
    dense autograd fit from the same initial splats: the same units, loss, Adam
    and clamps, so the same splats to float32 rounding after 10 steps."""
    image = sample_image[:48, :64].copy()
    # The paper's fit (grid init, plain Adam): the twin has no densification or colour solve.
    paper = dict(gscodec.engine.PAPER_FIT, lr_position=0.05, lr_covariance=0.05, lr_color=0.01)
    lrs = {k: paper[k] for k in ("lr_position", "lr_covariance", "lr_color")}
    init = gscodec.fit(image, 60, iterations=0, device="cpu", **paper)
    got = gscodec.fit(image, 60, iterations=10, lr_final_ratio=1.0, device=device, **paper).to_array()
    want = dense_fit(image, init.to_array(), 10, **lrs)
    err = np.abs(got - want) / np.abs(want).max(axis=0)
    assert err.max() < 1e-3, f"worst relative error {err.max():.2e} in column {err.max(axis=0).argmax()}"
    assert np.median(err) < 1e-5
