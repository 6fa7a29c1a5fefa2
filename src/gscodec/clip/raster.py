"""The raster stem: splats -> the ViT's own patch tokens, by rendering them inside the stem.

The render is linear in the colours and additive over splats, so a ViT's patch
embedding of the decoded image is a function of the splats alone. `RasterStem`
computes it in torch: it renders the splats at the ViT's input size with the
codec's render equation (`render_splats`, the twin of `gscodec.render` on float
pixels), normalizes with the ViT's preprocessing statistics and applies a patch
embedding, class token and position embedding laid out exactly as open_clip's
``VisionTransformer`` lays out its own. Loaded from an RGB checkpoint, a GS model
with this stem starts as the RGB model reading the splats' rendering (the
"render ceiling"); training then adapts the patch embedding and the unfrozen
blocks to splat renderings.

Cost: O(B N S^2) work for N splats at S x S pixels (dense, no tiling; splats
in chunks bound the memory). The splats are data, so no gradient flows into the
render unless they require one. Tokens: one per ViT patch.
"""

from __future__ import annotations

import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import nn

from .stem import check_splat_batch, with_unit_padding

__all__ = ["RasterStem", "render_splats", "POWER_CUTOFF"]

#: Weights below 1/255 are dropped: the codec's cutoff on the Mahalanobis power
#: q (float32 of 2 ln 255, `kPowerCutoff` in cpp/splat_math.h).
POWER_CUTOFF = 11.082527

# Weights computed at once (elements of [B, chunk, H, W]): 2^24 floats, 64 MiB.
_CHUNK_ELEMENTS = 1 << 24


def render_splats(
    splats: torch.Tensor, mask: torch.Tensor | None, height: int, width: int
) -> torch.Tensor:
    """Render normalized splats [B, N, 8] (masked rows ignored) to float RGB [B, 3, H, W].

    The codec's render equation (docs/format.md, "Splats and the render
    equation"): pixel centres at ``i + 0.5``, weight ``exp(-q / 2)`` for
    ``q <= POWER_CUTOFF`` else 0, colours summed without normalization or clamping.
    """
    mask = check_splat_batch(splats, mask)
    b, n, _ = splats.shape
    rows = with_unit_padding(splats, mask)  # masked to weight 0 below
    xs = (torch.arange(width, device=splats.device, dtype=splats.dtype) + 0.5).view(1, 1, 1, -1)
    ys = (torch.arange(height, device=splats.device, dtype=splats.dtype) + 0.5).view(1, 1, -1, 1)
    image = splats.new_zeros(b, 3, height, width)
    # Splats in chunks, so the [B, chunk, H, W] weights stay near _CHUNK_ELEMENTS.
    step = max(1, _CHUNK_ELEMENTS // max(1, b * height * width))
    for start in range(0, n, step):
        part, keep = rows[:, start : start + step], mask[:, start : start + step]
        x, y, a, sh, c = (part[..., i, None, None] for i in range(5))
        # Whitened offsets for L = [[a W, 0], [b H, c H]] (cpp/splat_math.h `power`).
        y1 = (xs - x * width) / (a * width)
        y2 = (ys - y * height - sh * height * y1) / (c * height)
        q = y1.square() + y2.square()  # [B, chunk, H, W]
        weight = torch.where(q <= POWER_CUTOFF, torch.exp(-0.5 * q), torch.zeros_like(q))
        weight = weight * keep[..., None, None].to(weight.dtype)
        image = image + torch.einsum("bnhw,bnc->bchw", weight, part[..., 5:8])
    return image


class RasterStem(nn.Module):
    """Splats [B, N, 8] + mask -> [B, 1 + grid^2, width]: the ViT's class + patch tokens.

    ``conv1``, ``class_embedding`` and ``positional_embedding`` have the shapes
    and meaning of open_clip's ``VisionTransformer`` attributes of the same
    names (and load from them); the render is clamped to [0, 1] as a decoder's
    8-bit output is, then normalized with open_clip's default image statistics
    (what `gscodec-train`'s RGB preprocessing uses).
    """

    def __init__(self, width: int, image_size: int, patch_size: int):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image size {image_size} is not a multiple of patch {patch_size}")
        self.image_size = image_size
        grid = image_size // patch_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid + 1, width))
        self.register_buffer("mean", torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1), False)

    @property
    def n_tokens(self) -> int:
        """Tokens produced per image (one per ViT patch), not counting the class token."""
        return self.positional_embedding.shape[0] - 1

    def forward(self, splats: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``splats`` [B, N, 8] padded; ``mask`` [B, N] bool, True for real splats (None = all)."""
        size = self.image_size
        with torch.autocast(device_type=splats.device.type, enabled=False):
            image = render_splats(splats.float(), mask, size, size).clamp(0.0, 1.0)
        image = (image - self.mean) / self.std
        x = self.conv1(image.to(self.conv1.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        return torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
