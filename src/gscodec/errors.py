"""The one exception type for problems with .gsi files."""

from __future__ import annotations

__all__ = ["GSIError"]


class GSIError(ValueError):
    """A .gsi file (or byte string) is malformed, corrupt, unsupported or unwritable.

    The message names the source, the byte offset or field, and what was wrong,
    e.g. ``"x.gsi: offset 18: chunk 'HEAD': CRC mismatch (stored 0x1a2b3c4d,
    computed 0x5e6f7a8b)"``. A subclass of `ValueError`, so code that already
    catches bad values keeps working.
    """
