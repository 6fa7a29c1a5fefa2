"""Work caps shared by the fuzz harnesses.

The decoder bounds its own work (`gscodec.limits`, issue 9): over
`MAX_DECODE_WORK` splat-tile pairs a decode raises `GSIError` (files) or
`DecodeLimitError` (API), and those are expected outcomes. The harnesses lower
that limit (`apply`) so that even an input at the limit renders in
milliseconds, and render at most `MAX_SIDE` x `MAX_SIDE` pixels.
"""

import sys
from typing import Callable

import gscodec

MAX_SIDE = 64  # output width and height, pixels (at most 16 tiles)
MAX_DECODE_WORK = 1 << 16  # splat x tile pairs per decode: 16 full tiles of 4096 splats


def apply() -> None:
    """Set the harnesses' decode-work limit (the decoder checks it before rendering)."""
    gscodec.limits.MAX_DECODE_WORK = MAX_DECODE_WORK


def output_size(width: int, height: int) -> tuple[int, int]:
    """The render size for a reference size: the reference size clipped to `MAX_SIDE`."""
    return min(width, MAX_SIDE), min(height, MAX_SIDE)


def check_render(pixels, width: int, height: int, dtype) -> None:
    """A successful render must have the asked size and dtype (else: a finding)."""
    if pixels.shape != (height, width, 3) or pixels.dtype != dtype:
        raise AssertionError(f"render gave {pixels.shape} {pixels.dtype} for {width}x{height}")


def fuzz(test_one_input: Callable[[bytes], None]) -> None:
    """Run a harness under libFuzzer (atheris) with the harnesses' limits."""
    import atheris

    apply()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
