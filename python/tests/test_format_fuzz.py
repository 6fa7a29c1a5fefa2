"""Hostile bytes: every truncation, every bit flip, splices, random bytes and
structure-aware mutations (valid CRCs, broken contents) of small .gsi files
must raise `GSIError` and nothing else (no other exception, no warning, no
crash), or decode to valid splats that render, where the mutation left a
valid file. (`make test-asan` runs this file under AddressSanitizer.)"""

from __future__ import annotations

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
from test_fuzz_harnesses import caps

pytestmark = pytest.mark.filterwarnings("error")

FUZZ = settings(max_examples=800, deadline=None, suppress_health_check=list(HealthCheck))


def _splats(n: int, seed: int) -> Splats:
    rng = np.random.default_rng(seed)
    chol = np.stack([np.exp(rng.uniform(-4, -1, n)), rng.normal(0, 0.05, n),
                     np.exp(rng.uniform(-4, -1, n))], axis=1)
    return Splats(rng.uniform(0, 1, (n, 2)), chol, rng.normal(0.5, 0.3, (n, 3)), 40, 30)


CORPUS = [
    fmt.dumps(_splats(3, 0), precision="fp32"),
    fmt.dumps(_splats(5, 1), precision="fp16", metadata={"source": "a.png", "k": "v"}),
    fmt.dumps(_splats(6, 2), precision="q7"),
    fmt.dumps(_splats(4, 3), precision="q:x=12,y=11,l11=16,l21=9,l22=3,r=1,g=8,b=16"),
    fmt.dumps(_splats(0, 4), precision="q6"),
    fmt.dumps(_splats(40, 5), precision="q8", metadata={"encoder": "gscodec"}),
]


def load_or_gsierror(data: bytes) -> Splats | None:
    """Parse; `GSIError` is the only acceptable failure (anything else fails).
    What parses must also render (at a small size, under the fuzzers' work cap)."""
    try:
        out = fmt.loads(data)
    except GSIError as e:
        assert str(e).startswith("<bytes>: offset "), str(e)
        return None
    assert isinstance(out, Splats)
    if len(out) <= caps.MAX_SPLATS:
        width, height = caps.output_size(out.width, out.height)
        pixels = gscodec.render(out, width, height)
        assert pixels.shape == (height, width, 3) and pixels.dtype == np.uint8
    return out


def test_corpus_is_valid() -> None:
    for data in CORPUS:
        assert load_or_gsierror(data) is not None


@pytest.mark.parametrize("index", range(len(CORPUS)))
def test_every_truncation(index: int) -> None:
    data = CORPUS[index]
    for end in range(len(data)):
        with pytest.raises(GSIError):
            fmt.loads(data[:end])


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


@FUZZ
@given(st.sampled_from(CORPUS), st.sampled_from(CORPUS), st.data())
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
        fmt.loads(fmt.MAGIC + b"\x01\x00" + tail)


def _build(parts: list[tuple[bytes, bytes]]) -> bytes:
    return fmt.MAGIC + b"\x01\x00" + b"".join(
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
