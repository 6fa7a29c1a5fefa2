"""A minimal version-3 and version-2 decoder written from docs/format.md alone
(Part I), kept independent of gscodec's reader: it must reproduce gscodec's
decoded splats bit for bit (version 3 from today's writer, version 2 from the
v2.0 fixtures), which checks the specification as much as the code."""

from __future__ import annotations

import io
import math
import struct
import zlib

import numpy as np
import pytest
import zstandard

from gscodec import Splats
from gscodec import format as fmt
from test_format import random_splats
from test_format_v2_0 import FIXTURES, MANIFEST


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _bits(data: bytes, widths: list[int], n: int, skip: int = 0) -> list[list[int]]:
    """Columns of ``n`` values ``widths`` bits wide, most significant bit
    first, from bit ``skip`` of ``data`` on."""
    bitstring = "".join(f"{b:08b}" for b in data)
    pos, out = skip, []
    for w in widths:
        column = []
        for _ in range(n):
            column.append(int(bitstring[pos:pos + w], 2) if w else 0)
            pos += w
        out.append(column)
    return out


def _planes(raw: bytes, pos: int, n: int, width: int) -> tuple[list[int], int]:
    values = [sum(raw[pos + j * n + i] << (8 * j) for j in range(width)) for i in range(n)]
    return values, pos + n * width


def _signed(z: int) -> int:
    return z >> 1 if not z & 1 else -(z >> 1) - 1


def decode(data: bytes) -> np.ndarray:
    """The (N, 8) float32 splats of a version-3 or 2 file, per docs/format.md Part I."""
    v3 = data[:5] == b"\x89GSI\x30"
    assert v3 or data[:10] == b"\x89GSI\r\n\x1a\n\x02\x00"
    width, pos = _varint(data, 5 if v3 else 10)
    height, pos = _varint(data, pos)
    n, pos = _varint(data, pos)
    flags = data[pos]
    pos += 1
    mode = flags & 3
    if v3:
        zstd, position_offsets = bool(flags & 8), bool(flags & 16)
        if flags & 4:  # extras: meta (bit 0), dictionary (bit 1)
            extras = data[pos]
            pos += 1
            if extras & 2:
                pos += 4  # dictionary id (files with a dictionary are not used here)
            if extras & 1:
                length, pos = _varint(data, pos)
                pos += length  # metadata
    else:
        zstd, position_offsets = bool(flags & 16), True
        if flags & 8:
            pos += 4  # dictionary id
        if flags & 4:
            length, pos = _varint(data, pos)
            pos += length  # metadata
    if mode == 2 and n:
        widths = [w for b in data[pos:pos + 4] for w in (b & 15, b >> 4)]
        steps = [(4 + (s & 3)) * 2.0 ** ((s >> 2) - 44) for s in data[pos + 4:pos + 8]]
        pos += 8
        offsets = [0, 0] if not position_offsets else []
        for _ in range(8 - len(offsets)):
            z, pos = _varint(data, pos)
            offsets.append(_signed(z))
        if v3:
            offsets[4] += offsets[2]  # l22's offset is stored relative to l11's
    if zstd:
        length, pos = _varint(data, pos)
        assert len(data) == pos + length + 4
    payload, crc = data[pos:-4], struct.unpack("<I", data[-4:])[0]
    raw = zstandard.ZstdDecompressor().decompress(payload) if zstd else payload
    assert zlib.crc32(data[:pos] + raw) == crc
    if mode == 0:
        # 8 columns of 4 byte planes: bytes (column, plane, splat) -> f32 per splat
        planes = np.frombuffer(raw, np.uint8).reshape(8, 4, n)
        return planes.transpose(0, 2, 1).copy().view("<f4").reshape(8, n).T
    assert mode == 2
    if n == 0:
        return np.zeros((0, 8), np.float32)
    w_pos = widths[0] + widths[1]
    if zstd:
        low = max(0, w_pos - n.bit_length() - 3)
        high, p = _planes(raw, 0, n, math.ceil((w_pos - low) / 8))
        (lows,) = _bits(raw[p:p + math.ceil(n * low / 8)], [low], n)
        p += math.ceil(n * low / 8)
        gaps = [(h << low) | lo for h, lo in zip(high, lows)]
        codes = []
        for w in widths[2:]:
            column, p = _planes(raw, p, n, math.ceil(w / 8))
            codes.append(column)
    elif v3:  # Elias-Fano: a bitmap of n + 2^(W - k) bits, the k low bits of each code
        k = max(0, w_pos - n.bit_length())
        length = n + 2 ** (w_pos - k)
        (bitmap,) = _bits(raw, [1], length)
        ones = [i for i, bit in enumerate(bitmap) if bit]
        assert len(ones) == n
        lows, *codes = _bits(raw, [k, *widths[2:]], n, skip=length)
        mortons = [((p - i) << k) | lo for i, (p, lo) in enumerate(zip(ones, lows))]
        gaps = [m - prev for m, prev in zip(mortons, [0] + mortons[:-1])]
    else:
        gaps, *codes = _bits(raw, [w_pos, *widths[2:]], n)
    out = np.zeros((n, 8), np.float32)
    m = 0
    predictor = flags >> 5
    for i in range(n):
        m += gaps[i]
        qx = qy = 0
        bit = 0
        for k in range(max(widths[0], widths[1])):
            for axis, w in ((0, widths[0]), (1, widths[1])):
                if k < w:
                    value = (m >> bit) & 1
                    bit += 1
                    if axis == 0:
                        qx |= value << k
                    else:
                        qy |= value << k
        v = [qx + offsets[0], qy + offsets[1]] + [codes[f][i] + offsets[f + 2] for f in range(6)]
        if predictor & 1:
            v[6] += v[5]
        if (predictor >> 1) & 3:
            v[7] += v[5] if (predictor >> 1) & 3 == 1 else v[6]
        out[i, 0] = np.float32(v[0] * steps[0] / width)
        out[i, 1] = np.float32(v[1] * steps[0] / height)
        out[i, 2] = np.float32(math.exp(v[2] * steps[1]))
        out[i, 3] = np.float32(v[3] * steps[2])
        out[i, 4] = np.float32(math.exp(v[4] * steps[1]))
        out[i, 5:8] = [np.float32(v[c] * steps[3]) for c in (5, 6, 7)]
    return out


@pytest.mark.parametrize("name", sorted(k for k, v in MANIFEST.items()
                                         if not v.get("dictionary") and not k.startswith("fp16")))
def test_spec_decoder_reads_v2_0_fixtures(name: str) -> None:
    data = (FIXTURES / name).read_bytes()
    assert np.array_equal(decode(data), fmt.loads(data).to_array())


@pytest.mark.parametrize("n, precision", [(0, "q7"), (1, "q7"), (2, "q10"), (16, "q7"),
                                          (300, "q6"), (300, "q:pos=+3,scale=9.5,shear=8,color=11"),
                                          (5, "fp32"), (300, "fp32")])
def test_spec_decoder_matches_gscodec(n: int, precision: str) -> None:
    splats = random_splats(n, 40, 30, seed=n)
    data = fmt.dumps(splats, precision=precision, metadata={"k": "v"} if n == 2 else None)
    assert np.array_equal(decode(data), fmt.loads(data).to_array())


def test_spec_decoder_with_position_offsets() -> None:
    s = random_splats(20, 40, 30, seed=3)
    data = fmt.dumps(Splats(s.xy - 0.5, s.chol, s.rgb, 40, 30), precision="q7")
    assert fmt.read_header(io.BytesIO(data)).flags & 16
    assert np.array_equal(decode(data), fmt.loads(data).to_array())


def grey_ish(n: int) -> Splats:
    """Splats whose colours are alike across channels (as in real fits)."""
    s = random_splats(n, 40, 30, seed=n)
    rng = np.random.default_rng(n)
    rgb = s.rgb[:, :1] + rng.normal(0, 0.02, (n, 3))
    return Splats(s.xy, s.chol, rgb, s.width, s.height)


@pytest.mark.parametrize("n", [16, 3000])
def test_spec_decoder_with_predictors(n: int) -> None:
    data = fmt.dumps(grey_ish(n), precision="q7")
    header = fmt.read_header(io.BytesIO(data))
    assert header.flags >> 5 in (0b011, 0b101)  # g from r, b from r or g
    assert header.zstd == (n == 3000)  # raw packed bits, then a zstd frame
    assert np.array_equal(decode(data), fmt.loads(data).to_array())
