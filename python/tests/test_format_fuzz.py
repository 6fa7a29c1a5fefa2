"""Hostile bytes: every truncation, every bit flip, splices, random bytes and
structure-aware mutations (valid CRCs, broken contents) of small .gsi files
(versions 1.0, 2.0 and 3.0, with and without a dictionary) must raise `GSIError`
and nothing else (no other exception, no warning, no crash), or decode to
valid splats that render, where the mutation left a valid file. (`make
test-asan` runs this file under AddressSanitizer.)"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gscodec
from gscodec import GSIError, Splats
from gscodec import format as fmt
from test_format import chunks
from test_format_v2_0 import FIXTURES
from test_format_v3 import palette_splats
from test_fuzz_harnesses import caps

pytestmark = pytest.mark.filterwarnings("error")

FUZZ = settings(max_examples=800, deadline=None, suppress_health_check=list(HealthCheck))


def _splats(n: int, seed: int) -> Splats:
    rng = np.random.default_rng(seed)
    chol = np.stack([np.exp(rng.uniform(-4, -1, n)), rng.normal(0, 0.05, n),
                     np.exp(rng.uniform(-4, -1, n))], axis=1)
    return Splats(rng.uniform(0, 1, (n, 2)), chol, rng.normal(0.5, 0.3, (n, 3)), 40, 30)


V1 = {"version": fmt.VERSION_1}
CORPUS = [
    fmt.dumps(_splats(3, 0), precision="fp32", **V1),
    fmt.dumps(_splats(5, 1), precision="fp16", metadata={"source": "a.png", "k": "v"}, **V1),
    fmt.dumps(_splats(6, 2), precision="q7", **V1),
    fmt.dumps(_splats(4, 3), precision="q:x=12,y=11,l11=16,l21=9,l22=3,r=1,g=8,b=16", **V1),
    fmt.dumps(_splats(0, 4), precision="q6", **V1),
    fmt.dumps(_splats(40, 5), precision="q8", metadata={"encoder": "gscodec"}, **V1),
]
DICTIONARY = fmt.train_dictionary([fmt.dumps(palette_splats(64, 100 + i), precision="q7")
                                   for i in range(40)], size=2048)
# Versions 3.0 (written today) and 2.0 (fixtures of the v2.0 writer): the
# compact header, one CRC over the header and the decompressed payload.
CORPUS_V2 = [
    fmt.dumps(_splats(3, 0), precision="fp32"),
    fmt.dumps(_splats(5, 1), precision="fp16", metadata={"source": "a.png", "k": "v"}),
    fmt.dumps(_splats(6, 2), precision="q7"),  # raw: Elias-Fano positions, packed codes
    fmt.dumps(_splats(4, 3), precision="q:x=12,y=11,l11=15,l21=9,l22=3,r=1,g=8.5,b=15"),
    fmt.dumps(_splats(0, 4), precision="q6"),
    fmt.dumps(Splats(_splats(2, 6).xy - 0.3, _splats(2, 6).chol, _splats(2, 6).rgb, 40, 30),
              precision="q10"),  # position offsets stored
    fmt.dumps(palette_splats(300, 5), precision="q8", metadata={"encoder": "gscodec"}),  # zstd
    fmt.dumps(palette_splats(64, 7), precision="q7", dictionary=DICTIONARY),
] + [(FIXTURES / name).read_bytes() for name in ("q7-2.gsi", "q7-400.gsi", "fp16-2.gsi",
                                                  "q_pos2.5_scale6.5_shear7_color5.5-40.gsi")]
assert all(fmt.read_header(io.BytesIO(d)).zstd for d in CORPUS_V2[6:8])
assert fmt.read_header(io.BytesIO(CORPUS_V2[7])).dictionary_id == DICTIONARY.dict_id()
assert fmt.read_header(io.BytesIO(CORPUS_V2[5])).flags & 16


@pytest.fixture(autouse=True)
def harness_limits(monkeypatch):
    """Render under the fuzz harnesses' decode-work limit (`caps.apply`)."""
    monkeypatch.setattr(gscodec.limits, "MAX_DECODE_WORK", caps.MAX_DECODE_WORK)


def load_or_gsierror(data: bytes) -> Splats | None:
    """Parse; `GSIError` is the only acceptable failure (anything else fails).
    What parses must also render (at a small size, under the fuzzers' work cap)."""
    try:
        out = fmt.loads(data, dictionary=DICTIONARY)
    except GSIError as e:
        assert str(e).startswith("<bytes>: offset "), str(e)
        return None
    assert isinstance(out, Splats)
    width, height = caps.output_size(out.width, out.height)
    try:
        pixels = gscodec.render(out, width, height)
    except gscodec.limits.DecodeLimitError:
        return out  # over the harnesses' decode-work limit: refused before rendering
    assert pixels.shape == (height, width, 3) and pixels.dtype == np.uint8
    return out


def test_corpus_is_valid() -> None:
    for data in CORPUS + CORPUS_V2:
        assert load_or_gsierror(data) is not None


@pytest.mark.parametrize("data", CORPUS + CORPUS_V2)
def test_every_truncation(data: bytes) -> None:
    for end in range(len(data)):
        with pytest.raises(GSIError):
            fmt.loads(data[:end], dictionary=DICTIONARY)


@pytest.mark.parametrize("index", range(len(CORPUS)))
def test_every_bit_flip(index: int) -> None:
    data = CORPUS[index]
    original = fmt.loads(data)
    buf = bytearray(data)
    for bit in range(len(data) * 8):
        buf[bit // 8] ^= 1 << (bit % 8)
        if bit // 8 == 9:
            # the minor version: a "newer" v1.x file must still be read exactly
            assert load_or_gsierror(bytes(buf)) == original
        else:
            with pytest.raises(GSIError):
                fmt.loads(bytes(buf))
        buf[bit // 8] ^= 1 << (bit % 8)


@pytest.mark.parametrize("index", range(len(CORPUS_V2)))
def test_every_bit_flip_v2(index: int) -> None:
    # The CRC covers the header and the decompressed payload: a flip is
    # rejected, or (a bit zstd ignores) decodes to the very same splats.
    data = CORPUS_V2[index]
    original = fmt.loads(data, dictionary=DICTIONARY)
    buf = bytearray(data)
    for bit in range(len(data) * 8):
        buf[bit // 8] ^= 1 << (bit % 8)
        out = load_or_gsierror(bytes(buf))
        assert out is None or out == original, bit
        buf[bit // 8] ^= 1 << (bit % 8)


def _v2_parts(file: bytes) -> tuple[bytes, bytes, bytes, bool]:
    """Header bytes, payload, decompressed payload and whether it is zstd."""
    header = fmt.read_header(io.BytesIO(file))
    payload = file[header.data_offset:-4]
    zstd = header.zstd
    raw = zstandard.ZstdDecompressor(dict_data=DICTIONARY if header.dictionary_id else None
                                     ).decompress(payload) if zstd else payload
    return file[:header.data_offset], payload, raw, zstd


def _v2_build(head: bytes, payload: bytes, raw: bytes) -> bytes:
    return head + payload + struct.pack("<I", zlib.crc32(raw, zlib.crc32(head)))


V2_FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))


@V2_FUZZ
@given(st.sampled_from(CORPUS_V2), st.data())
def test_v2_mutated_headers_with_valid_crcs(file: bytes, data: st.DataObject) -> None:
    # The CRC recomputed, so the mutation reaches the varints, flags, widths,
    # steps, offsets, predictors and dictionary id.
    head, payload, raw, _ = _v2_parts(file)
    start = 10 if file[:8] == fmt.SIGNATURE_V1 else 5  # after the version
    mutated = head[:start] + _mutate(data, head[start:])
    load_or_gsierror(_v2_build(mutated, payload, raw))


@V2_FUZZ
@given(st.sampled_from(CORPUS_V2), st.data())
def test_v2_mutated_payloads_with_valid_crcs(file: bytes, data: st.DataObject) -> None:
    # Reaches the unpacking, the predictors and the value checks.
    head, _, raw, zstd = _v2_parts(file)
    mutated = _mutate(data, raw)
    payload = mutated
    if zstd:
        header = fmt.read_header(io.BytesIO(file))
        payload = zstandard.ZstdCompressor(
            level=1, write_content_size=True, write_dict_id=False,
            dict_data=DICTIONARY if header.dictionary_id else None,
        ).compress(mutated)
        head = head[:-len(fmt._varint(header.data_length))] + fmt._varint(len(payload))
    out = load_or_gsierror(_v2_build(head, payload, mutated))
    if out is not None:
        assert len(mutated) == len(raw)
        arr = out.to_array()
        assert np.isfinite(arr).all() and (arr[:, [2, 4]] > 0).all()


def test_missing_or_wrong_dictionary_is_a_clear_error() -> None:
    data = CORPUS_V2[7]
    with pytest.raises(GSIError, match=f"needs the zstd dictionary with id "
                                       f"{DICTIONARY.dict_id()}; none was given"):
        fmt.loads(data)
    other = fmt.train_dictionary([fmt.dumps(_splats(50, 300 + i), precision="q6")
                                  for i in range(40)], size=2048)
    assert other.dict_id() != DICTIONARY.dict_id()
    with pytest.raises(GSIError, match=f"got id {other.dict_id()}"):
        fmt.loads(data, dictionary=other)
    # Same id, other contents: the CRC of the decompressed payload catches it.
    forged = other.as_bytes()[:4] + DICTIONARY.as_bytes()[4:8] + other.as_bytes()[8:]
    with pytest.raises(GSIError, match="CRC mismatch|zstd data is corrupt"):
        fmt.loads(data, dictionary=bytes(forged))
    assert fmt.loads(data, dictionary=DICTIONARY.as_bytes()) == fmt.loads(data,
                                                                         dictionary=DICTIONARY)


@FUZZ
@given(st.sampled_from(CORPUS + CORPUS_V2), st.sampled_from(CORPUS + CORPUS_V2), st.data())
def test_splices(a: bytes, b: bytes, data: st.DataObject) -> None:
    cut_a = data.draw(st.integers(0, len(a)))
    cut_b = data.draw(st.integers(0, len(b)))
    load_or_gsierror(a[:cut_a] + b[cut_b:])


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    with pytest.raises(GSIError):
        fmt.loads(data)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_after_a_valid_signature(tail: bytes) -> None:
    with pytest.raises(GSIError):
        fmt.loads(fmt.SIGNATURE_V1 + b"\x01\x00" + tail)
    with pytest.raises(GSIError):
        fmt.loads(fmt.SIGNATURE_V1 + b"\x02\x00" + tail)  # the CRC (or a check before it) fails


def _build(parts: list[tuple[bytes, bytes]]) -> bytes:
    return fmt.SIGNATURE_V1 + b"\x01\x00" + b"".join(
        struct.pack("<I4s", len(d), k) + d + struct.pack("<I", zlib.crc32(k + d))
        for k, d in parts)


def _mutate(data: st.DataObject, blob: bytes) -> bytes:
    """Overwrite, insert or delete a few bytes of ``blob``."""
    buf = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["set", "insert", "delete", "flip"]))
        at = data.draw(st.integers(0, len(buf)))
        if op == "insert":
            buf[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif buf and at < len(buf):
            if op == "set":
                buf[at] = data.draw(st.integers(0, 255))
            elif op == "flip":
                buf[at] ^= 1 << data.draw(st.integers(0, 7))
            else:
                del buf[at:at + data.draw(st.integers(1, 8))]
    return bytes(buf)


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(CORPUS), st.data())
def test_mutated_chunks_with_valid_crcs(file: bytes, data: st.DataObject) -> None:
    # CRCs recomputed, so the mutation reaches the HEAD, meta and zstd parsers.
    parts = chunks(file)
    i = data.draw(st.integers(0, len(parts) - 1))
    parts[i] = (parts[i][0], _mutate(data, parts[i][1]))
    load_or_gsierror(_build(parts))


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(CORPUS), st.data())
def test_mutated_payloads_in_valid_frames(file: bytes, data: st.DataObject) -> None:
    # Valid zstd frames of mutated payloads reach the column and value checks
    # (NaN, negative sizes, Morton overflow, codes out of range).
    parts = chunks(file)
    i = [kind for kind, _ in parts].index(b"DATA")
    raw = zstandard.ZstdDecompressor().decompress(parts[i][1])
    mutated = _mutate(data, raw) if raw else data.draw(st.binary(max_size=16))
    frame = zstandard.ZstdCompressor(level=1, write_content_size=True).compress(mutated)
    parts[i] = (b"DATA", frame)
    out = load_or_gsierror(_build(parts))
    if out is not None:
        assert len(mutated) == len(raw)
        arr = out.to_array()
        assert np.isfinite(arr).all() and (arr[:, [2, 4]] > 0).all()


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(CORPUS), st.data())
def test_chunks_reordered_dropped_or_duplicated(file: bytes, data: st.DataObject) -> None:
    parts = chunks(file)
    order = data.draw(st.lists(st.integers(0, len(parts) - 1), max_size=len(parts) + 2))
    out = load_or_gsierror(_build([parts[i] for i in order]))
    if out is not None:  # only HEAD, [meta,] DATA, DONE parses: the same splats
        assert out == fmt.loads(file)
