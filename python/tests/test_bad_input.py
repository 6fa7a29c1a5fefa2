"""Bad arguments to the core API: a clear exception naming the argument, never a crash."""

import numpy as np
import pytest

import gscodec
from gscodec import Splats

IMG = np.zeros((16, 16, 3), np.uint8)


@pytest.mark.parametrize(
    "images,exc,match",
    [
        (np.zeros((16, 16, 3), np.float32), TypeError, "uint8"),
        (np.zeros((16, 16), np.uint8), ValueError, "H x W x 3"),
        (np.zeros((16, 16, 4), np.uint8), ValueError, "H x W x 3"),
        (np.zeros((2, 3, 16, 16, 3), np.uint8), ValueError, "shape"),
        (np.zeros((0, 16, 3), np.uint8), ValueError, "empty"),
        (np.zeros((16, 0, 3), np.uint8), ValueError, "empty"),
        ([], ValueError, "empty"),
        ([IMG, np.zeros((4, 4), np.uint8)], ValueError, r"images\[1\]"),
        ([IMG, "not an image"], TypeError, r"images\[1\]"),
        ("image.png", TypeError, "images"),
    ],
)
def test_bad_images(images, exc, match):
    with pytest.raises(exc, match=match):
        gscodec.fit(images, 4, iterations=1)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(n_splats=0), ValueError, "n_splats"),
        (dict(n_splats=-3), ValueError, "n_splats"),
        (dict(n_splats=gscodec.MAX_SPLATS + 1), ValueError, "n_splats"),
        (dict(n_splats=257), ValueError, "n_splats.*pixel"),
        (dict(n_splats=4.0), TypeError, "n_splats"),
        (dict(n_splats=True), TypeError, "n_splats"),
        (dict(iterations=-1), ValueError, "iterations"),
        (dict(iterations=gscodec.MAX_ITERATIONS + 1), ValueError, "iterations"),
        (dict(lr_color=float("nan")), ValueError, "lr_color"),
        (dict(lr_position=float("inf")), ValueError, "lr_position"),
        (dict(lr_covariance=-0.1), ValueError, "lr_covariance"),
        (dict(lr_final_ratio=2.0), ValueError, "lr_final_ratio"),
        (dict(l1_color=float("nan")), ValueError, "l1_color"),
        (dict(prune_threshold=-1.0), ValueError, "prune_threshold"),
        (dict(prune_every=0), ValueError, "prune_every"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(threads=-2), ValueError, "threads"),
        (dict(init="spiral"), ValueError, "init"),
        (dict(device="tpu"), ValueError, "device"),
    ],
)
def test_bad_fit_parameters(kwargs, exc, match):
    args = dict(n_splats=4, iterations=1) | kwargs
    with pytest.raises(exc, match=match):
        gscodec.fit(IMG, **args)


def test_cuda_requested_without_cuda():
    if gscodec.backends()["cuda_available"]:
        pytest.skip("a CUDA device is present")
    with pytest.raises(RuntimeError, match="cuda"):
        gscodec.fit(IMG, 4, iterations=1, device="cuda")


def test_single_pixel_image_and_one_splat():
    s = gscodec.fit(np.full((1, 1, 3), 200, np.uint8), 1, iterations=5)
    assert len(s) == 1 and (s.width, s.height) == (1, 1)
    assert gscodec.render(s)[0, 0, 0] == pytest.approx(200, abs=2)


def test_non_contiguous_input_is_accepted():
    img = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    a = gscodec.fit(img[:, ::-1], 9, iterations=5, device="cpu")
    b = gscodec.fit(np.ascontiguousarray(img[:, ::-1]), 9, iterations=5, device="cpu")
    assert a == b


@pytest.mark.parametrize(
    "fields,exc,match",
    [
        (dict(xy=np.zeros((2, 3))), ValueError, r"xy must have shape \(N, 2\)"),
        (dict(rgb=np.zeros((3, 3))), ValueError, "rgb has 3 rows"),
        (dict(chol=np.array([[0.1, 0, 0.0], [0.1, 0, 0.1]])), ValueError, "positive"),
        (dict(rgb=np.array([[np.nan, 0, 0], [0, 0, 0]])), ValueError, "NaN"),
        (dict(xy=np.zeros((2, 2), np.int32)), TypeError, "floating"),
        (dict(xy=[[0, 0], [0, 0]]), TypeError, "numpy array"),
        (dict(width=0), ValueError, "width"),
        (dict(height=2.5), TypeError, "height"),
    ],
)
def test_bad_splats(fields, exc, match):
    good = dict(xy=np.zeros((2, 2)), chol=np.full((2, 3), 0.1), rgb=np.zeros((2, 3)),
                width=8, height=8)
    with pytest.raises(exc, match=match):
        Splats(**(good | fields))


def test_splats_arrays_are_frozen_copies():
    xy = np.zeros((1, 2))
    s = Splats(xy, np.full((1, 3), 0.1), np.zeros((1, 3)), 4, 4)
    xy[0, 0] = 1
    assert s.xy[0, 0] == 0
    with pytest.raises(ValueError):
        s.xy[0, 0] = 1
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        Splats.from_array(np.zeros((3, 7)), 4, 4)
