"""Every limit gscodec enforces, defined once (pure Python: imports no compiled code).

Hard limits (constants of the format and the compiled core; changing them
here does not change what the core accepts, a test checks they agree):

- `MAX_SPLATS`: splats in one .gsi file and in one `gscodec.fit` image.
- `MAX_SIDE`: largest width or height (a .gsi stores them as 16-bit).
- `MAX_PIXELS`: largest output of `render` and input of `fit`, in pixels.
- `MAX_ITERATIONS`: largest `iterations` (and `prune_every`) of `fit`.

Decode-work limits, the decompression-bomb guard (like Pillow's
``Image.MAX_IMAGE_PIXELS``): a 64-byte file can declare a 16384 x 16384 image
and a 588-byte one 2^20 splats that each cover every tile, so every decode
checks, before it allocates anything, the output's pixel count and its
splat x covered-tile pairs (each pair is up to 256 pixel evaluations; the
count comes from the splats' cutoff boxes, docs/format.md "Decoder limits"):

- `MAX_DECODE_PIXELS`: output pixels of one decoded image.
- `MAX_DECODE_WORK`: splat x 16x16-tile pairs of one decoded image.

Both are read at every call, so raise them deliberately at run time, e.g.
``gscodec.limits.MAX_DECODE_PIXELS = 16384 * 16384``, or set one to None to
disable it (the hard limits still hold). Over a limit, `gscodec.render` and
`gscodec.render_batch` raise `DecodeLimitError` (a `ValueError`) and decoding a
file (`GSImage.render`, `PIL.Image.open(...).load()`, ``gscodec decode``)
raises `gscodec.GSIError`.
"""

from __future__ import annotations

__all__ = [
    "MAX_SPLATS",
    "MAX_SIDE",
    "MAX_PIXELS",
    "MAX_ITERATIONS",
    "MAX_DECODE_PIXELS",
    "MAX_DECODE_WORK",
    "DecodeLimitError",
]

#: Largest splat count of a .gsi file and of one image in `gscodec.fit`.
MAX_SPLATS = 1 << 20
#: Largest image width or height (16-bit in the file).
MAX_SIDE = 65535
#: Largest image, in pixels, that the core renders or fits (2^28: 16384 x 16384).
MAX_PIXELS = 1 << 28
#: Largest iteration count (and pruning period) `gscodec.fit` accepts.
MAX_ITERATIONS = 1_000_000

#: Output pixels one decode may produce (default 2^26: 8192 x 8192, 768 MiB of
#: float planes; a 4x upscale of a Kodak image is 6.3M). None: no limit below
#: `MAX_PIXELS`.
MAX_DECODE_PIXELS: int | None = 1 << 26
#: Splat x covered-tile pairs one decode may evaluate (default 2^25: about 10 s
#: of one core when every tile is full, as 2 x 10^8 pairs took 64 s, and 128 MiB
#: of tile lists; a 20k-splat fit of a Kodak image needs 7 x 10^4 pairs, its 4x
#: upscale 5 x 10^5, docs/benchmarks.md). None: no limit.
MAX_DECODE_WORK: int | None = 1 << 25


class DecodeLimitError(ValueError):
    """A decode would exceed `MAX_DECODE_PIXELS`, `MAX_DECODE_WORK` or
    `MAX_PIXELS`; the message names the limit and how to raise it."""
