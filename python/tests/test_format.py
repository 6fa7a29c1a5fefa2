"""The .gsi version-1.0 container and precision modes: round trips, bounds,
versioning, limits and atomic writes (docs/format.md; version 2: test_format_v2)."""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gscodec
from gscodec import GSIError, Splats
from gscodec import format as fmt
from gscodec import quantize as q

pytestmark = pytest.mark.filterwarnings("error")

MODES = ["fp32", "fp16", "q6", "q7", "q8", "q10", "q:pos=16,scale=16,shear=16,color=16",
         "q:x=3,y=13,scale=1,shear=5,color=9"]
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _finite(lo: float, hi: float) -> st.SearchStrategy:
    return st.floats(float(np.float32(lo)), float(np.float32(hi)), allow_nan=False,
                     allow_infinity=False, width=32)


@st.composite
def splat_sets(draw: st.DrawFn, max_n: int = 24) -> Splats:
    """Arbitrary valid splats, edge values included (equal values, zeros, tiny
    and huge sizes, colours far outside 0..1)."""
    n = draw(st.integers(0, max_n))
    xy = draw(hnp.arrays(np.float32, (n, 2), elements=_finite(-2, 3)))
    diag = draw(hnp.arrays(np.float32, (n, 2), elements=_finite(1e-6, 4)))
    shear = draw(hnp.arrays(np.float32, (n, 1), elements=_finite(-4, 4)))
    rgb = draw(hnp.arrays(np.float32, (n, 3), elements=_finite(-200, 200)))
    chol = np.concatenate([diag[:, :1], shear, diag[:, 1:]], axis=1)
    width = draw(st.integers(1, 65535))
    height = draw(st.integers(1, 65535))
    return Splats(xy, chol, rgb, width, height)


def random_splats(n: int, width: int = 64, height: int = 48, seed: int = 0) -> Splats:
    """Plausible fitted-looking splats."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 1, (n, 2))
    chol = np.stack([np.exp(rng.uniform(-4, -1.5, n)), rng.normal(0, 0.02, n),
                     np.exp(rng.uniform(-4, -1.5, n))], axis=1)
    rgb = rng.normal(0.4, 0.3, (n, 3))
    return Splats(xy, chol, rgb, width, height)


def dumps_v1(splats: Splats, **options: object) -> bytes:
    """A version-1.0 file (this module tests that container; test_format_v2 the
    default version 2)."""
    return fmt.dumps(splats, version=fmt.VERSION_1, **options)


def header_of(data: bytes) -> fmt.Header:
    return fmt.read_header(io.BytesIO(data))


# ---------------------------------------------------------------- round trips


@FAST
@given(splat_sets())
def test_fp32_roundtrip_is_exact(splats: Splats) -> None:
    out = fmt.loads(dumps_v1(splats, precision="fp32"))
    assert out == splats  # same values, same order, same size


@FAST
@given(splat_sets())
def test_fp16_roundtrip_within_half_ulp(splats: Splats) -> None:
    data = dumps_v1(splats, precision="fp16")
    out = fmt.loads(data)
    order = q.prepare(splats, "fp16").order
    want = np.clip(splats.to_array()[order].astype(np.float64), -65504, 65504)
    want[:, [2, 4]] = np.maximum(want[:, [2, 4]], 2.0**-24)
    got = out.to_array().astype(np.float64)
    # half a binary16 ulp: relative 2^-11 (normal), absolute 2^-25 (subnormal)
    assert (np.abs(got - want) <= np.maximum(np.abs(want) * 2.0**-11, 2.0**-25)).all()
    assert len(data) <= 160 + 16 * len(splats) * 1.01


@FAST
@given(splat_sets(), st.sampled_from(MODES[2:]))
def test_quantized_roundtrip_within_half_step(splats: Splats, precision: str) -> None:
    data = dumps_v1(splats, precision=precision)
    out = fmt.loads(data)
    codings = header_of(data).codings
    order = q.prepare(splats, precision).order
    want = splats.to_array()[order].astype(np.float64)
    got = out.to_array().astype(np.float64)
    for i, c in enumerate(codings):
        w, g = want[:, i], got[:, i]
        if c.transform == q.LOG:
            w, g = np.log(w), np.log(g)
        # half a grid step, plus float32 rounding of lo/hi and of the value
        tol = c.step / 2 + 2.0**-22 * (1 + max(abs(c.lo), abs(c.hi)))
        assert (np.abs(g - w) <= tol).all(), (fmt.FIELDS[i], c)


@FAST
@given(splat_sets(max_n=16), st.sampled_from(MODES))
def test_file_renders_bit_identical_to_quantized_splats(splats: Splats, precision: str) -> None:
    from_file = fmt.loads(dumps_v1(splats, precision=precision))
    in_memory = q.roundtrip(splats, precision, major=1)
    assert from_file == in_memory
    a = gscodec.render(from_file, 24, 16)
    b = gscodec.render(in_memory, 24, 16)
    assert np.array_equal(a, b)


def test_rendered_quantized_file_matches_engine_render_of_fitted_splats() -> None:
    # Real fitted splats: the decoded file stays close to the unquantized render.
    img = np.zeros((24, 32, 3), np.uint8)
    img[:, :16] = (200, 40, 40)
    img[8:, 16:] = (30, 160, 220)
    splats = gscodec.fit(img, 48, iterations=150)
    ref = gscodec.render(splats).astype(np.float64)
    for precision in ("fp16", "q8", "q7"):
        out = gscodec.render(fmt.loads(dumps_v1(splats, precision=precision)))
        mse = np.mean((out - ref) ** 2)
        assert 10 * np.log10(255**2 / max(mse, 1e-12)) > 30, precision


@pytest.mark.parametrize("precision", MODES)
def test_empty_and_single_splat(precision: str) -> None:
    empty = Splats.from_array(np.zeros((0, 8), np.float32), 7, 3)
    assert fmt.loads(dumps_v1(empty, precision=precision)) == empty
    one = random_splats(1)
    assert fmt.loads(dumps_v1(one, precision=precision)) == q.roundtrip(one, precision, major=1)


def test_fp16_clamps_what_binary16_cannot_hold() -> None:
    s = Splats(np.array([[0.5, 0.5]]), np.array([[1e-12, 0.0, 1e-9]]),
               np.array([[1e6, -1e6, 0.5]]), 10, 10)
    out = fmt.loads(dumps_v1(s, precision="fp16"))
    assert out.chol[0, 0] > 0 and out.chol[0, 2] > 0
    assert out.rgb[0, 0] == 65504 and out.rgb[0, 1] == -65504


def test_quantized_positions_are_in_morton_order() -> None:
    s = random_splats(200, 640, 480)
    data = dumps_v1(s, precision="q7")
    h = header_of(data)
    out = fmt.loads(data)
    qx = h.codings[0].encode(out.xy[:, 0])
    qy = h.codings[1].encode(out.xy[:, 1])
    codes = q.morton_encode(qx, qy, h.codings[0].bits, h.codings[1].bits)
    assert (np.diff(codes.astype(np.int64)) >= 0).all()
    assert h.codings[0].bits == 10 + 2 and h.codings[1].bits == 9 + 2  # 1/4 pixel


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 16), st.integers(1, 16), st.data())
def test_morton_roundtrip(bx: int, by: int, data: st.DataObject) -> None:
    n = data.draw(st.integers(0, 20))
    qx = np.array(data.draw(st.lists(st.integers(0, 2**bx - 1), min_size=n, max_size=n)),
                  np.uint32)
    qy = np.array(data.draw(st.lists(st.integers(0, 2**by - 1), min_size=n, max_size=n)),
                  np.uint32)
    code = q.morton_encode(qx, qy, bx, by)
    assert (code < 2 ** (bx + by)).all()
    rx, ry = q.morton_decode(code, bx, by)
    assert np.array_equal(rx, qx) and np.array_equal(ry, qy)


def test_morton_interleaves_x_first() -> None:
    assert q.morton_encode(np.array([1]), np.array([0]), 2, 2)[0] == 1
    assert q.morton_encode(np.array([0]), np.array([1]), 2, 2)[0] == 2
    assert q.morton_encode(np.array([2]), np.array([0]), 2, 2)[0] == 4
    # unequal widths: y's extra top bits go on top
    assert q.morton_encode(np.array([0]), np.array([4]), 1, 3)[0] == 0b1000


# ---------------------------------------------------------------- header, metadata, info


def test_header_fields_and_info() -> None:
    s = random_splats(300, 640, 480)
    data = dumps_v1(s, precision="q7", metadata={"source": "kodim23.png", "ключ": "значение"})
    h = header_of(data)
    assert (h.version, h.width, h.height, h.n_splats) == ((1, 0), 640, 480, 300)
    assert h.precision == "q:x=12,y=11,l11=7,l21=7,l22=7,r=7,g=7,b=7"
    assert h.metadata == {"source": "kodim23.png", "ключ": "значение"}
    info = h.describe(len(data))
    assert info["bits_per_splat"] == pytest.approx(len(data) * 8 / 300)
    assert info["bpp"] == pytest.approx(len(data) * 8 / (640 * 480))
    assert info["fields"]["l11"]["transform"] == "log"


def test_quantized_is_smaller_than_fp16_smaller_than_fp32() -> None:
    s = random_splats(500)
    sizes = [len(dumps_v1(s, precision=p)) for p in ("fp32", "fp16", "q10", "q8", "q7", "q6")]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[1] * 8 / 500 < 16 * 8 + 8  # fp16 is at most the paper's 16 B/splat


@pytest.mark.parametrize("spec, bits", [
    ("q:pos=12,scale=7,shear=6,color=5", (12, 12, 7, 6, 7, 5, 5, 5)),
    ("q:pos=+1,scale=7,shear=6,color=5,r=9", (7, 6, 7, 6, 7, 9, 5, 5)),
    ("q:x=1,y=16,l11=2,l21=3,l22=4,r=5,g=6,b=7", (1, 16, 2, 3, 4, 5, 6, 7)),
])
def test_precision_specs(spec: str, bits: tuple[int, ...]) -> None:
    assert q.parse_precision(spec).resolve(40, 20) == bits


@pytest.mark.parametrize("spec, message", [
    ("fp8", "unknown precision"),
    ("q:pos=12,scale=7", "no bit width for l21"),
    ("q:pos=17,scale=7,shear=7,color=7", "outside 1..16"),
    ("q:pos=0,scale=7,shear=7,color=7", "outside 1..16"),
    ("q:pos=8,scale=+7,shear=7,color=7", "only positions take"),
    ("q:pos=8,size=7", "cannot parse 'size=7'"),
])
def test_bad_precision_specs(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dumps_v1(random_splats(3), precision=spec)


def test_bad_metadata_is_rejected_when_writing() -> None:
    with pytest.raises(ValueError, match="1..255 bytes"):
        dumps_v1(random_splats(2), metadata={"": "x"})
    with pytest.raises(TypeError, match="must be str"):
        dumps_v1(random_splats(2), metadata={"k": 3})  # type: ignore[dict-item]


# ---------------------------------------------------------------- crafted files


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Split a valid file into (type, data) chunks."""
    out, pos = [], 10
    while pos < len(data):
        length, kind = struct.unpack_from("<I4s", data, pos)
        out.append((kind, data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return out


def build(parts: list[tuple[bytes, bytes]], version: bytes = b"\x01\x00") -> bytes:
    """Assemble a file from chunks, with correct lengths and CRCs."""
    body = b"".join(struct.pack("<I4s", len(d), k) + d + struct.pack("<I", zlib.crc32(k + d))
                    for k, d in parts)
    return fmt.SIGNATURE_V1 + version + body


def test_build_reproduces_a_file() -> None:
    data = dumps_v1(random_splats(5), precision="q7", metadata={"a": "b"})
    assert build(chunks(data)) == data


def test_unknown_ancillary_chunks_are_skipped() -> None:
    s = random_splats(9)
    parts = chunks(dumps_v1(s, precision="fp32"))
    parts.insert(1, (b"xtra", b"anything"))
    parts.insert(3, (b"zzzz", b""))
    assert fmt.loads(build(parts)) == s


def test_unknown_critical_chunk_is_rejected() -> None:
    parts = chunks(dumps_v1(random_splats(3), precision="fp32"))
    parts.insert(1, (b"XTRA", b""))
    with pytest.raises(GSIError, match="unknown critical chunk 'XTRA'"):
        fmt.loads(build(parts))


def test_newer_minor_version_with_longer_head_is_read() -> None:
    s = random_splats(4)
    parts = chunks(dumps_v1(s, precision="q7"))
    parts[0] = (b"HEAD", parts[0][1] + b"future fields")
    assert fmt.loads(build(parts, version=b"\x01\x07")) == fmt.loads(dumps_v1(s, precision="q7"))
    with pytest.raises(GSIError, match="HEAD' at offset 10 is 102 bytes"):
        fmt.loads(build(parts))  # same bytes claiming v1.0: HEAD must be exact


def test_unknown_major_version_is_rejected() -> None:
    data = dumps_v1(random_splats(2))
    with pytest.raises(GSIError, match="offset 8: unsupported major version 3"):
        fmt.loads(data[:8] + b"\x03" + data[9:])


@pytest.mark.parametrize("mutate, message", [
    (lambda p: [(b"HEAD", struct.pack("<HHIB", 0, 5, 1, 0))] + p[1:], "reference size 0x5 is empty"),
    (lambda p: [(b"HEAD", struct.pack("<HHIB", 5, 5, (1 << 20) + 1, 0))] + p[1:],
     "offset 22: HEAD: splat count 1048577 exceeds the limit"),
    (lambda p: [(b"HEAD", struct.pack("<HHIB", 5, 5, 1, 9))] + p[1:], "unknown precision mode 9"),
    (lambda p: [p[1]] + p, "first chunk is 'DATA', expected 'HEAD'"),
    (lambda p: p[:1] + p[:1] + p[1:], "unexpected chunk 'HEAD' before 'DATA'"),
    (lambda p: p[:2] + p[1:], "unexpected chunk 'DATA' after 'DATA'"),
    (lambda p: p[:2] + [(b"meta", b"")] + p[2:], "unexpected chunk 'meta' after 'DATA'"),
    (lambda p: p[:1] + [(b"meta", b""), (b"meta", b"")] + p[1:], "more than one 'meta'"),
    (lambda p: p[:1] + [(b"meta", b"\x00\x00")] + p[1:], "meta: entry runs past the end"),
    (lambda p: p[:1] + [(b"meta", b"\x00\x00" + bytes(4))] + p[1:], "key length 0 outside"),
    (lambda p: p[:1] + [(b"meta", b"\x2c\x01" + bytes(304))] + p[1:], "key length 300 outside"),
    (lambda p: p[:1] + [(b"meta", b"\x01\x00k\x01\x00\x00\x00\xff")] + p[1:], "not valid UTF-8"),
    (lambda p: p[:1] + [(b"meta", b"\x01\x00k\x00\x00\x00\x00" * 2)] + p[1:], "duplicate key 'k'"),
    (lambda p: p[:2], "file is truncated: a chunk header"),
    (lambda p: p[:2] + [(b"DONE", b"x")], "chunk 'DONE' has 1 bytes of data"),
    (lambda p: p[:2] + [(b"DO1E", b"")], "invalid chunk type b'DO1E'"),
    (lambda p: [p[0], (b"DATA", b"\x00" * 7)] + p[2:], "DATA: not a zstd frame"),
])
def test_malformed_structure(mutate, message: str) -> None:
    parts = chunks(dumps_v1(random_splats(3), precision="fp32"))
    with pytest.raises(GSIError, match=message):
        fmt.loads(build(mutate(parts)))


def test_data_after_done_and_crc_errors_name_the_offset() -> None:
    data = dumps_v1(random_splats(3), precision="fp32")
    with pytest.raises(GSIError, match=f"offset {len(data)}: data after the 'DONE' chunk"):
        fmt.loads(data + b"\x00")
    bad = bytearray(data)
    bad[25] ^= 1  # inside HEAD's data
    with pytest.raises(GSIError, match=r"<bytes>: offset 10: chunk 'HEAD': CRC mismatch"):
        fmt.loads(bytes(bad))


def quant_head(fields: list[tuple[int, int, float, float]], n: int = 1) -> bytes:
    return struct.pack("<HHIB", 8, 8, n, 2) + b"".join(struct.pack("<BBff", *f) for f in fields)


@pytest.mark.parametrize("index, field, message", [
    (2, (0, 1, -3.0, -1.0), "field l11: bit width 0 outside 1..16"),
    (0, (8, 1, 0.0, 1.0), "field x: invalid transform 1"),
    (5, (8, 0, 1.0, 0.0), r"field r: invalid range \[1.0, 0.0\]"),
    (6, (8, 0, float("nan"), 1.0), "field g: invalid range"),
    (4, (8, 1, 0.0, 200.0), "field l22: log range end 200.0 overflows float32"),
])
def test_bad_field_descriptors(index: int, field: tuple, message: str) -> None:
    fields = [(8, 0, 0.0, 1.0)] * 2 + [(7, 1, -3.0, -1.0), (7, 0, -0.1, 0.1),
                                       (7, 1, -3.0, -1.0)] + [(7, 0, 0.0, 1.0)] * 3
    fields[index] = field
    parts = chunks(dumps_v1(random_splats(1), precision="q7"))
    with pytest.raises(GSIError, match=message):
        fmt.loads(build([(b"HEAD", quant_head(fields))] + parts[1:]))


def frame(raw: bytes, size: int | None = None) -> bytes:
    """A zstd frame of ``raw``, optionally declaring a different content size."""
    data = zstandard.ZstdCompressor(write_content_size=True).compress(raw)
    if size is None:
        return data
    params = zstandard.get_frame_parameters(data)
    assert params.content_size == len(raw)
    # rebuild the header with an 8-byte content size field (FCS flag 3, single segment)
    body = data[zstandard.frame_header_size(data):]
    return b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + struct.pack("<Q", size) + body


@pytest.mark.parametrize("raw, message", [
    # fp32 columns of one splat; field l11 (third) is 0 / NaN
    (struct.pack("<8f", 0.5, 0.5, 0.0, 0, 0.1, 1, 1, 1), "field l11, splat 0: must be positive"),
    (struct.pack("<8f", 0.5, 0.5, 0.1, float("nan"), 0.1, 1, 1, 1), "field l21, splat 0: value is not finite"),
    (struct.pack("<8f", 0.5, float("inf"), 0.1, 0, 0.1, 1, 1, 1), "field y, splat 0: value is not finite"),
])
def test_invalid_values_in_payload(raw: bytes, message: str) -> None:
    parts = chunks(dumps_v1(random_splats(1), precision="fp32"))
    # byte planes of one value per column are just the little-endian bytes
    with pytest.raises(GSIError, match=message):
        fmt.loads(build([parts[0], (b"DATA", frame(raw))] + parts[2:]))


def test_quantized_payload_codes_are_checked() -> None:
    fields = [(4, 0, 0.0, 1.0)] * 2 + [(7, 1, -3.0, -1.0), (7, 0, -0.1, 0.1),
                                       (7, 1, -3.0, -1.0)] + [(7, 0, 0.0, 1.0)] * 3
    head = (b"HEAD", quant_head(fields, n=2))
    done = (b"DONE", b"")
    ok = bytes([3, 4]) + bytes([1, 2]) * 6  # Morton deltas (1 byte each), then codes
    assert len(fmt.loads(build([head, (b"DATA", frame(ok)), done]))) == 2
    overflow = bytes([200, 100]) + bytes([1, 2]) * 6  # 200 + 100 >= 2^8
    with pytest.raises(GSIError, match="splat 1: Morton code 300 exceeds 8 bits"):
        fmt.loads(build([head, (b"DATA", frame(overflow)), done]))
    big_code = bytes([3, 4]) + bytes([1, 2]) * 3 + bytes([128, 2]) + bytes([1, 2]) * 2
    with pytest.raises(GSIError, match="field r, splat 0: code 128 exceeds 7 bits"):
        fmt.loads(build([head, (b"DATA", frame(big_code)), done]))


# ---------------------------------------------------------------- limits


def test_declared_sizes_are_checked_before_allocation() -> None:
    parts = chunks(dumps_v1(random_splats(3), precision="fp32"))
    head_max = (b"HEAD", struct.pack("<HHIB", 65535, 65535, 1 << 20, 0))
    cases = [
        # a frame claiming 4 GiB of output (a decompression bomb's header)
        [head_max, (b"DATA", frame(b"\x00" * 64, size=1 << 32))] + parts[2:],
        # a frame with no declared size
        [parts[0], (b"DATA", zstandard.ZstdCompressor(write_content_size=False)
                    .compress(b"\x00" * 96))] + parts[2:],
    ]
    tracemalloc.start()
    try:
        for data in cases:
            with pytest.raises(GSIError, match="zstd frame declares"):
                fmt.loads(build(data))
        # chunk lengths far beyond the file
        data = build(parts)
        for at, message in ((10, "chunk 'HEAD' declares 4294967295 bytes"),
                            (31, "chunk 'DATA' declares 4294967295 bytes")):
            bad = data[:at] + b"\xff\xff\xff\xff" + data[at + 4:]
            with pytest.raises(GSIError, match=message):
                fmt.loads(bad)
        bad = build(parts[:1] + [(b"meta", b"")] + parts[1:])
        bad = bad[:31] + struct.pack("<I", (1 << 20) + 1) + bad[35:]
        with pytest.raises(GSIError, match="chunk 'meta' declares 1048577 bytes"):
            fmt.loads(bad)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_a_bomb_that_lies_about_its_size_is_rejected() -> None:
    # The header says 96 bytes (3 fp32 splats) but the frame holds 16 MiB of zeros.
    parts = chunks(dumps_v1(random_splats(3), precision="fp32"))
    big = frame(b"\x00" * (16 << 20))
    lying = frame(b"\x00" * (16 << 20), size=96)
    assert len(big) < 8192
    for payload in (big, lying):
        with pytest.raises(GSIError, match="DATA"):
            fmt.loads(build([parts[0], (b"DATA", payload)] + parts[2:]))


# ---------------------------------------------------------------- files and atomic writes


def test_write_and_read_file(tmp_path) -> None:
    s = random_splats(20)
    path = tmp_path / "a.gsi"
    fmt.write_file(path, s, precision="fp32", metadata={"k": "v"})
    assert fmt.read_file(path) == s
    assert fmt.read_file(str(path)) == s
    assert [p.name for p in tmp_path.iterdir()] == ["a.gsi"]


def test_missing_file_and_directory(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        fmt.read_file(tmp_path / "nope.gsi")
    with pytest.raises(FileNotFoundError, match="output directory .*missing.* does not exist"):
        fmt.write_file(tmp_path / "missing" / "a.gsi", random_splats(2))


def test_corrupt_file_error_names_the_path(tmp_path) -> None:
    path = tmp_path / "bad.gsi"
    path.write_bytes(dumps_v1(random_splats(4))[:-3])
    with pytest.raises(GSIError, match=f"{path}: offset"):
        fmt.read_file(path)


@pytest.mark.parametrize("fail_in", ["write", "fsync", "replace"])
def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch, fail_in: str) -> None:
    path = tmp_path / "out.gsi"
    old = dumps_v1(random_splats(3))
    path.write_bytes(old)
    other = tmp_path / "new.gsi"

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if fail_in == "write":
        import builtins

        real_open = builtins.open

        class Half:
            def __init__(self, f):
                self.f = f

            def write(self, data):
                self.f.write(data[: len(data) // 2])
                self.f.flush()
                boom()

            def __getattr__(self, name):
                return getattr(self.f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

        def fake_open(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            return Half(f) if "x" in mode else f

        monkeypatch.setattr(builtins, "open", fake_open)
    elif fail_in == "fsync":
        monkeypatch.setattr(os, "fsync", boom)
    else:
        monkeypatch.setattr(os, "replace", boom)
    for target in (path, other):
        with pytest.raises(OSError, match="No space left"):
            fmt.write_file(target, random_splats(50))
    monkeypatch.undo()
    assert path.read_bytes() == old  # the old file is untouched
    assert not other.exists()  # no new (partial) file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gsi"]  # no temp files


def test_loads_rejects_non_bytes() -> None:
    with pytest.raises(TypeError, match="data must be bytes"):
        fmt.loads("not bytes")  # type: ignore[arg-type]
