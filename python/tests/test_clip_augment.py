"""Splat-space augmentation: each transform on the splats matches the same transform on
their rendering; views and dropout are reproducible per seed; the token loss's correspondence."""

import random

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="gscodec.clip needs the clip extra (torch)")
pytest.importorskip("open_clip", reason="gscodec.clip needs the clip extra (open_clip_torch)")

from PIL import Image  # noqa: E402

import gscodec  # noqa: E402
from gscodec.clip.augment import (  # noqa: E402
    SplatAugment,
    View,
    augment_image,
    augment_splats,
    draw_view,
)
from gscodec.clip.loss import TokenDistillLoss, token_targets  # noqa: E402


def _splats(n=24, seed=0, low=0.0, high=1.0, size=(0.02, 0.08)):
    rng = np.random.default_rng(seed)
    rows = np.empty((n, 8), np.float32)
    rows[:, 0:2] = rng.uniform(low, high, (n, 2))
    rows[:, 2] = rng.uniform(*size, n)
    rows[:, 3] = rng.normal(0, 0.03, n)  # sheared: a wrong sign of l21 shows
    rows[:, 4] = rng.uniform(*size, n)
    rows[:, 5:8] = rng.uniform(0, 0.6, (n, 3))
    return rows


def _render(rows, side):
    return gscodec.render(gscodec.Splats.from_array(rows, side, side), dtype=np.float32)


def test_flip_matches_the_flipped_rendering():
    rows = _splats()
    flipped = augment_splats(rows, View(flip=True))
    np.testing.assert_allclose(_render(flipped, 32), _render(rows, 32)[:, ::-1], atol=1e-3)
    # and it is not the identity: a sheared image changes under a flip
    assert np.abs(_render(rows, 32) - _render(rows, 32)[:, ::-1]).max() > 0.05


def test_crop_matches_the_cropped_rendering():
    # Splats well inside the window [0.25, 0.75]^2, small: none is dropped, none leaks out.
    rows = _splats(low=0.35, high=0.65, size=(0.01, 0.03))
    view = View(x0=0.25, y0=0.25, side=0.5)
    cropped = augment_splats(rows, view)
    assert len(cropped) == len(rows)
    full = _render(rows, 64)
    np.testing.assert_allclose(_render(cropped, 32), full[16:48, 16:48], atol=2e-3)


def test_crop_drops_splats_outside_the_window():
    rows = _splats(n=200, seed=1)
    view = View(x0=0.5, y0=0.0, side=0.5)
    cropped = augment_splats(rows, view)
    inside = (rows[:, 0] >= 0.5) & (rows[:, 1] <= 0.5)
    assert len(cropped) == inside.sum()
    assert (cropped[:, 0:2] >= 0).all() and (cropped[:, 0:2] <= 1).all()
    np.testing.assert_allclose(cropped[:, 2:5], rows[inside, 2:5] / 0.5, rtol=1e-6)


def test_brightness_and_saturation_match_the_image():
    rows = _splats()
    rows[:, 5:8] *= 0.5  # PIL clips after each step: stay below 1 so both are linear
    view = View(brightness=1.2, saturation=0.6)
    rendered = _render(rows, 32)
    assert rendered.max() * 1.2 < 1
    image = Image.fromarray((rendered * 255).round().astype(np.uint8))
    expected = np.asarray(augment_image(image, view), dtype=np.float32) / 255
    got = _render(augment_splats(rows, view), 32)
    assert np.abs(got - expected).max() < 3 / 255
    assert np.abs(rendered - expected).max() > 10 / 255  # the factors did change the image


def test_image_side_crop_and_flip():
    pixels = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    image = Image.fromarray(pixels)
    flipped = np.asarray(augment_image(image, View(flip=True)))
    np.testing.assert_array_equal(flipped, pixels[:, ::-1])
    cropped = augment_image(image, View(x0=0.5, y0=0.0, side=0.5))
    assert cropped.size == (16, 16)  # zoomed back to the input size


def test_views_and_dropout_are_deterministic_per_seed():
    cfg = SplatAugment(flip=0.5, min_crop=0.6, jitter=0.3, dropout=0.3)
    rows = _splats(n=64)

    def draw(seed):
        rng = random.Random(seed)
        view = draw_view(cfg, rng)
        return view, augment_splats(rows, view, cfg.dropout, rng)

    (v0, a0), (v1, a1), (v2, _) = draw(7), draw(7), draw(8)
    assert v0 == v1 and np.array_equal(a0, a1)
    assert v0 != v2
    assert 0.6 <= v0.side <= 1 and 0 <= v0.x0 <= 1 - v0.side
    assert all(0.7 <= f <= 1.3 for f in (v0.brightness, v0.contrast, v0.saturation))


def test_dropout_rate_and_never_empty():
    rows = _splats(n=2000)
    kept = augment_splats(rows, View(), 0.25, random.Random(0))
    assert 0.7 < len(kept) / len(rows) < 0.8
    one = augment_splats(rows[:1], View(), 0.99, random.Random(0))
    assert len(one) == 1


def test_disabled_augmentation_is_the_identity_and_draws_nothing():
    rng = random.Random(3)
    state = rng.getstate()
    view = draw_view(SplatAugment(), rng)
    assert view == View() and rng.getstate() == state  # captions' rng stream unchanged
    rows = _splats()
    np.testing.assert_array_equal(augment_splats(rows, view, 0.0, rng), rows)


@pytest.mark.parametrize(
    "kwargs", [{"flip": 1.5}, {"min_crop": 0.0}, {"jitter": -0.1}, {"dropout": 1.0}]
)
def test_bad_augmentation_settings_are_rejected(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SplatAugment(**kwargs)


def test_grid_token_targets_pool_the_patch_grid():
    # teacher: class token + a 4x4 grid of patches whose value is its (row, col) index
    grid = torch.arange(16, dtype=torch.float32).view(1, 16, 1).expand(1, 16, 3)
    teacher = torch.cat([torch.full((1, 1, 3), -1.0), grid], dim=1)
    targets = token_targets(teacher, "grid", 4)
    assert targets.shape == (1, 5, 3)
    # cell (0, 0) of the 2x2 grid pools patches 0, 1, 4, 5
    np.testing.assert_allclose(targets[0, :, 0].numpy(), [-1, 2.5, 4.5, 10.5, 12.5])
    pooled = token_targets(teacher, "pooled", 4)
    np.testing.assert_allclose(pooled[0, :, 0].numpy(), [-1, 7.5])
    with pytest.raises(ValueError, match="square"):
        token_targets(teacher, "grid", 3)


def test_token_loss_is_zero_only_for_a_match():
    torch.manual_seed(0)
    teacher = torch.randn(2, 17, 8)
    student = token_targets(teacher, "grid", 4)
    loss = TokenDistillLoss("grid")
    assert loss(student, teacher).item() < 1e-10
    assert loss(torch.randn(2, 5, 8), teacher).item() > 0.5
    # pooled mode ignores the order of the student's tokens
    shuffled = torch.cat([student[:, :1], student[:, 1:].flip(1)], dim=1)
    assert TokenDistillLoss("pooled")(shuffled, teacher).item() < 1e-10
    assert loss(shuffled, teacher).item() > 1e-3
