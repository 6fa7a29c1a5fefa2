"""Pillow plugin for .gsi: ``PIL.Image.open("x.gsi")`` and ``img.save("x.gsi")``.

Registered when `gscodec` is imported: format ``"GSI"``, extension ``.gsi``,
MIME type ``image/x-gsi``. Opening reads only the header (size, mode RGB);
``load()`` decodes the splats and renders them at the reference size. Saving
encodes with the options ``n_splats``, ``bpp``, ``iterations``, ``precision``
and ``device`` (see `gscodec.encode`).
"""

from __future__ import annotations

from typing import IO

from PIL import Image, ImageFile

from . import format as fmt
from . import image

__all__ = ["GSIImageFile", "GSIDecoder"]

_SAVE_OPTIONS = ("n_splats", "bpp", "iterations", "precision", "device")


def _accept(prefix: bytes) -> bool:
    return prefix[:len(fmt.MAGIC)] == fmt.MAGIC


class GSIImageFile(ImageFile.ImageFile):
    """A .gsi file opened through Pillow (header only until ``load()``)."""

    format = "GSI"
    format_description = "Gaussian splat image"

    def _open(self) -> None:
        name = self.filename if isinstance(self.filename, str) and self.filename else "<stream>"
        assert self.fp is not None
        header = fmt.read_header(self.fp, name)
        self._mode = "RGB"
        self._size = (header.width, header.height)
        self.info["version"] = f"{header.version[0]}.{header.version[1]}"
        self.info["precision"] = header.precision
        self.info["n_splats"] = header.n_splats
        self.info["metadata"] = dict(header.metadata)
        # One tile from offset 0: the decoder re-reads the (small) header and
        # then the payload from the file object Pillow manages.
        self.tile = [ImageFile._Tile("GSI", (0, 0) + self.size, 0, (name,))]


class GSIDecoder(ImageFile.PyDecoder):
    """Decodes a whole .gsi stream and renders it at the image's size."""

    _pulls_fd = True

    def decode(self, buffer: bytes | Image.SupportsArrayInterface) -> tuple[int, int]:
        """Read the file from the start, render, hand Pillow the RGB bytes."""
        (name,) = self.args
        assert self.fd is not None and self.state.xsize > 0
        header = fmt.read_header(self.fd, name)
        payload, _ = fmt.read_payload(self.fd, header, name)
        splats = fmt.decode_payload(header, payload, name)
        pixels = image.render_file(splats, self.state.xsize, self.state.ysize, name)
        self.set_as_raw(pixels.tobytes(), "RGB")
        return -1, 0


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    options = {k: im.encoderinfo[k] for k in _SAVE_OPTIONS if k in im.encoderinfo}
    fp.write(image.encode(im, **options).tobytes())


Image.register_open(GSIImageFile.format, GSIImageFile, _accept)
Image.register_decoder(GSIImageFile.format, GSIDecoder)
Image.register_save(GSIImageFile.format, _save)
Image.register_extension(GSIImageFile.format, fmt.EXTENSION)
Image.register_mime(GSIImageFile.format, fmt.MIME_TYPE)
