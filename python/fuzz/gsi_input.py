"""The input format of `fuzz_open_render.py`: a .gsi file the fuzzer can mutate
past its CRCs and its zstd frame.

Plain byte mutations of a .gsi file almost never get past the CRCs and the
compressed payload, so the fuzzer would test little beyond the first checks
(libpng's fuzzers skip CRCs for the same reason). An input is therefore one
mode byte and a file: with the mode's low bit set the file is used as it is
(the framing, CRC and zstd checks are fuzzed); with it clear, `to_gsi` writes
the checks for it, so mutations reach the payload decoder and the renderer:
in version 1 the DATA chunk holds the *uncompressed* payload, and `to_gsi`
compresses it and writes every chunk's length and CRC; in versions 2 and 3
(one CRC at the end, over the header and the decompressed payload) `to_gsi`
recomputes that CRC. (atheris' custom-mutator hook does the same job but is not called
when libFuzzer comes from a preloaded sanitizer runtime, as here.)

A finding's input converts to the .gsi file it decoded:
``python -c "import sys, gsi_input; sys.stdout.buffer.write(gsi_input.to_gsi(open(sys.argv[1], 'rb').read()))" CRASH > crash.gsi``
(in python/fuzz/).
"""

import struct
import zlib

import zstandard

SIGNATURE_BYTES = 10  # versions 1 and 2: signature + version
SIGNATURE_BYTES_V3 = 5  # version 3: "\x89GSI" + version byte
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # a zstd frame's first bytes

_compressor = zstandard.ZstdCompressor(level=1, write_content_size=True)


def split_chunks(data: bytes) -> list[tuple[bytes, bytes]] | None:
    """The (type, contents) chunks of a well-framed file (CRCs not checked), else None."""
    parts, pos = [], SIGNATURE_BYTES
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from("<I4s", data, pos)
        if pos + 12 + length > len(data):
            return None
        parts.append((kind, data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return parts if pos == len(data) and len(data) >= SIGNATURE_BYTES else None


def _compact_start(file: bytes) -> int:
    """Bytes before the header fields of a version-2 or 3 file, else 0."""
    if len(file) >= SIGNATURE_BYTES_V3 and file[4] >> 4 == 3:
        return SIGNATURE_BYTES_V3
    return SIGNATURE_BYTES if len(file) >= SIGNATURE_BYTES and file[8] == 2 else 0


def _with_compact_crc(file: bytes, start: int) -> bytes:
    """``file`` with its last 4 bytes replaced by the CRC a reader expects: over
    the bytes before the payload and the payload decompressed (when the first
    zstd frame after the signature decompresses) or as it is."""
    body = file[:-4]
    covered = body
    at = body.find(ZSTD_MAGIC, start)
    if at >= 0:
        try:
            covered = body[:at] + zstandard.ZstdDecompressor().decompressobj().decompress(body[at:])
        except zstandard.ZstdError:
            pass
    return body + struct.pack("<I", zlib.crc32(covered))


def to_gsi(data: bytes) -> bytes:
    """The file a fuzz input stands for (see the module docstring)."""
    if not data or data[0] & 1:
        return data[1:]
    file = data[1:]
    start = _compact_start(file)
    if start:
        return _with_compact_crc(file, start) if len(file) >= start + 4 else file
    parts = split_chunks(file)
    if parts is None:
        return file
    return file[:SIGNATURE_BYTES] + b"".join(
        struct.pack("<I4s", len(d), k) + d + struct.pack("<I", zlib.crc32(k + d))
        for k, d in ((k, _compressor.compress(d) if k == b"DATA" else d) for k, d in parts))


def from_gsi(file: bytes, *, raw: bool) -> bytes:
    """The fuzz input for a valid .gsi ``file``: as it is (``raw``) or with its payload
    decompressed, so that `to_gsi` gives an equivalent file back."""
    if raw:
        return b"\x01" + file
    if _compact_start(file):
        return b"\x00" + file[:-4] + b"\0\0\0\0"
    decompressor = zstandard.ZstdDecompressor()
    parts = [(k, decompressor.decompress(d) if k == b"DATA" else d)
             for k, d in split_chunks(file)]
    return b"\x00" + file[:SIGNATURE_BYTES] + b"".join(
        struct.pack("<I4s", len(d), k) + d + b"\0\0\0\0" for k, d in parts)
