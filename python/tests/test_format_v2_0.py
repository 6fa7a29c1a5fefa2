"""Format v2.0 files written by the v2.0 writer (fixtures) still decode to the same splats and pixels."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import gscodec
from gscodec import format as fmt

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v2_0"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_v2_0_fixture_decodes_bit_identically(name: str) -> None:
    expected = MANIFEST[name]
    data = (FIXTURES / name).read_bytes()
    assert data[8:10] == b"\x02\x00"
    dictionary = (FIXTURES / "dictionary.zstd").read_bytes() if expected.get("dictionary") \
        else None
    splats = fmt.loads(data, dictionary=dictionary)
    assert len(splats) == expected["n_splats"]
    assert hashlib.sha256(splats.to_array().astype("<f4").tobytes()).hexdigest() == \
        expected["splats_sha256"]
    assert hashlib.sha256(gscodec.render(splats).tobytes()).hexdigest() == expected["render_sha256"]
    with gscodec.open(data, dictionary=dictionary) as im:
        assert im.n_splats == expected["n_splats"]
