"""The Pillow plugin: PIL.Image.open / load / save of .gsi files."""

from __future__ import annotations

import gc
import io
import warnings

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

import gscodec
from gscodec import GSIError
from gscodec import format as fmt

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:20, 0:30]
    img = np.stack([xx * 8, yy * 12, 120 + 0 * xx], axis=2) + rng.integers(0, 10, (20, 30, 3))
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


@pytest.fixture
def gsi_file(tmp_path, picture):
    path = tmp_path / "x.gsi"
    gscodec.encode(picture, n_splats=40, iterations=60).save(path)
    return path


def test_registration() -> None:
    assert Image.registered_extensions()[".gsi"] == "GSI"
    assert Image.MIME["GSI"] == "image/x-gsi"
    assert "GSI" in Image.OPEN and "GSI" in Image.SAVE


def test_open_reads_header_then_decodes_on_load(gsi_file, monkeypatch) -> None:
    calls = []
    real = fmt.decode_payload
    monkeypatch.setattr(fmt, "decode_payload", lambda *a: calls.append(1) or real(*a))
    with Image.open(gsi_file) as im:
        assert (im.format, im.mode, im.size) == ("GSI", "RGB", (30, 20))
        assert im.get_format_mimetype() == "image/x-gsi"
        assert im.info["n_splats"] == 40 and im.info["version"] == "3.0"
        assert calls == []
        im.load()
        assert calls == [1]
        pixels = np.asarray(im)
    assert np.array_equal(pixels, gscodec.open(gsi_file).render())


def test_open_from_file_object_and_bytes(gsi_file) -> None:
    data = gsi_file.read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "GSI"
        from_bytes = np.asarray(im.convert("RGB"))
    with open(gsi_file, "rb") as f, Image.open(f) as im:
        assert np.array_equal(np.asarray(im), from_bytes)


def test_save_encodes_with_options(tmp_path, picture) -> None:
    out = tmp_path / "saved.gsi"
    picture.save(out, n_splats=25, iterations=40, precision="fp16")
    g = gscodec.open(out)
    assert (g.n_splats, g.precision, g.size) == (25, "fp16", (30, 20))
    picture.save(tmp_path / "rate.gsi", bpp=4.0, iterations=40)
    assert abs(gscodec.open(tmp_path / "rate.gsi").info["bpp"] / 4.0 - 1) <= 0.10
    buf = io.BytesIO()
    picture.convert("L").save(buf, format="GSI", n_splats=10, iterations=10)
    assert gscodec.open(buf.getvalue()).n_splats == 10


def test_failed_save_leaves_no_file(tmp_path, picture) -> None:
    out = tmp_path / "bad.gsi"
    with pytest.raises(ValueError, match="unknown precision"):
        picture.save(out, n_splats=5, precision="nope")
    assert not out.exists()


def test_foreign_files_are_not_claimed(tmp_path, picture) -> None:
    png = tmp_path / "a.png"
    picture.save(png)
    with Image.open(png) as im:
        assert im.format == "PNG"
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(b"GSI but not really" * 4))
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(b""), formats=["GSI"])


def test_corrupt_gsi_raises_gsierror_and_closes_the_file(gsi_file) -> None:
    data = gsi_file.read_bytes()
    gsi_file.write_bytes(data[:5] + b"\x00" + data[6:])  # width 0
    with pytest.raises(GSIError, match="x.gsi: offset 5: header: reference size 0x20"):
        Image.open(gsi_file)
    gsi_file.write_bytes(data[:-20])  # header fine, payload truncated
    with Image.open(gsi_file) as im:
        with pytest.raises(GSIError, match="truncated"):
            im.load()


def test_no_resource_warning(gsi_file) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        im = Image.open(gsi_file)
        im.load()
        im.close()
        Image.open(gsi_file).close()
        with Image.open(gsi_file) as im2:
            im2.load()
        gc.collect()
