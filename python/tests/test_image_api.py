"""The PIL-style API: gscodec.encode / decode / open and the lazy GSImage."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import gscodec
from gscodec import GSIError, GSImage, Splats, engine
from gscodec.metrics import psnr
from gscodec import format as fmt
from gscodec import quantize as q

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture(autouse=True)
def fit_calls(monkeypatch):
    """Records the splat count of every fit from scratch (rate control's fits;
    the finish's warm-started steps are not counted)."""
    calls = []
    real = engine.fit

    def fit(*args, **kwargs):
        if not isinstance(kwargs.get("init"), Splats):
            calls.append(args[1] if len(args) > 1 else kwargs["n_splats"])
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "fit", fit)
    return calls


def smooth_image(seed: int, width: int, height: int, edge: bool = False) -> np.ndarray:
    """A random smooth image: gradient plus a few Gaussian blobs (and an edge)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    img = rng.uniform(0.2, 0.8, 3) + rng.uniform(-0.4, 0.4, 3) * xx[..., None] \
        + rng.uniform(-0.4, 0.4, 3) * yy[..., None]
    for _ in range(3):
        cx, cy, r = rng.uniform(0, 1, 2).tolist() + [rng.uniform(0.1, 0.4)]
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        img = img + rng.uniform(-0.5, 0.5, 3) * blob[..., None]
    if edge:
        img[:, : width // 2] += 0.3
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return smooth_image(0, 24, 16)


@pytest.fixture
def gsi_path(tmp_path, image) -> Path:
    path = tmp_path / "img.gsi"
    gscodec.encode(image, n_splats=24, iterations=80).save(path)
    return path


# ---------------------------------------------------------------- encode


def test_exports() -> None:
    for name in ("open", "encode", "decode", "GSImage", "GSIError"):
        assert name in gscodec.__all__ and hasattr(gscodec, name)
    assert issubclass(GSIError, ValueError)


def test_encode_array_pil_and_path_agree(tmp_path, image) -> None:
    png = tmp_path / "in.png"
    Image.fromarray(image).save(png)
    results = [gscodec.encode(src, n_splats=20, iterations=60)
               for src in (image, Image.fromarray(image), png, str(png))]
    data = {g.tobytes() for g in results}
    assert len(data) == 1  # fitting is deterministic
    g = results[0]
    assert isinstance(g, GSImage)
    assert (g.size, g.width, g.height, g.mode, g.n_splats) == ((24, 16), 24, 16, "RGB", 20)
    # By default q7's quality with grids chosen for the image: never more
    # bytes than the q7 preset's file
    assert len(g.tobytes()) <= len(gscodec.encode(image, n_splats=20, iterations=60,
                                                  precision="q7").tobytes())


def test_encode_accepts_grey_and_rgba_arrays(image) -> None:
    grey = gscodec.encode(image[:, :, 0], n_splats=10, iterations=20)
    rgba = gscodec.encode(np.dstack([image, np.full(image.shape[:2], 7, np.uint8)]),
                          n_splats=10, iterations=20)
    assert grey.size == rgba.size == (24, 16)


def test_default_splat_count_and_precision_option(image) -> None:
    g = gscodec.encode(image, iterations=10, precision="fp32")
    assert g.n_splats == 6  # ceil(24 * 16 / 64)
    assert g.precision == "fp32"


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.integers(0, 2**32 - 1), st.integers(12, 32), st.integers(12, 32), st.booleans())
def test_encode_decode_keeps_psnr(seed: int, width: int, height: int, edge: bool) -> None:
    img = smooth_image(seed, width, height, edge)
    g = gscodec.encode(img, n_splats=width * height // 8, iterations=150)
    # smooth images: measured 36-41 dB; a hard edge costs a few dB more
    assert psnr(np.asarray(gscodec.decode(g.tobytes())), img) > (24 if edge else 30)


@pytest.mark.parametrize("bpp", [3.0, 6.0])
def test_bpp_rate_control_lands_within_10_percent(bpp, fit_calls) -> None:
    img = smooth_image(1, 32, 32)
    g = gscodec.encode(img, bpp=bpp, iterations=60)
    assert abs(g.info["bpp"] / bpp - 1) <= 0.10
    assert len(fit_calls) == 1  # no refit: the fit aims over and is trimmed


def test_bpp_rate_control_trims_when_over(monkeypatch, fit_calls) -> None:
    # An estimate far too low makes every fit overshoot: the result is trimmed.
    img = smooth_image(2, 32, 32)
    monkeypatch.setattr(q, "estimate_bits_per_splat", lambda *a, **k: 5.0)
    monkeypatch.setattr(gscodec.ratecontrol, "MAX_FITS", 1)
    g = gscodec.encode(img, bpp=4.0, iterations=30)
    assert 0.9 <= g.info["bpp"] / 4.0 <= 1.0
    assert len(fit_calls) == 1 and g.n_splats < fit_calls[0]


def test_bpp_picks_a_finer_precision_when_splats_run_out() -> None:
    # 8x8 pixels hold at most 64 splats: 200 bpp needs more bits per splat.
    g = gscodec.encode(smooth_image(3, 8, 8), bpp=200.0, iterations=20)
    assert g.precision in ("fp16", "fp32")
    assert g.n_splats <= 64
    assert abs(g.info["bpp"] / 200.0 - 1) <= 0.10


# ---------------------------------------------------------------- open, lazy GSImage


def test_open_sources_agree(gsi_path) -> None:
    data = gsi_path.read_bytes()
    with open(gsi_path, "rb") as f:
        from_file = gscodec.open(f)
    images = [gscodec.open(gsi_path), gscodec.open(str(gsi_path)), gscodec.open(data),
              gscodec.open(bytearray(data)), gscodec.open(io.BytesIO(data)), from_file]
    for g in images:
        assert g.size == (24, 16) and g.n_splats == 24
        assert g.splats == images[0].splats
        assert g.tobytes() == data
    assert images[0].filename == str(gsi_path)
    info = images[0].info
    assert info["file_bytes"] == len(data)
    assert info["bits_per_splat"] == pytest.approx(len(data) * 8 / 24)


def test_open_is_lazy(gsi_path, monkeypatch) -> None:
    decoded = []
    real = fmt.decode_payload
    monkeypatch.setattr(fmt, "decode_payload", lambda *a: decoded.append(1) or real(*a))
    for src in (gsi_path, gsi_path.read_bytes()):
        g = gscodec.open(src)
        assert (g.size, g.n_splats, g.mode, g.info["precision"]) == \
            ((24, 16), 24, "RGB", g.precision)
        assert decoded == []
        assert isinstance(g.splats, Splats) and g.splats is g.splats
        assert decoded == [1]
        decoded.clear()


def test_render_and_to_pil_sizes(gsi_path) -> None:
    g = gscodec.open(gsi_path)
    assert g.render().shape == (16, 24, 3)
    assert g.render((48, 32)).shape == (32, 48, 3)
    assert g.render((12, None)).shape == (8, 12, 3)
    assert g.render((None, 8)).shape == (8, 12, 3)
    pil = g.to_pil((30, 20))
    assert pil.mode == "RGB" and pil.size == (30, 20)
    assert np.array_equal(np.asarray(g.to_pil()), gscodec.render(g.splats))
    with pytest.raises(TypeError, match="size must be a"):
        g.render(48)  # type: ignore[arg-type]


def test_decode(gsi_path) -> None:
    im = gscodec.decode(gsi_path)
    assert isinstance(im, Image.Image) and im.size == (24, 16) and im.mode == "RGB"
    assert gscodec.decode(gsi_path.read_bytes(), size=(6, 4)).size == (6, 4)


def test_context_manager_and_close(gsi_path) -> None:
    with gscodec.open(gsi_path) as g:
        g.render()
    assert g.size == (24, 16)  # header facts survive close
    with pytest.raises(ValueError, match="closed"):
        g.splats


def test_save_copies_or_reencodes(gsi_path, tmp_path) -> None:
    g = gscodec.open(gsi_path)
    g.save(tmp_path / "copy.gsi")
    assert (tmp_path / "copy.gsi").read_bytes() == gsi_path.read_bytes()
    buf = io.BytesIO()
    g.save(buf)
    assert buf.getvalue() == gsi_path.read_bytes()
    g.save(tmp_path / "fp32.gsi", precision="fp32", metadata={"note": "re-encoded"})
    again = gscodec.open(tmp_path / "fp32.gsi")
    assert again.precision == "fp32" and again.metadata == {"note": "re-encoded"}
    assert again.splats == g.splats  # fp32 keeps the decoded values exactly
    with pytest.raises(TypeError, match="unknown options: quality"):
        g.save(tmp_path / "x.gsi", quality=3)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        g.save(tmp_path / "no" / "x.gsi")


def test_file_changed_after_open(gsi_path, image) -> None:
    g = gscodec.open(gsi_path)
    gscodec.encode(image, n_splats=5, iterations=5).save(gsi_path)
    with pytest.raises(GSIError, match="changed since it was opened"):
        g.splats


# ---------------------------------------------------------------- bad input


def test_bad_inputs(tmp_path, image, fit_calls) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="cannot read image .*notes.png"):
        gscodec.encode(text, n_splats=4)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        gscodec.encode(tmp_path / "missing.png", n_splats=4)
    with pytest.raises(TypeError, match="must be uint8"):
        gscodec.encode(image.astype(np.float32), n_splats=4)
    with pytest.raises(ValueError, match="shape"):
        gscodec.encode(np.zeros((4, 4, 2), np.uint8), n_splats=4)
    with pytest.raises(TypeError, match="PIL image, a uint8 array or a path"):
        gscodec.encode(42, n_splats=4)
    with pytest.raises(ValueError, match="n_splats or bpp, not both"):
        gscodec.encode(image, n_splats=4, bpp=1.0)
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        gscodec.encode(image, n_splats=4, precision="fp8")
    with pytest.raises(ValueError, match="bpp=0.01 is too low for a 24x16 image"):
        gscodec.encode(image, bpp=0.01)
    with pytest.raises(ValueError, match="bpp must be a positive number"):
        gscodec.encode(image, bpp=-1.0)
    assert fit_calls == []  # all of these fail before any fitting


def test_open_bad_sources(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        gscodec.open(tmp_path / "missing.gsi")
    png = tmp_path / "a.png"
    Image.new("RGB", (4, 4)).save(png)
    with pytest.raises(GSIError, match=r"a.png: offset 0: not a .gsi file"):
        gscodec.open(png)
    with pytest.raises(GSIError, match="<bytes>: offset 0: file is truncated"):
        gscodec.open(b"")
    with pytest.raises(TypeError, match="path, a binary file object or bytes"):
        gscodec.open(3.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("bpp", [1e308, 1e6])
def test_bpp_beyond_any_file_is_a_clear_error(image, fit_calls, bpp) -> None:
    # 1e308 overflowed to inf inside rate control (OverflowError from round()).
    with pytest.raises(ValueError, match=r"bpp=.* is too high for a 24x16 image"):
        gscodec.encode(image, bpp=bpp)
    assert fit_calls == []


def test_bpp_chooses_count_and_precision_together(fit_calls) -> None:
    # No precision given: the fit's precision is reallocated per field at q7's
    # distortion (fewer bits per splat), and the bits saved keep more splats.
    img = smooth_image(4, 32, 32)
    joint = gscodec.encode(img, bpp=4.0, iterations=60)
    at_q7 = gscodec.encode(img, bpp=4.0, precision="q7", iterations=60)
    assert joint.precision != at_q7.precision
    assert abs(joint.info["bpp"] / 4.0 - 1) <= 0.10
    assert joint.n_splats > at_q7.n_splats


@pytest.mark.parametrize("close_fit", [False, True])
def test_reallocation_counts_the_finish_but_keeps_a_close_fit_precise(
        monkeypatch, sample_image, close_fit: bool) -> None:
    # The finish recovers most of plain rounding's error, so rate control asks
    # `allocate` for a looser distortion than the preset's: by the finish
    # margin, but never closer to the fit's own error than the fit margin.
    # A smooth image fitted with many splats (close) meets the second; a
    # photo crop with few splats the first.
    rc = gscodec.ratecontrol
    img = smooth_image(5, 32, 32) if close_fit else np.ascontiguousarray(sample_image[:64, :64])
    splats = gscodec.fit(img, 100 if close_fit else 20, iterations=60)
    asked = []
    allocate = q.allocate
    monkeypatch.setattr(q, "allocate", lambda s, target: asked.append(target) or allocate(s, target))
    spec = rc.precision_for(splats, img)
    rendered = gscodec.render(splats)
    preset = psnr(gscodec.render(q.roundtrip(splats, "q7")), rendered)
    fit = psnr(rendered, img)
    assert asked == [pytest.approx(max(preset - rc._FINISH_MARGIN_DB, fit + rc._FIT_MARGIN_DB))]
    assert (fit + rc._FIT_MARGIN_DB > preset - rc._FINISH_MARGIN_DB) == close_fit
    if not close_fit:  # looser than the preset's distortion: fewer bits
        assert len(fmt.dumps(splats, precision=spec)) < len(fmt.dumps(splats, precision=allocate(
            splats, preset)))


@pytest.mark.parametrize("share", [0.3, 0.8, 0.97])
def test_trim_keeps_the_most_splats_that_fit(share: float) -> None:
    splats = gscodec.fit(smooth_image(4, 48, 40), 300, iterations=20)
    precision = "q:pos=+2,scale=7,shear=7,color=6.5"
    budget = share * len(fmt.dumps(splats, precision=precision)) * 8
    kept = gscodec.ratecontrol._trim(splats, precision, budget)
    assert len(fmt.dumps(kept, precision=precision)) * 8 <= budget
    # one more (the next weakest) no longer fits
    arr = splats.to_array()
    energy = (arr[:, 5:8].astype(np.float64) ** 2).sum(1) * arr[:, 2] * arr[:, 4]
    order = np.argsort(-energy, kind="stable")
    one_more = Splats.from_array(arr[np.sort(order[:len(kept) + 1])], 48, 40)
    assert len(fmt.dumps(one_more, precision=precision)) * 8 > budget
    assert kept == Splats.from_array(arr[np.sort(order[:len(kept)])], 48, 40)


def test_trim_returns_fitting_splats_unchanged_and_keeps_one_at_least() -> None:
    splats = gscodec.fit(smooth_image(5, 24, 24), 40, iterations=10)
    size = len(fmt.dumps(splats, precision="q7")) * 8
    assert gscodec.ratecontrol._trim(splats, "q7", size) is splats
    assert len(gscodec.ratecontrol._trim(splats, "q7", 8.0)) == 1
