"""The analytic backward pass against central finite differences (float64)."""

import numpy as np
import pytest

from gscodec import _core

GROUPS = {"position": [0, 1], "covariance": [2, 3, 4], "colour": [5, 6, 7]}


def pixel_splats(rng, n, width, height):
    """Random pixel-space splats (x, y, a, b, c, r, g, b) well inside the image."""
    p = np.empty((n, 8))
    p[:, 0] = rng.uniform(3, width - 3, n)
    p[:, 1] = rng.uniform(3, height - 3, n)
    p[:, 2] = rng.uniform(1.2, 4, n)
    p[:, 3] = rng.uniform(-2, 2, n)
    p[:, 4] = rng.uniform(1.2, 4, n)
    p[:, 5:8] = rng.uniform(-0.5, 1, (n, 3))
    return p


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


def test_l2_loss_gradient():
    """Inside (0, 1) the gradient is exact; outside it passes straight through the clamp."""
    rng = np.random.default_rng(0)
    render = rng.uniform(-0.5, 1.5, 300)
    target = rng.uniform(0, 1, 300)
    loss, grad = _core._l2_loss_and_grad_f64(render, target)
    clamped = np.clip(render, 0, 1)
    assert loss == pytest.approx(np.mean((clamped - target) ** 2), rel=1e-12)
    np.testing.assert_allclose(grad, 2 * (clamped - target) / render.size, rtol=1e-12)
    inside = np.flatnonzero((render > 0.01) & (render < 0.99))[:20]
    eps = 1e-7
    for k in inside:
        plus, minus = render.copy(), render.copy()
        plus[k] += eps
        minus[k] -= eps
        numeric = (_core._l2_loss_and_grad_f64(plus, target)[0]
                   - _core._l2_loss_and_grad_f64(minus, target)[0]) / (2 * eps)
        assert grad[k] == pytest.approx(numeric, rel=1e-5)
