"""gscodec: images as 2D Gaussian splats.

The torch-free codec: `fit` (encode) images into `Splats`, `render` (decode)
them at any size. ``gscodec.clip`` (needs the ``clip`` extra) holds the
splat-aware CLIP encoder.
"""

from . import limits
from .engine import backends, fit, render, render_batch
from .limits import MAX_ITERATIONS, MAX_SPLATS
from .splats import Splats

__all__ = ["Splats", "fit", "render", "render_batch", "backends", "limits", "MAX_SPLATS",
           "MAX_ITERATIONS"]
__version__ = "0.1.0"

# The .gsi format and the PIL-style API; importing pil_plugin registers the
# Pillow plugin ("GSI", .gsi, image/x-gsi).
from . import pil_plugin as _pil_plugin  # noqa: E402,F401
from .errors import GSIError  # noqa: E402
from .image import GSImage, decode, encode, open  # noqa: E402,A004

__all__ += ["open", "encode", "decode", "GSImage", "GSIError"]
