"""Encoder v2 on the CPU: content-adaptive init, error-guided densification, the
exact colour solve, the quantized finish, delivered counts, determinism
and Ctrl-C."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import gscodec
from gscodec import _core
from gscodec import quantize as q
from reference import smooth_image

PAPER = gscodec.engine.PAPER_FIT


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


def test_densification_adds_splats_where_the_error_is():
    """A flat image with one textured quadrant: with the start frozen (grid, no
    steps that move anything), every densification round sees the start's
    error, so the added splats (appended after the initial ones) follow it."""
    rng = np.random.default_rng(0)
    img = np.full((64, 64, 3), 128, np.uint8)
    img[:32, 32:] = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    frozen = dict(PAPER, lr_position=0.0, lr_covariance=0.0, lr_color=0.0, densify_fraction=0.5,
                  densify_rounds=4)
    s = gscodec.fit(img, 64, iterations=8, **frozen)
    assert len(s) == 64
    start = gscodec.fit(img, 32, iterations=0, **PAPER)
    np.testing.assert_allclose(s.xy[:32], start.xy, rtol=1e-6)  # densification only added
    error = ((gscodec.render(start, dtype=np.float32) - img / 255.0) ** 2).sum(axis=2)
    assert error[:32, 32:].sum() / error.sum() > 0.8
    added = s.xy[32:] * 64
    in_quadrant = (added[:, 0] >= 32) & (added[:, 1] <= 32)
    assert in_quadrant.mean() >= 0.7  # uniform placement: 0.25


def test_content_init_puts_more_splats_on_detail():
    rng = np.random.default_rng(1)
    img = np.full((64, 64, 3), 90, np.uint8)
    img[:, 32:] = rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)
    s = gscodec.fit(img, 100, iterations=0, init="content", densify_fraction=0.0)
    right = (s.xy[:, 0] >= 0.5).mean()
    assert right > 0.6  # uniform would give 0.5; the flat half keeps its share
    # Sizes follow the density: splats on the texture are smaller.
    left_std = s.chol[s.xy[:, 0] < 0.5, 0].mean()
    right_std = s.chol[s.xy[:, 0] >= 0.5, 0].mean()
    assert right_std < left_std


def _unit_renders(params_px: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixels x splats matrix of each splat's weights (its render with colour 1)."""
    cols = []
    for row in params_px:
        one = row.copy()[None]
        one[0, 5:] = 1.0
        cols.append(_core._render_px_f64(one, width, height)[:, :, 0].ravel())
    return np.stack(cols, axis=1)


def _random_pixel_params(rng: np.random.Generator, width: int, height: int, n: int) -> np.ndarray:
    """n random pixel-space splats (x, y, a, b, c, r, g, b) over a width x height image."""
    return np.column_stack([
        rng.uniform(0, width, n), rng.uniform(0, height, n),
        rng.uniform(1.0, 4.0, n), rng.uniform(-1.0, 1.0, n), rng.uniform(1.0, 4.0, n),
        rng.uniform(-0.5, 1.0, (n, 3)),
    ])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_color_solve_matches_dense_least_squares(seed):
    """The sparse CG solve equals NumPy's dense solution of the same problem:
    min |W c - t|^2 + ridge * sum_i G_ii |c_i - c0_i|^2, G = W^T W."""
    rng = np.random.default_rng(seed)
    width, height, n = 20, 16, 12
    params = _random_pixel_params(rng, width, height, n)
    target = rng.uniform(0, 1, (height, width, 3))
    solved = _core._solve_colors_px_f64(params, target)
    w = _unit_renders(params, width, height)
    ridge = np.sqrt(_core.COLOR_RIDGE * np.einsum("pi,pi->i", w, w))
    a = np.vstack([w, np.diag(ridge)])
    expected = np.stack([
        np.linalg.lstsq(a, np.concatenate([target[:, :, ch].ravel(), ridge * params[:, 5 + ch]]),
                        rcond=None)[0]
        for ch in range(3)
    ], axis=1)
    np.testing.assert_allclose(solved, expected, rtol=1e-5, atol=1e-6)
    # and it is a real improvement on the starting colours
    def error(c):
        return np.sum((w @ c - target.reshape(-1, 3)) ** 2)
    assert error(solved) < error(params[:, 5:])


def test_color_solve_improves_a_short_fit(sample_image):
    kw = dict(init="content", densify_fraction=0.0, respawn_fraction=0.0, device="cpu",
              return_stats=True)
    off = gscodec.fit(sample_image, 200, iterations=20, color_solve=False, **kw)[1]["psnr"]
    on = gscodec.fit(sample_image, 200, iterations=20, color_solve=True, **kw)[1]["psnr"]
    assert on > off + 0.3


def test_quantized_finish_is_what_the_file_holds(sample_image):
    """With quantize_for the returned splats are what a (version 2) file of
    that precision holds: writing them reproduces them, stats["psnr"] is the
    file's, and it beats quantizing a plain fit afterwards."""
    img = sample_image[:96, :128]
    plain = gscodec.fit(img, 200, iterations=60)
    finished, stats = gscodec.fit(img, 200, iterations=60, quantize_for="q7", return_stats=True)
    stored = gscodec.format.loads(gscodec.format.dumps(finished, precision="q7"))

    def rows(s):  # the file stores splats in its own (Morton) order
        a = s.to_array()
        return a[np.lexsort(a.T[::-1])]
    np.testing.assert_array_equal(rows(stored), rows(finished))
    file_psnr = psnr(gscodec.render(stored), img)
    assert file_psnr == stats["psnr"]
    after = psnr(gscodec.render(q.roundtrip(plain, "q7")), img)
    assert file_psnr > after


def test_encode_writes_the_quantized_finish(sample_image):
    img = sample_image[:64, :64]
    encoded = gscodec.encode(img, n_splats=80, iterations=30, precision="q7")
    plain = gscodec.fit(img, 80, iterations=30)
    finished = gscodec.ratecontrol.quantized_finish(plain, img, "q7")
    np.testing.assert_array_equal(encoded.splats.to_array(),
                                  gscodec.format.loads(gscodec.format.dumps(finished, precision="q7")).to_array())
    with pytest.raises(ValueError, match="image"):
        gscodec.ratecontrol.quantized_finish(plain, img[:32], "q7")


def test_warm_start_with_no_steps_returns_the_splats():
    img = smooth_image(np.random.default_rng(1), 40, 32)
    start = gscodec.fit(img, 30, iterations=20)
    same, stats = gscodec.fit(img, 30, init=start, iterations=0, return_stats=True)
    np.testing.assert_allclose(same.to_array(), start.to_array(), rtol=1e-6, atol=1e-7)
    assert stats["psnr"] == pytest.approx(psnr(gscodec.render(start), img), abs=0.01)
    # a list warm-starts a batch, one set per image
    pair = gscodec.fit([img, img[:16]], 30, init=[start, gscodec.fit(img[:16], 30, iterations=5)],
                       iterations=0)
    np.testing.assert_allclose(pair[0].to_array(), start.to_array(), rtol=1e-6, atol=1e-7)


def test_warm_start_continues_the_fit_deterministically():
    """More steps from a fit's splats lower its loss (the fit continues where
    it stopped instead of starting over), and the same inputs give the same
    splats whatever the thread count."""
    img = smooth_image(np.random.default_rng(2), 48, 40)
    start, first = gscodec.fit(img, 40, iterations=30, return_stats=True)
    kw = dict(init=start, iterations=30, lr_position=0.02, lr_covariance=0.02, lr_color=0.005,
              return_stats=True)
    more, stats = gscodec.fit(img, 40, threads=1, **kw)
    assert len(more) == 40 and stats["psnr"] > first["psnr"]
    assert gscodec.fit(img, 40, threads=2, **kw)[0] == more


def test_warm_start_rejects_mismatched_splats():
    img = smooth_image(np.random.default_rng(3), 16, 24)
    start = gscodec.fit(img, 10, iterations=2)
    with pytest.raises(ValueError, match="init holds 10 splats, n_splats is 11"):
        gscodec.fit(img, 11, init=start)
    with pytest.raises(ValueError, match=r"init is for a 24x16 image, the image is 16x16"):
        gscodec.fit(img[:, :16], 10, init=start)
    with pytest.raises(ValueError, match="init holds 1 splat sets for 2 images"):
        gscodec.fit([img, img], 10, init=[start])
    with pytest.raises(TypeError, match=r"init\[1\] must be gscodec.Splats"):
        gscodec.fit([img, img], 10, init=[start, "grid"])
    with pytest.raises(TypeError, match="init must be"):
        gscodec.fit(img, 10, init=3)


def test_qat_iterations_are_checked(sample_image):
    img = sample_image[:8, :8]
    with pytest.raises(ValueError, match="qat_iterations needs quantize_for"):
        gscodec.fit(img, 4, qat_iterations=3)
    with pytest.raises(ValueError, match="qat_iterations must be in"):
        gscodec.fit(img, 4, quantize_for="q7", qat_iterations=-1)
    with pytest.raises(TypeError, match="qat_iterations must be an int"):
        gscodec.fit(img, 4, quantize_for="q7", qat_iterations=2.5)


def test_straight_through_steps_render_the_files_geometry(sample_image):
    """Quantization-aware steps that move nothing (step sizes 0, no colour
    solves) render the geometry exactly as the file stores it: their result is
    the plain quantized finish; steps that move keep the result on the file's
    grids and deterministic."""
    img = sample_image[:64, :96]
    start = gscodec.fit(img, 120, iterations=40)
    frozen = gscodec.fit(img, 120, init=start, iterations=0, quantize_for="q7", qat_iterations=3,
                         lr_position=0.0, lr_covariance=0.0, lr_color=0.0, color_solve=False)

    def rows(s):  # the file stores splats in its own (Morton) order
        a = s.to_array()
        return a[np.lexsort(a.T[::-1])]
    plain = gscodec.ratecontrol.quantized_finish(
        start, img, "q7", rounds=gscodec.engine.FINISH_ROUNDS, sweeps=gscodec.engine.FINISH_SWEEPS)
    np.testing.assert_array_equal(rows(frozen)[:, :5], rows(plain)[:, :5])
    moved = gscodec.fit(img, 120, init=start, iterations=0, quantize_for="q7", qat_iterations=5)
    stored = gscodec.format.loads(gscodec.format.dumps(moved, precision="q7"))
    np.testing.assert_array_equal(rows(stored), rows(moved))
    assert gscodec.fit(img, 120, init=start, iterations=0, quantize_for="q7",
                       qat_iterations=5) == moved


def test_solve_colors_binding_is_least_squares():
    """_core.solve_colors (normalized float32 splats, uint8 image) solves the
    same ridged least squares as dense NumPy, to float32 rounding."""
    rng = np.random.default_rng(3)
    width, height, n = 12, 10, 9
    scale = np.array([width, height, width, height, height, 1, 1, 1])
    normalized = (_random_pixel_params(rng, width, height, n) / scale).astype(np.float32)
    params = normalized * scale  # the splats the binding sees
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    solved = _core.solve_colors(normalized, image, 1)
    assert solved.dtype == np.float32 and solved.shape == (n, 3)
    w = _unit_renders(params, width, height)
    ridge = np.sqrt(_core.COLOR_RIDGE * np.einsum("pi,pi->i", w, w))
    a = np.vstack([w, np.diag(ridge)])
    target = image / 255.0
    expected = np.stack([
        np.linalg.lstsq(a, np.concatenate([target[:, :, ch].ravel(), ridge * params[:, 5 + ch]]),
                        rcond=None)[0]
        for ch in range(3)
    ], axis=1)
    np.testing.assert_allclose(solved, expected, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="params"):
        _core.solve_colors(np.zeros((2, 7), np.float32), image, 1)
    with pytest.raises(ValueError, match="image"):
        _core.solve_colors(normalized, image[:, :, :2], 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_round_colors_is_a_grid_optimum_below_plain_rounding(seed):
    """_core.round_colors puts every colour on the grid (multiples of step,
    within its channel's range of plain rounding) where no one-step move of one
    colour or of two lowers the L2 error, and that error is below plain
    rounding's."""
    rng = np.random.default_rng(seed)
    width, height, n, step = 12, 10, 9, 0.07
    scale = np.array([width, height, width, height, height, 1, 1, 1])
    normalized = (_random_pixel_params(rng, width, height, n) / scale).astype(np.float32)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    normalized[:, 5:] = _core.solve_colors(normalized, image, 1)
    rounded = _core.round_colors(normalized, image, step, 1).astype(np.float64)
    index = rounded / step
    np.testing.assert_allclose(index, np.rint(index), atol=1e-4)
    index = np.rint(index)
    plain = np.rint(normalized[:, 5:] / step)
    assert np.all(index.min(0) >= plain.min(0)) and np.all(index.max(0) <= plain.max(0))
    w = _unit_renders(normalized.astype(np.float64) * scale, width, height)
    target = image.reshape(-1, 3) / 255.0

    def error(c):
        return np.sum((w @ (c * step) - target) ** 2, axis=0)  # per channel
    best = error(index)
    assert best.sum() < error(plain).sum()
    for i in range(n):
        for move in (-1, 1):
            moved = index.copy()
            moved[i] += move
            inside = (moved[i] >= plain.min(0)) & (moved[i] <= plain.max(0))
            assert np.all((error(moved) >= best * (1 - 1e-6))[inside]), (i, move)
    for i in range(n):  # nor does a one-step move of two colours
        for j in range(i + 1, n):
            for move_i in (-1, 1):
                for move_j in (-1, 1):
                    moved = index.copy()
                    moved[i] += move_i
                    moved[j] += move_j
                    inside = ((moved[[i, j]] >= plain.min(0)) & (moved[[i, j]] <= plain.max(0))).all(0)
                    assert np.all((error(moved) >= best * (1 - 1e-6))[inside]), (i, j)
    with pytest.raises(ValueError, match="step"):
        _core.round_colors(normalized, image, 0.0, 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_round_geometry_puts_splats_on_the_grid_below_plain_rounding(seed):
    """_core.round_geometry puts x, y, log a, b, log c on the given grids,
    within each field's range of plain rounding, keeps the colours, renders
    closer to the image than plain rounding, and is deterministic."""
    rng = np.random.default_rng(seed)
    width, height, n = 16, 12, 12
    steps = (0.25, 0.1, 0.02)  # pixels, log units, normalized shear
    scale = np.array([width, height, width, height, height, 1, 1, 1])
    normalized = (_random_pixel_params(rng, width, height, n) / scale).astype(np.float32)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    normalized[:, 5:] = _core.solve_colors(normalized, image, 1)
    rounded = _core.round_geometry(normalized, image, *steps, 8, 1)
    np.testing.assert_array_equal(rounded, _core.round_geometry(normalized, image, *steps, 8, 2))
    np.testing.assert_array_equal(rounded[:, 5:], normalized[:, 5:])

    def coordinates(p):
        p = p.astype(np.float64)
        return np.column_stack([p[:, 0] * width / steps[0], p[:, 1] * height / steps[0],
                                np.log(p[:, 2]) / steps[1], p[:, 3] / steps[2],
                                np.log(p[:, 4]) / steps[1]])
    index = coordinates(rounded)
    np.testing.assert_allclose(index, np.rint(index), atol=1e-3)
    plain = np.rint(coordinates(normalized))
    assert np.all(np.rint(index).min(0) >= plain.min(0))
    assert np.all(np.rint(index).max(0) <= plain.max(0))
    target = image.reshape(-1, 3) / 255.0

    def error(p):
        return np.sum((_unit_renders(p.astype(np.float64) * scale, width, height) @ p[:, 5:]
                       - target) ** 2)
    on_plain_grid = normalized.copy()
    on_plain_grid[:, :5] = np.column_stack([
        plain[:, 0] * steps[0] / width, plain[:, 1] * steps[0] / height,
        np.exp(plain[:, 2] * steps[1]), plain[:, 3] * steps[2], np.exp(plain[:, 4] * steps[1])])
    assert error(rounded) < error(on_plain_grid)
    # Later sweeps only continue the first ones (over the splats near their
    # moves); none is plain rounding.
    two = _core.round_geometry(normalized, image, *steps, 2, 1)
    assert error(rounded) <= error(two) < error(on_plain_grid)
    none = _core.round_geometry(normalized, image, *steps, 0, 1)
    np.testing.assert_allclose(none[:, :5], on_plain_grid[:, :5], rtol=1e-6)
    with pytest.raises(ValueError, match="steps"):
        _core.round_geometry(normalized, image, 0.25, 0.0, 0.02, 2, 1)
    with pytest.raises(ValueError, match="sweeps"):
        _core.round_geometry(normalized, image, *steps, -1, 1)


def test_geometry_slopes_match_finite_differences():
    """The geometry rounding's local model (slope and Gauss-Newton curvature of
    the L2 error per grid step of x, y, log a, b, log c) matches central
    finite differences of the float64 reference render."""
    rng = np.random.default_rng(5)
    width, height, n = 16, 12, 6
    steps = (0.25, 0.1, 0.02)
    scale = np.array([width, height, width, height, height, 1, 1, 1])
    normalized = (_random_pixel_params(rng, width, height, n) / scale).astype(np.float32)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    slope, curvature = _core._geometry_slopes(normalized, image, *steps)
    target = image.reshape(-1, 3) / 255.0
    base = normalized.astype(np.float64)

    def moved(i, f, d):  # splat i with field f moved by d grid steps, pixel units
        p = base.copy()
        if f < 2:
            p[i, f] += d * steps[0] / (width, height)[f]
        elif f == 3:
            p[i, 3] += d * steps[2]
        else:
            p[i, f] *= np.exp(d * steps[1])
        return p * scale

    def error(p):
        return np.sum((_unit_renders(p, width, height) @ p[:, 5:] - target) ** 2)

    eps = 1e-3
    for i in range(n):
        for f in range(5):
            up, down = moved(i, f, eps), moved(i, f, -eps)
            np.testing.assert_allclose(slope[i, f], (error(up) - error(down)) / (2 * eps),
                                       rtol=2e-2, atol=1e-4)
            dw = (_unit_renders(up, width, height)[:, i]
                  - _unit_renders(down, width, height)[:, i]) / (2 * eps)
            np.testing.assert_allclose(curvature[i, f], np.sum(base[i, 5:] ** 2) * dw @ dw,
                                       rtol=2e-2, atol=1e-4)


def test_quantized_finish_beats_plain_geometry_with_rounded_colours(sample_image):
    """The finish's grid-aware geometry rounding renders closer to the image
    than plain geometry with the colours solved and rounded the same way."""
    img = sample_image[:96, :128]
    fitted = gscodec.fit(img, 200, iterations=60)
    geometry = q.roundtrip(fitted, "q7").to_array()
    geometry[:, 5:] = _core.solve_colors(geometry, img, 0)
    step = q.quantize(fitted, "q7").grids.field_step(5)
    geometry[:, 5:] = _core.round_colors(geometry, img, step, 0)
    colours_only = q.roundtrip(gscodec.Splats.from_array(geometry, 128, 96), "q7")
    finished = gscodec.ratecontrol.quantized_finish(fitted, img, "q7")
    assert psnr(gscodec.render(finished), img) > psnr(gscodec.render(colours_only), img) + 0.02


def test_a_longer_finish_search_renders_closer(sample_image):
    """More rounds of geometry rounding and colour solve, and more sweeps per
    round, render the finished file closer to the image; `fit(quantize_for=)`
    searches longer than the default finish."""
    img = sample_image[:96, :128]
    fitted = gscodec.fit(img, 200, iterations=60)
    quality = [psnr(gscodec.render(gscodec.ratecontrol.quantized_finish(
        fitted, img, "q7", rounds=r, sweeps=w)), img) for r, w in ((1, 2), (1, 8), (3, 8))]
    assert quality[0] < quality[1] < quality[2]
    assert (gscodec.engine.FINISH_ROUNDS, gscodec.engine.FINISH_SWEEPS) == (3, 8)
    with pytest.raises(ValueError, match="rounds"):
        gscodec.ratecontrol.quantized_finish(fitted, img, "q7", rounds=0)


def test_quantized_finish_beats_rounding_the_solved_colours(sample_image):
    """The finish (grid-aware geometry, then colour rounding) renders closer to
    the image than plain geometry with least-squares colours rounded one by one."""
    img = sample_image[:96, :128]
    fitted = gscodec.fit(img, 200, iterations=60)
    geometry = q.roundtrip(fitted, "q7").to_array()
    geometry[:, 5:] = _core.solve_colors(geometry, img, 0)
    rounded = q.roundtrip(gscodec.Splats.from_array(geometry, 128, 96), "q7")
    finished = gscodec.ratecontrol.quantized_finish(fitted, img, "q7")
    assert psnr(gscodec.render(finished), img) > psnr(gscodec.render(rounded), img) + 0.01


def test_quantize_for_rejects_float_precisions(sample_image):
    with pytest.raises(ValueError, match="quantize_for"):
        gscodec.fit(sample_image[:8, :8], 4, quantize_for="fp16")
    with pytest.raises(ValueError, match="quantize_for"):
        gscodec.fit(sample_image[:8, :8], 4, quantize_for="q99")


@pytest.mark.parametrize("n, iterations", [(1, 5), (7, 0), (7, 1), (50, 3), (333, 17)])
def test_requested_count_is_delivered(n, iterations):
    img = smooth_image(np.random.default_rng(n), 40, 36)
    s = gscodec.fit(img, n, iterations=iterations)
    assert len(s) == n
    s = gscodec.fit(img, n, iterations=iterations, densify_fraction=0.9, densify_rounds=7,
                    respawn_fraction=0.5)
    assert len(s) == n


def test_default_fit_is_deterministic_per_seed():
    img = smooth_image(np.random.default_rng(3), 48, 40)
    a = gscodec.fit(img, 60, iterations=40, seed=5, threads=2)
    b = gscodec.fit(img, 60, iterations=40, seed=5, threads=1)
    c = gscodec.fit(img, 60, iterations=40, seed=6)
    assert a == b
    assert a != c


def test_v2_beats_the_paper_fit_at_equal_steps(sample_image):
    v2 = gscodec.fit(sample_image, 400, iterations=100, return_stats=True)[1]["psnr"]
    paper = gscodec.fit(sample_image, 400, iterations=100, return_stats=True, **PAPER)[1]["psnr"]
    assert v2 > paper + 1.0


def test_more_iterations_never_hurt(sample_image):
    """The schedules (lr decay, densification rounds) scale with the run: a
    longer run of the default fit must not end worse than a shorter one."""
    psnrs = [gscodec.fit(sample_image, 400, iterations=t, return_stats=True)[1]["psnr"]
             for t in (50, 100, 300)]
    assert psnrs == sorted(psnrs), psnrs


def test_coarse_to_fine_fits_half_size_first_deterministically():
    img = smooth_image(np.random.default_rng(4), 260, 256)
    kw = dict(iterations=20, seed=1, return_stats=True)
    coarse, stats = gscodec.fit(img, 300, coarse_fraction=0.5, threads=1, **kw)
    again = gscodec.fit(img, 300, coarse_fraction=0.5, threads=2, **kw)[0]
    full, full_stats = gscodec.fit(img, 300, coarse_fraction=0.0, **kw)
    assert coarse == again and len(coarse) == 300
    assert coarse != full  # the coarse phase ran
    assert stats["psnr"] > full_stats["psnr"] - 1.0, (stats["psnr"], full_stats["psnr"])
    # Under 256 pixels a side there is no coarse phase: the option changes nothing.
    small = smooth_image(np.random.default_rng(5), 200, 256)
    assert (gscodec.fit(small, 100, iterations=10, coarse_fraction=0.5)
            == gscodec.fit(small, 100, iterations=10, coarse_fraction=0.0))


@pytest.mark.parametrize("bad", [-0.1, 0.95, float("nan")])
def test_coarse_fraction_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match="coarse_fraction"):
        gscodec.fit(np.zeros((8, 8, 3), np.uint8), 4, iterations=1, coarse_fraction=bad)


CTRL_C = """
import sys, numpy as np, gscodec
img = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
print("fitting", flush=True)
try:
    gscodec.fit(img, 400, iterations=1_000_000, threads=1, device=sys.argv[1])
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(3)
"""


def interrupt_when(proc: subprocess.Popen, stream, marker: bytes) -> tuple[int, float, str]:
    """Wait for ``marker`` on ``stream`` (the child is about to fit), let the fit
    run half a second, send SIGINT; returns (exit status, seconds from the
    signal to the exit, everything the stream carried)."""
    try:
        seen = b""
        while marker not in seen:
            chunk = os.read(stream.fileno(), 256)
            assert chunk, seen
            seen += chunk
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        sent = time.perf_counter()
        status = proc.wait(timeout=10)
        return status, time.perf_counter() - sent, (seen + stream.read()).decode()
    finally:
        proc.kill()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_ctrl_c_stops_a_long_fit_within_a_second(device):
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C, device], stdout=subprocess.PIPE)
    status, elapsed, out = interrupt_when(proc, proc.stdout, b"fitting")
    assert status == 3 and out.split() == ["fitting", "interrupted"]
    assert elapsed < 1.0


def test_ctrl_c_stops_a_cli_encode_within_a_second(tmp_path):
    src = tmp_path / "noise.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(src)
    # The CLI's main, started once its imports are done (the progress line is
    # only drawn on a terminal); reading a 224 x 224 PNG takes milliseconds.
    cli = ("import sys, gscodec.cli; print('ready', flush=True); "
           f"sys.exit(gscodec.cli.main(['encode', {str(src)!r}, '--iterations', '1000000']))")
    proc = subprocess.Popen([sys.executable, "-c", cli], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    status, elapsed, _ = interrupt_when(proc, proc.stdout, b"ready")
    err = proc.stderr.read().decode()
    assert status == 130
    assert "gscodec: interrupted" in err and "Traceback" not in err
    assert elapsed < 1.0
    assert not (tmp_path / "noise.gsi").exists()


def test_encode_without_a_precision_writes_q7s_quality_in_fewer_bits(sample_image):
    # The default: per-field grids chosen for the image at the q7 preset's
    # quality (finish counted), finished for those grids; smaller than the
    # preset's finished file at about its PSNR.
    img = np.ascontiguousarray(sample_image[:64, :64])
    encoded = gscodec.encode(img, n_splats=80, iterations=30)
    plain = gscodec.fit(img, 80, iterations=30)
    spec = gscodec.ratecontrol.precision_for(plain, img)
    finished = gscodec.ratecontrol.quantized_finish(plain, img, spec)
    data = gscodec.format.dumps(finished, precision=spec)
    assert encoded.info["file_bytes"] == len(data)
    np.testing.assert_array_equal(encoded.splats.to_array(),
                                  gscodec.format.loads(data).to_array())
    preset = gscodec.format.dumps(gscodec.ratecontrol.quantized_finish(plain, img, "q7"),
                                  precision="q7")
    assert len(data) < 0.95 * len(preset)
    assert psnr(gscodec.render(encoded.splats), img) > \
        psnr(gscodec.render(gscodec.format.loads(preset)), img) - 0.5


def test_encode_without_a_precision_never_writes_more_than_the_preset(monkeypatch, sample_image):
    # A fit closer than the preset's rounding can ask for finer grids than
    # the preset's (here: forced to q10's); the preset's file is then smaller,
    # and written.
    img = np.ascontiguousarray(sample_image[:32, :32])
    monkeypatch.setattr(gscodec.ratecontrol, "precision_for", lambda splats, pixels, preset: "q10")
    encoded = gscodec.encode(img, n_splats=20, iterations=30)
    assert encoded.precision == gscodec.encode(img, n_splats=20, iterations=30,
                                               precision="q7").precision
    monkeypatch.setattr(gscodec.ratecontrol, "precision_for", lambda splats, pixels, preset: "q6")
    assert gscodec.encode(img, n_splats=20, iterations=30).precision == \
        gscodec.encode(img, n_splats=20, iterations=30, precision="q6").precision
