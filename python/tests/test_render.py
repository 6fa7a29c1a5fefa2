"""Decode: the C++ renderer against the reference twin of the render equation."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gscodec
from gscodec import Splats
from reference import CUTOFF, cutoff_box, power, random_splats, render, to_pixel, to_u8

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # conftest.py


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 60),
    width=st.integers(1, 70),
    height=st.integers(1, 50),
)
def test_render_matches_reference(seed, n, width, height):
    rng = np.random.default_rng(seed)
    params = random_splats(rng, n, width, height)
    splats = Splats.from_array(params, width, height)
    got = gscodec.render(splats, dtype=np.float32)
    want = render(to_pixel(params, width, height), width, height).numpy()
    assert got.shape == (height, width, 3) and got.dtype == np.float32
    scale = 1 + np.abs(params[:, 5:8]).sum()
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * scale)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 40), width=st.integers(1, 60),
       height=st.integers(1, 40), big=st.booleans())
def test_cutoff_box_holds_every_pixel_the_cutoff_admits(seed, n, width, height, big):
    """The backends evaluate a splat only inside its cutoff box; in float32, as
    they compute it, no pixel outside the box may pass the cutoff."""
    rng = np.random.default_rng(seed)
    params = random_splats(rng, n, width, height)
    if big:
        params[:, 2:5] *= 8
    pixel = to_pixel(params, width, height)
    inside = (power(pixel, width, height) <= CUTOFF).numpy()
    x0, x1, y0, y1, nonempty = (t.numpy() for t in cutoff_box(pixel, width, height))
    cols, rows = np.arange(width), np.arange(height)[:, None]
    in_box = (nonempty[:, None, None] & (cols >= x0[:, None, None]) & (cols <= x1[:, None, None])
              & (rows >= y0[:, None, None]) & (rows <= y1[:, None, None]))
    assert not (inside & ~in_box).any()


def test_u8_is_clamped_rounded_float_render():
    rng = np.random.default_rng(1)
    splats = Splats.from_array(random_splats(rng, 200, 96, 64), 96, 64)
    f = gscodec.render(splats, dtype=np.float32)
    u = gscodec.render(splats)
    assert u.dtype == np.uint8
    np.testing.assert_array_equal(u, to_u8(f))


def test_resolution_free_rendering():
    """Positions are normalized: a 2x render, box-downsampled, matches the 1x render."""
    rng = np.random.default_rng(2)
    params = random_splats(rng, 30, 40, 30)
    params[:, 2:5] *= 3  # smooth splats, so box filtering barely changes them
    splats = Splats.from_array(params, 40, 30)
    small = gscodec.render(splats, dtype=np.float32)
    big = gscodec.render(splats, 80, 60, dtype=np.float32)
    down = big.reshape(30, 2, 40, 2, 3).mean(axis=(1, 3))
    assert np.abs(down - small).max() < 0.02 * (1 + np.abs(params[:, 5:8]).sum(axis=0).max())


def test_render_one_side_keeps_aspect():
    splats = Splats.from_array(random_splats(np.random.default_rng(3), 5, 60, 40), 60, 40)
    assert gscodec.render(splats, width=30).shape == (20, 30, 3)
    assert gscodec.render(splats, height=80).shape == (80, 120, 3)


def test_render_batch_equals_single_renders():
    rng = np.random.default_rng(4)
    sets = [Splats.from_array(random_splats(rng, k, w, h), w, h)
            for k, w, h in [(10, 20, 10), (50, 64, 48), (1, 5, 7)]]
    batch = gscodec.render_batch(sets, [None, (32, 24), None])
    assert [b.shape for b in batch] == [(10, 20, 3), (24, 32, 3), (7, 5, 3)]
    np.testing.assert_array_equal(batch[1], gscodec.render(sets[1], 32, 24))


def test_splat_far_outside_image_renders_nothing():
    params = np.array([[5.0, -3.0, 0.01, 0.0, 0.01, 1, 1, 1]], np.float32)
    out = gscodec.render(Splats.from_array(params, 16, 16), dtype=np.float32)
    assert not out.any()


def test_empty_splat_set_renders_black():
    out = gscodec.render(Splats.from_array(np.zeros((0, 8), np.float32), 8, 4))
    assert out.shape == (4, 8, 3) and not out.any()


@pytest.mark.parametrize("width,height", [(0, 5), (5, 0), (-1, 5), (70000, 4), (40000, 40000)])
def test_bad_render_size(width, height):
    splats = Splats.from_array(random_splats(np.random.default_rng(0), 3, 8, 8), 8, 8)
    with pytest.raises(ValueError, match="render"):
        gscodec.render(splats, width, height)


def test_bad_render_arguments():
    splats = Splats.from_array(random_splats(np.random.default_rng(0), 3, 8, 8), 8, 8)
    with pytest.raises(TypeError, match="splats"):
        gscodec.render(np.zeros((3, 8), np.float32), 8, 8)
    with pytest.raises(TypeError, match="width"):
        gscodec.render(splats, 8.5, 8)
    with pytest.raises(TypeError, match="dtype"):
        gscodec.render(splats, dtype=np.float64)
    with pytest.raises(ValueError, match="device"):
        gscodec.render(splats, device="tpu")
