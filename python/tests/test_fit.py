"""Encode: initialization, pruning rule, determinism, batching, quality (CPU backend;
test_cuda.py compares CUDA with it)."""

import numpy as np
import pytest

import gscodec
from gscodec import Splats
from reference import smooth_image


# The paper's fit (grid init, Adam, pruning), which these tests check step by step.
PAPER = gscodec.engine.PAPER_FIT
FROZEN = dict(PAPER, lr_position=0.0, lr_covariance=0.0, lr_color=0.0, device="cpu")


def test_grid_init_follows_the_paper(sample_image):
    """Grid centres, isotropic 1-sigma circle of the cell, colours from the cells."""
    s = gscodec.fit(sample_image, 400, iterations=0, **PAPER)
    assert len(s) == 400 and (s.width, s.height) == (224, 224)
    xs, ys = np.unique(s.xy[:, 0]), np.unique(s.xy[:, 1])
    np.testing.assert_allclose(xs, (np.arange(20) + 0.5) / 20, rtol=1e-6)
    np.testing.assert_allclose(ys, (np.arange(20) + 0.5) / 20, rtol=1e-6)
    np.testing.assert_allclose(s.chol[:, 0], 0.5 / 20, rtol=1e-5)  # sigma = half a cell
    np.testing.assert_array_equal(s.chol[:, 1], 0)
    # coverage-normalized colours: the start is as bright as the image
    render = gscodec.render(s, dtype=np.float32)
    np.testing.assert_allclose(render.mean(axis=(0, 1)), sample_image.mean(axis=(0, 1)) / 255,
                               atol=0.01)


def test_extra_splats_beyond_the_grid(sample_image):
    s = gscodec.fit(sample_image, 405, iterations=0, **PAPER)
    assert len(s) == 405  # 20 x 20 grid plus 5 in the busiest cells


def test_pruning_removes_exactly_what_the_rule_says(sample_image):
    """With frozen parameters the only change is the prune at step 3 of 4."""
    init = gscodec.fit(sample_image, 400, iterations=0, device="cpu", **PAPER)
    luma = (np.float32(0.299) * np.abs(init.rgb[:, 0]) + np.float32(0.587) * np.abs(init.rgb[:, 1])
            + np.float32(0.114) * np.abs(init.rgb[:, 2]))
    threshold = float(np.median(luma))
    keep = luma >= threshold
    pruned = gscodec.fit(sample_image, 400, iterations=4, prune_threshold=threshold,
                         prune_every=3, **FROZEN)
    np.testing.assert_array_equal(pruned.to_array(), init.to_array()[keep])
    assert 0 < len(pruned) < 400


def test_pruning_outside_its_window_or_off_keeps_everything(sample_image):
    kept = gscodec.fit(sample_image, 100, iterations=4, prune_threshold=10.0, prune_every=5, **FROZEN)
    assert len(kept) == 100  # the first prune step (5) is past the run
    off = gscodec.fit(sample_image, 100, iterations=4, prune_threshold=0.0, prune_every=1, **FROZEN)
    assert len(off) == 100


def test_pruning_never_empties_an_image(sample_image):
    s = gscodec.fit(sample_image, 100, iterations=4, prune_threshold=1e3, prune_every=2, **FROZEN)
    assert len(s) == 1


def test_l1_colour_penalty_shrinks_colours():
    img = smooth_image(np.random.default_rng(0), 32, 32)
    plain = gscodec.fit(img, 64, iterations=100)
    l1 = gscodec.fit(img, 64, iterations=100, l1_color=0.5)
    assert np.abs(l1.rgb).mean() < np.abs(plain.rgb).mean()


def test_same_seed_same_result_and_seed_matters():
    img = smooth_image(np.random.default_rng(1), 24, 30)
    a = gscodec.fit(img, 40, iterations=30, init="random", seed=7, device="cpu")
    b = gscodec.fit(img, 40, iterations=30, init="random", seed=7, device="cpu")
    c = gscodec.fit(img, 40, iterations=30, init="random", seed=8, device="cpu")
    assert a == b
    assert a != c


def test_mixed_size_batch_equals_one_by_one_fits():
    rng = np.random.default_rng(2)
    images = [smooth_image(rng, 30, 40), smooth_image(rng, 36, 24), smooth_image(rng, 30, 40)]
    batch = gscodec.fit(images, 50, iterations=40, device="cpu")
    for img, s in zip(images, batch):
        one = gscodec.fit(img, 50, iterations=40, device="cpu")
        assert one == s
        assert (s.width, s.height) == (img.shape[1], img.shape[0])
    # the same through a B x H x W x 3 array, and with one thread
    stacked = gscodec.fit(np.stack([images[0], images[2]]), 50, iterations=40, threads=1,
                          device="cpu")
    assert stacked[0] == batch[0] and stacked[1] == batch[2]


def test_fit_sample_image_reaches_stated_psnr(sample_image):
    """400 splats, 500 iterations on kodim23 (224 x 224): at least 26 dB."""
    splats, stats = gscodec.fit(sample_image, 400, iterations=500, return_stats=True)
    assert stats["psnr"] >= 26.0
    decoded = gscodec.render(splats)
    mse = np.mean((decoded.astype(float) - sample_image.astype(float)) ** 2)
    assert 10 * np.log10(255**2 / mse) == pytest.approx(stats["psnr"], abs=1e-6)


def test_grid_beats_random_init(sample_image):
    """The paper's init ablation (its fit otherwise)."""
    grid = gscodec.fit(sample_image, 400, iterations=200, return_stats=True, **PAPER)[1]["psnr"]
    rand = gscodec.fit(sample_image, 400, iterations=200, return_stats=True,
                       **dict(PAPER, init="random"))[1]["psnr"]
    assert grid > rand + 1.0


def test_returned_splats_are_valid(sample_image):
    s = gscodec.fit(sample_image[:50, :70], 30, iterations=50)
    assert isinstance(s, Splats) and (s.width, s.height) == (70, 50)
    assert (s.chol[:, 0] > 0).all() and (s.chol[:, 2] > 0).all()
    assert ((s.xy >= 0) & (s.xy <= 1)).all()
