"""Coverage-guided fuzzing of ``Splats.from_array(array, w, h)`` then
``render`` with atheris: the API path that skips the file parser, so the
renderer sees any finite float32 values (huge, tiny, denormal, negative).

Input layout (see `seeds.py`): reference width and height (u16 each), output
width and height (u8 each, 1..`MAX_SIDE`), one byte choosing uint8 or float32
output, then little-endian float32 values, 8 per splat (x, y, l11, l21, l22,
r, g, b). `ValueError`/`TypeError` from `Splats` (NaN, non-positive l11/l22,
bad sizes) and `ValueError` from `render` (limits) are expected; any other
exception, and any crash or sanitizer report, is a finding.
"""


import atheris
import numpy as np

with atheris.instrument_imports(include=["gscodec"]):  # as in fuzz_open_render.py
    import gscodec
    from gscodec import Splats

import caps
from caps import MAX_SIDE

HEADER_BYTES = 7


def TestOneInput(data: bytes) -> None:  # noqa: N802 (atheris' name)
    if len(data) < HEADER_BYTES:
        return
    ref_w, ref_h = int.from_bytes(data[0:2], "little"), int.from_bytes(data[2:4], "little")
    out_w, out_h = 1 + data[4] % MAX_SIDE, 1 + data[5] % MAX_SIDE
    dtype = np.float32 if data[6] & 1 else np.uint8
    values = np.frombuffer(data[HEADER_BYTES:], dtype="<f4", count=(len(data) - HEADER_BYTES) // 4)
    array = values[: len(values) // 8 * 8].reshape(-1, 8)
    try:
        splats = Splats.from_array(array, ref_w, ref_h)
    except (ValueError, TypeError):
        return
    try:
        pixels = gscodec.render(splats, out_w, out_h, dtype=dtype)
    except ValueError:
        return
    caps.check_render(pixels, out_w, out_h, dtype)


if __name__ == "__main__":
    caps.fuzz(TestOneInput)
