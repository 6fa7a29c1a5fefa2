"""Hostile files and inputs (issue 9): every file the parser accepts decodes
memory-safely and within the documented limits of `gscodec.limits`; bad input
gets a clear error, never a crash or a traceback."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
from PIL import Image

import gscodec
from gscodec import Splats, _core, cli, limits
from gscodec import format as fmt
from gscodec.limits import DecodeLimitError

from reference import random_splats


def full_cover(n: int, width: int, height: int) -> Splats:
    """n splats so wide (normalized radius 10) that each covers every tile."""
    return Splats.from_array(np.tile(np.float32([[.5, .5, 10, 0, 10, 1e-6, 1e-6, 1e-6]]), (n, 1)),
                             width, height)


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=os.environ | {"OMP_NUM_THREADS": "2"})


def patch_head(data: bytes, patch) -> bytes:
    """``data`` with its HEAD chunk's bytes changed in place by ``patch`` (CRC redone)."""
    at = data.index(b"HEAD")
    (length,) = struct.unpack_from("<I", data, at - 4)
    head = bytearray(data[at + 4:at + 4 + length])
    patch(head)
    crc = struct.pack("<I", zlib.crc32(b"HEAD" + bytes(head)))
    return data[:at + 4] + bytes(head) + crc + data[at + 4 + length + 4:]


def with_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` with another reference size (width and height open the HEAD chunk)."""
    return patch_head(data, lambda head: struct.pack_into("<HH", head, 0, width, height))


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """The 588-byte file of issue 9: 2^20 splats that each cover every tile, 224 x 224."""
    data = fmt.dumps(full_cover(1 << 20, 224, 224), version=fmt.VERSION_1)  # HEAD patched below
    assert len(data) == 588
    return data


# ------------------------------------------------------------ decode-work limits


def test_bomb_file_of_588_bytes_is_refused_without_crashing(bomb, tmp_path):
    # At 1024 x 1024: 2^20 splats x 4096 tiles = 2^32 pairs, which overflowed the
    # int tile binning (SIGSEGV).
    path = tmp_path / "bomb.gsi"
    path.write_bytes(with_size(bomb, 1024, 1024))
    result = run_python(f"""
        import gscodec
        try:
            gscodec.open({str(path)!r}).render()
        except gscodec.GSIError as e:
            print(e)
    """)
    assert result.returncode == 0, result.stderr
    assert f"{path}: render: 1048576 splats at 1024x1024 cover 4294967296 splat-tile pairs" \
        in result.stdout
    assert "gscodec.limits.MAX_DECODE_WORK" in result.stdout


def test_work_bomb_is_refused_before_rendering_everywhere(tmp_path, capsys):
    # A quarter of the 588-byte bomb (16 s to render before the limit) keeps this fast.
    bomb = fmt.dumps(full_cover(1 << 18, 224, 224))
    path = tmp_path / "bomb.gsi"
    path.write_bytes(bomb)
    with pytest.raises(gscodec.GSIError, match=f"{path}: render: .*MAX_DECODE_WORK"):
        gscodec.open(path).render()
    with pytest.raises(gscodec.GSIError, match="MAX_DECODE_WORK"):
        gscodec.open(path).to_pil()
    with Image.open(path) as im, pytest.raises(gscodec.GSIError, match="MAX_DECODE_WORK"):
        im.load()
    splats = gscodec.open(bomb).splats
    with pytest.raises(DecodeLimitError, match=r"51380224 splat-tile pairs.*MAX_DECODE_WORK"):
        gscodec.render(splats)
    with pytest.raises(ValueError, match=r"splats\[1\]\).*MAX_DECODE_WORK"):
        gscodec.render_batch([full_cover(1, 8, 8), splats])
    assert cli.main(["decode", str(path), "-o", str(tmp_path / "out.png")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gscodec: error:") and "MAX_DECODE_WORK" in err
    assert not (tmp_path / "out.png").exists()


def test_decode_work_counts_the_pairs_of_the_cutoff_boxes():
    rng = np.random.default_rng(3)
    params = random_splats(rng, 300, 100, 70) / np.float32([100, 70, 100, 70, 70, 1, 1, 1])
    params = params.astype(np.float32)
    for width, height in ((100, 70), (33, 250), (1, 1)):
        x, y, a, b, c = (params[:, i].astype(np.float64) for i in range(5))
        # splat_math.h: half extents sqrt(cutoff) * (|a|, sqrt(b^2 + c^2)) in pixels
        k = np.sqrt(np.float64(_core.POWER_CUTOFF))
        tiles = 1
        for centre, extent, size in ((x * width, k * a * width, width),
                                     (y * height, k * np.hypot(b * height, c * height), height)):
            lo = np.maximum(np.ceil(centre - extent - 0.5), 0)
            hi = np.minimum(np.floor(centre + extent - 0.5), size - 1)
            tiles = tiles * np.where(lo <= hi, hi // 16 - lo // 16 + 1, 0)
        expected = int(tiles.sum())
        (work,) = _core.decode_work([params], [width], [height])
        # float32 in the core vs float64 here: boxes may differ by a pixel at a tile edge
        assert abs(work - expected) <= max(3, expected // 100), (width, height)
    assert _core.decode_work([full_cover(5, 1000, 1000).to_array()], [1000], [1000]) == [5 * 63 * 63]


def test_limits_are_read_at_run_time_and_can_be_raised_or_disabled(monkeypatch):
    splats = full_cover(100, 64, 64)  # 100 x 16 pairs
    assert gscodec.render(splats).shape == (64, 64, 3)
    monkeypatch.setattr(limits, "MAX_DECODE_WORK", 1599)
    with pytest.raises(DecodeLimitError, match=r"1600 splat-tile pairs.*\(1599\)"):
        gscodec.render(splats)
    monkeypatch.setattr(limits, "MAX_DECODE_WORK", 1600)
    gscodec.render(splats)
    monkeypatch.setattr(limits, "MAX_DECODE_WORK", None)
    monkeypatch.setattr(limits, "MAX_DECODE_PIXELS", 64 * 64 - 1)
    with pytest.raises(DecodeLimitError, match=r"4096 pixels.*MAX_DECODE_PIXELS \(4095\)"):
        gscodec.render(splats)
    assert gscodec.render(splats, 63, 64).shape == (64, 63, 3)
    monkeypatch.setattr(limits, "MAX_DECODE_PIXELS", None)
    assert gscodec.render(splats, 640, 640).shape == (640, 640, 3)


def test_pixel_bomb_and_huge_reference_sizes_are_file_errors():
    # 16384 x 16384 from one splat (5 s and 4 GB before): over MAX_DECODE_PIXELS.
    tiny = Splats.from_array(np.float32([[.5, .5, .1, 0, .1, 1, 1, 1]]), 16384, 16384)
    with pytest.raises(gscodec.GSIError, match=r"268435456 pixels.*MAX_DECODE_PIXELS"):
        gscodec.open(fmt.dumps(tiny)).render()
    with pytest.raises(DecodeLimitError, match="MAX_DECODE_PIXELS"):
        gscodec.render(tiny)
    # Spec-valid reference sizes over 2^28 pixels: a clear file error, whatever the settings.
    huge = Splats.from_array(np.float32([[.5, .5, .1, 0, .1, 1, 1, 1]]), 65535, 65535)
    image = gscodec.open(fmt.dumps(huge))
    with pytest.raises(gscodec.GSIError, match=r"4294836225 pixels.*MAX_PIXELS"):
        image.render()
    assert image.render((64, 64)).shape == (64, 64, 3)


def test_normal_decodes_pass_the_default_limits():
    rng = np.random.default_rng(0)
    # A Kodak-size fit: 20k splats whose size is a couple of grid cells.
    n, width, height = 20000, 768, 512
    cell = np.sqrt(width * height / n)
    xy = rng.uniform(0, 1, (n, 2))
    std = cell * rng.uniform(0.5, 3, (n, 2))
    chol = np.stack([std[:, 0] / width, np.zeros(n), std[:, 1] / height], axis=1)
    splats = Splats(xy, chol, rng.uniform(0, 0.2, (n, 3)), width, height)
    for scale in (1, 4):
        w, h = width * scale, height * scale
        assert w * h <= limits.MAX_DECODE_PIXELS
        (work,) = _core.decode_work([splats.to_array()], [w], [h])
        assert work <= limits.MAX_DECODE_WORK / 8, (scale, work)
    assert 16384 * 16384 > limits.MAX_DECODE_PIXELS  # the largest size only deliberately


# ------------------------------------------------------------ memory safety


def test_tile_binning_past_2_to_the_31_pairs_is_memory_safe():
    # 2^19 splats x 4096 tiles = 2^31 pairs, the limit disabled: an int overflow
    # aborted the process; now the 8 GiB tile list fails to allocate cleanly.
    result = run_python("""
        import resource, numpy as np, gscodec
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        gscodec.limits.MAX_DECODE_WORK = None
        a = np.tile(np.float32([[.5, .5, 10, 0, 10, 1e-6, 1e-6, 1e-6]]), (1 << 19, 1))
        try:
            gscodec.render(gscodec.Splats.from_array(a, 1024, 1024), device="cpu")
        except MemoryError:
            print("MemoryError")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "MemoryError"


def test_out_of_memory_inside_parallel_regions_raises_memory_error():
    # Two images on two threads: the allocations fail inside OpenMP regions,
    # which aborted the process (std::bad_alloc cannot leave a parallel region).
    result = run_python("""
        import resource, numpy as np, gscodec
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        gscodec.limits.MAX_DECODE_PIXELS = None
        s = gscodec.Splats.from_array(np.float32([[.5, .5, .1, 0, .1, 1, 1, 1]]), 16384, 16384)
        for run in (lambda: gscodec.render_batch([s, s], dtype=np.float32, device="cpu"),
                    lambda: gscodec.fit([np.zeros((16384, 16384, 3), np.uint8)] * 2, 1,
                                        iterations=0, device="cpu")):
            try:
                run()
            except MemoryError:
                print("MemoryError")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["MemoryError", "MemoryError"]


# ------------------------------------------------------------ limits defined once


def test_limits_match_the_compiled_core():
    for name in ("MAX_SPLATS", "MAX_SIDE", "MAX_PIXELS", "MAX_ITERATIONS"):
        assert getattr(limits, name) == getattr(_core, name), name
    assert gscodec.MAX_SPLATS == limits.MAX_SPLATS and fmt.MAX_SPLATS == limits.MAX_SPLATS


def test_format_and_limits_import_without_the_compiled_core():
    data = fmt.dumps(full_cover(3, 5, 4), precision="q7")
    result = run_python(f"""
        import sys
        sys.modules["gscodec._core"] = None  # any import of it now fails
        import gscodec.format, gscodec.limits
        s = gscodec.format.loads({data!r})
        print(len(s), s.width, s.height, gscodec.limits.MAX_SPLATS)
        try:
            gscodec.render(s)
        except ImportError:
            print("no core")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["3", "5", "4", str(1 << 20), "no", "core"]


# ------------------------------------------------------------ smaller defects


def with_l11_log_top(data: bytes, hi: float) -> bytes:
    """``data`` (a quantized .gsi) with field l11's log-range top set to ``hi``."""
    def patch(head: bytearray) -> None:
        off = 9 + 2 * 10  # fixed part, then the third 10-byte field descriptor (l11)
        bits, transform, lo, _ = struct.unpack_from("<BBff", head, off)
        struct.pack_into("<BBff", head, off, bits, transform, lo, hi)
    return patch_head(data, patch)


def test_log_range_top_over_float32_max_is_rejected_by_the_parser():
    two = Splats.from_array(np.float32([[.5, .5, .1, 0, .1, 1, 1, 1], [.5, .5, .2, 0, .1, 1, 1, 1]]),
                            8, 8)
    data = fmt.dumps(two, precision="q7", version=fmt.VERSION_1)  # its HEAD is patched
    # log(float32 max) = 88.7228390..., rounded up to float32: 88.72283935546875
    top = float(np.float32(np.log(np.finfo(np.float32).max)))
    with pytest.raises(gscodec.GSIError, match="l11: log range end .* overflows float32"):
        gscodec.open(with_l11_log_top(data, top))
    below = float(np.nextafter(np.float32(top), np.float32(0)))
    s = gscodec.open(with_l11_log_top(data, below)).splats
    assert np.isfinite(s.chol).all() and s.chol[:, 0].max() > 3e38


def test_largest_float32_size_survives_quantization():
    # ln(FLT_MAX) rounded to float32 was written as the log range's end: a file
    # that no reader accepts (and that overflowed on decode before).
    big = float(np.finfo(np.float32).max)
    two = Splats.from_array(np.float32([[.5, .5, big, 0, .1, 1, 1, 1], [.5, .5, .1, 0, .1, 1, 1, 1]]),
                            8, 8)
    s = fmt.loads(fmt.dumps(two, precision="q7", version=fmt.VERSION_1))
    assert np.isfinite(s.chol).all()
    assert s.chol[:, 0].max() == pytest.approx(big, rel=1e-5)
    # Version 2 (grid steps): finite, within one log step (the inward move)
    data = fmt.dumps(two, precision="q7")
    s = fmt.loads(data)
    step = fmt.read_header(io.BytesIO(data)).grids.field_step(2)
    assert np.isfinite(s.chol).all()
    assert abs(np.log(s.chol[:, 0].max().astype(np.float64)) - np.log(big)) <= step


@pytest.mark.parametrize("metadata,exc,match", [
    (["a"], TypeError, "metadata must be a mapping"),
    ({"a": "\udc80"}, ValueError, "metadata entry 'a'"),
    ({"\ud800": "x"}, ValueError, "metadata entry"),
    ({"a": 1}, TypeError, "metadata keys and values must be str"),
])
def test_bad_metadata_is_named(metadata, exc, match):
    image = gscodec.open(fmt.dumps(full_cover(2, 8, 8)))
    with pytest.raises(exc, match=match):
        image.save(io.BytesIO(), metadata=metadata)
    with pytest.raises(exc, match=match):
        fmt.dumps(full_cover(2, 8, 8), metadata=metadata)


def test_render_arguments_are_named():
    s = full_cover(2, 8, 8)
    with pytest.raises(TypeError, match="dtype must be uint8 or float32, got 'bogus'"):
        gscodec.render(s, dtype="bogus")
    with pytest.raises(TypeError, match="dtype must be uint8 or float32"):
        gscodec.render(s, dtype=np.int16)
    for sizes, exc, match in (([(1, 2, 3)], TypeError, r"sizes\[0\] must be a \(width, height\)"),
                              ([5], TypeError, r"sizes\[0\] must be"),
                              ([(4.0, 4)], TypeError, r"sizes\[0\] width must be an int"),
                              ([(4, 0)], ValueError, r"sizes\[0\] height must be in 1\.\.65535"),
                              ([None, None], ValueError, "2 sizes for 1 splat sets")):
        with pytest.raises(exc, match=match):
            gscodec.render_batch([s], sizes)
    with pytest.raises(ValueError, match="render height must be in 1..65535"):
        gscodec.render(Splats.from_array(s.to_array(), 1, 100), 1000)


def test_fit_of_an_empty_batch_is_an_error_like_an_empty_list():
    for empty in ([], np.zeros((0, 8, 8, 3), np.uint8)):
        with pytest.raises(ValueError, match="images is an empty"):
            gscodec.fit(empty, 4, iterations=1)


class ShortReads(io.RawIOBase):
    """An unbuffered stream that returns at most 5 bytes per read (a pipe or socket)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self._data.read(min(5, len(buffer)))
        buffer[:len(chunk)] = chunk
        return len(chunk)


def test_short_reads_are_not_truncation():
    data = fmt.dumps(Splats.from_array(random_splats(np.random.default_rng(1), 40, 1, 1)
                                       .astype(np.float32) * 0.1 + 0.05, 20, 10))
    image = gscodec.open(ShortReads(data))
    assert image.tobytes() == data
    assert np.array_equal(image.render(), gscodec.open(data).render())
    with pytest.raises(gscodec.GSIError, match="truncated"):
        gscodec.open(ShortReads(data[:-3]))


def test_decode_from_a_pipe(tmp_path):
    data = fmt.dumps(full_cover(3, 12, 9))
    out = tmp_path / "out.png"
    result = subprocess.run([sys.executable, "-m", "gscodec.cli", "decode", "/dev/stdin", "-o",
                             str(out)], input=data, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert np.array_equal(np.asarray(Image.open(out)), gscodec.open(data).render())


@pytest.mark.parametrize("option,value,code,message", [
    ("--scale", "1e308", 1, "--scale 1e+308 gives a infxinf image"),
    ("--scale", "1e4", 1, "the largest side is 65535"),
    ("--width", "9" * 400, 2, "must be an integer in 1..65535"),
    ("--height", "70000", 2, "must be an integer in 1..65535"),
])
def test_decode_size_overflow_is_a_clean_error(tmp_path, capsys, option, value, code, message):
    path = tmp_path / "x.gsi"
    fmt.write_file(path, full_cover(1, 8, 8))
    argv = ["decode", str(path), "-o", str(tmp_path / "x.png"), option, value]
    if code == 2:
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2
    else:
        assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.gpu
def test_cuda_decode_has_the_same_limits(monkeypatch):
    splats = full_cover(100, 64, 64)  # 100 x 16 pairs
    monkeypatch.setattr(limits, "MAX_DECODE_WORK", 1599)
    with pytest.raises(DecodeLimitError, match=r"1600 splat-tile pairs.*MAX_DECODE_WORK"):
        gscodec.render(splats, device="cuda")
    monkeypatch.setattr(limits, "MAX_DECODE_WORK", 1600)
    monkeypatch.setattr(limits, "MAX_DECODE_PIXELS", 64 * 64 - 1)
    with pytest.raises(DecodeLimitError, match="MAX_DECODE_PIXELS"):
        gscodec.render_batch([splats], device="cuda")
    monkeypatch.setattr(limits, "MAX_DECODE_PIXELS", 64 * 64)
    assert np.array_equal(gscodec.render(splats, device="cuda"), gscodec.render(splats, device="cpu"))
