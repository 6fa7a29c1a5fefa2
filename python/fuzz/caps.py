"""Work caps shared by the fuzz harnesses.

main has no decode-work limit yet (issue 9): a 588-byte file can ask for 2^20
full-cover splats, and each such execution would take a minute. Until the
decoder enforces its own limit, the harnesses skip inputs over these caps so
that every execution takes milliseconds. Once the limit lands, the splat cap
goes (the decoder's limit then decides, and its `GSIError`/`ValueError` is an
expected outcome); the output-size cap stays, to keep executions fast.
"""

MAX_SPLATS = 4096  # splats per input
MAX_SIDE = 64  # output width and height, pixels (at most 16 tiles)


def output_size(width: int, height: int) -> tuple[int, int]:
    """The render size for a reference size: the reference size clipped to `MAX_SIDE`."""
    return min(width, MAX_SIDE), min(height, MAX_SIDE)
