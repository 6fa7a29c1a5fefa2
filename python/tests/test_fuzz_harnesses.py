"""The atheris harnesses of python/fuzz/ (run by `make fuzz`): their seeds are
valid inputs, their input encoding round-trips, and random inputs end in an
expected outcome, so a fuzz run's findings are the codec's, not the harness's."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gscodec
from conftest import REPO

sys.path.insert(0, str(REPO / "python" / "fuzz"))  # the harnesses import their helpers so

import caps  # noqa: E402
import fuzz_from_array_render  # noqa: E402
import fuzz_open_render  # noqa: E402
import gsi_input  # noqa: E402
import seeds  # noqa: E402

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture(autouse=True)
def harness_limits(monkeypatch):
    """The decode-work limit the harnesses run under (`caps.apply`), undone after each test."""
    monkeypatch.setattr(gscodec.limits, "MAX_DECODE_WORK", caps.MAX_DECODE_WORK)
HARNESSES = [fuzz_open_render.TestOneInput, fuzz_from_array_render.TestOneInput]


@pytest.mark.parametrize("name", sorted(seeds.open_seeds()))
def test_open_seeds_are_files_that_render(name: str) -> None:
    data = seeds.open_seeds()[name]
    image = gscodec.open(gsi_input.to_gsi(data))
    assert 0 <= image.n_splats <= gscodec.limits.MAX_SPLATS
    assert image.render((8, 8)).shape == (8, 8, 3)
    fuzz_open_render.TestOneInput(data)


@pytest.mark.parametrize("version", [(1, 0), (3, 0)])
@pytest.mark.parametrize("precision", ["q8", "fp16"])
@pytest.mark.parametrize("raw", [True, False])
def test_gsi_input_round_trip(raw: bool, precision: str, version: tuple[int, int]) -> None:
    splats = seeds.random_splats(7, 20, 10, seed=0)
    file = gscodec.format.dumps(splats, precision=precision, metadata={"k": "v"}, version=version)
    assert gscodec.format.loads(gsi_input.to_gsi(gsi_input.from_gsi(file, raw=raw))) == \
        gscodec.format.loads(file)


@pytest.mark.parametrize("name", sorted(seeds.from_array_seeds()))
def test_from_array_seeds_are_renderable_splats(name: str) -> None:
    data = seeds.from_array_seeds()[name]
    values = np.frombuffer(data[fuzz_from_array_render.HEADER_BYTES:], dtype="<f4")
    assert len(values) % 8 == 0 and np.isfinite(values).all()
    fuzz_from_array_render.TestOneInput(data)


def test_a_work_bomb_is_an_expected_outcome() -> None:
    bomb = np.tile([[.5, .5, 10, 0, 10, 1e-6, 1e-6, 1e-6]], (1 << 14, 1)).astype("<f4")
    file = gscodec.format.dumps(gscodec.Splats.from_array(bomb, 1024, 1024), precision="fp32")
    with pytest.raises(gscodec.GSIError, match="MAX_DECODE_WORK"):
        gscodec.open(file).render((64, 64))
    fuzz_open_render.TestOneInput(gsi_input.from_gsi(file, raw=True))


def test_output_size_caps_both_sides() -> None:
    assert caps.output_size(65535, 3) == (caps.MAX_SIDE, 3)
    assert caps.output_size(5, 1000) == (5, caps.MAX_SIDE)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(HARNESSES), st.binary(max_size=300))
def test_random_inputs_end_in_an_expected_outcome(harness, data: bytes) -> None:
    harness(data)  # returns: expected errors are caught inside, anything else raises
