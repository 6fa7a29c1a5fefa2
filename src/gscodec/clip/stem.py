"""The GS stem: a padded, masked set of splats -> transformer tokens (paper §5.1).

Per splat: Fourier features of the position, log-scaled covariance and the
colour; a gated sigmoid linear layer; z-score (layer) normalization. A
Perceiver resampler (learned latents cross-attending to the splats) turns any
number of splats into ``n_tokens`` tokens, and a global mean over the splat
features makes the class token. Everything is permutation-invariant over
splats and ignores padding (masked rows never reach an output).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "GSStemCfg",
    "GSStem",
    "PerceiverResampler",
    "splat_features",
    "check_splat_batch",
    "with_unit_padding",
    "SPLAT_DIM",
    "STEM_KINDS",
]

#: Numbers per splat in the input tensor: x, y, l11, l21, l22, r, g, b (`gscodec.Splats.to_array`).
SPLAT_DIM = 8

#: Stem designs: the paper's set-to-tokens resampler (`GSStem`) or the ViT's own
#: patch embedding of the splats' rendering (`gscodec.clip.raster.RasterStem`).
STEM_KINDS = ("resampler", "raster")

# A valid splat (centred, unit-sized, black) that stands in for padding rows.
_UNIT_SPLAT = (0.5, 0.5, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0)

# log() floor for variances: far below any fitted splat (a 1e-4 pixel at 65535 px).
_MIN_VARIANCE = 1e-20


@dataclass
class GSStemCfg:
    """Hyper-parameters of the GS stem (stored in checkpoints as a dict).

    ``kind``: ``"resampler"`` (`GSStem`, the paper's) or ``"raster"``
    (`gscodec.clip.raster.RasterStem`: the ViT's patch embedding of the
    splats rendered at its input size; ``n_tokens`` is then the ViT's patch
    count and the resampler settings are unused).
    ``n_tokens``: tokens out (196 or 98 for ViT-B-16 in the paper), plus one
    class token. ``dim``/``depth``/``heads``/``mlp_ratio``: width, layers,
    heads and MLP ratio of the resampler. ``n_freqs``: Fourier octaves of the
    position (periods 2, 1, 1/2, ... of the image side). ``query_grid``:
    queries with positions (n_tokens must be a square): latent i sits at the
    centre of cell i of a row-major grid, as ViT patch i does; its attention to
    a splat is biased by ``-d^2 / (2 sigma^2)`` (d: their distance, sigma
    learned, starting at one cell), and token i gets a learned position
    embedding (the RGB ViT's patch i embedding when loaded from one).
    """

    n_tokens: int = 196
    kind: str = "resampler"
    dim: int = 256
    depth: int = 2
    heads: int = 8
    mlp_ratio: float = 4.0
    n_freqs: int = 8
    query_grid: bool = False

    def __post_init__(self) -> None:
        if self.kind not in STEM_KINDS:
            raise ValueError(f"stem kind must be one of {STEM_KINDS}, got {self.kind!r}")

    def as_dict(self) -> dict:
        """The settings as a plain dict (what checkpoints store)."""
        return asdict(self)


def splat_features(splats: torch.Tensor, n_freqs: int) -> torch.Tensor:
    """Per-splat input features, [..., 8] -> [..., 2 + 4 * n_freqs + 6].

    Position ``(x, y)`` as ``2x - 1, 2y - 1`` and sin/cos at ``n_freqs``
    octaves; covariance as ``log sigma_x``, ``log sigma_y`` and the
    correlation ``rho`` (scale-free, so the log carries the size); colour as is.
    """
    xy = splats[..., 0:2]
    l11, l21, l22 = splats[..., 2], splats[..., 3], splats[..., 4]
    sxx = l11 * l11
    syy = l21 * l21 + l22 * l22
    log_sx = 0.5 * torch.log(sxx.clamp_min(_MIN_VARIANCE))
    log_sy = 0.5 * torch.log(syy.clamp_min(_MIN_VARIANCE))
    # rho = sxy / (sx sy) = l21 / sqrt(l21^2 + l22^2), as l11 > 0.
    rho = l21 * torch.rsqrt(syy.clamp_min(_MIN_VARIANCE))
    freqs = math.pi * 2.0 ** torch.arange(n_freqs, device=splats.device, dtype=splats.dtype)
    angles = (xy.unsqueeze(-1) * freqs).flatten(-2)
    return torch.cat(
        [
            2 * xy - 1,
            angles.sin(),
            angles.cos(),
            torch.stack([log_sx, log_sy, rho], -1),
            splats[..., 5:8],
        ],
        dim=-1,
    )


def with_unit_padding(splats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``splats`` with the padding rows (``mask`` False) replaced by a unit splat.

    Padding rows may hold anything (zeros give log 0 and division by 0): a
    valid splat there keeps every later operation finite; stems then mask
    those rows out."""
    return torch.where(mask.unsqueeze(-1), splats, splats.new_tensor(_UNIT_SPLAT))


def check_splat_batch(splats: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Check a padded batch ``splats`` [B, N, 8] and ``mask`` [B, N] bool; returns the mask
    (all True when None). Raises ValueError naming the wrong shape or dtype."""
    if splats.ndim != 3 or splats.shape[-1] != SPLAT_DIM:
        raise ValueError(f"splats must be [B, N, {SPLAT_DIM}], got {tuple(splats.shape)}")
    if mask is None:
        return torch.ones(splats.shape[:2], dtype=torch.bool, device=splats.device)
    if mask.shape != splats.shape[:2] or mask.dtype != torch.bool:
        raise ValueError(
            f"mask must be bool {tuple(splats.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}"
        )
    return mask


class _CrossAttentionBlock(nn.Module):
    """Pre-norm block: latents attend to [inputs; latents] (Flamingo-style), then an MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"stem dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.norm_inputs = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim)
        hidden = int(dim * mlp_ratio)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(
        self, latents: torch.Tensor, inputs: torch.Tensor, attn_mask: torch.Tensor
    ) -> torch.Tensor:
        """``attn_mask``: [B, 1, 1 or M, N + M], bool (True = attend) or an additive float bias."""
        b, m, d = latents.shape
        lat = self.norm_latents(latents)
        # Latents are keys too: every query always has a valid key, even for an empty splat set.
        kv = torch.cat([self.norm_inputs(inputs), lat], dim=1)
        q = self.to_q(lat).view(b, m, self.heads, -1).transpose(1, 2)
        k, v = self.to_kv(kv).view(b, kv.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        if attn_mask.is_floating_point():
            attn_mask = attn_mask.to(q.dtype)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        latents = latents + self.out(attn.transpose(1, 2).reshape(b, m, d))
        return latents + self.mlp(self.norm_mlp(latents))


def grid_centres(n: int) -> torch.Tensor:
    """[n, 2] ``(x, y)`` centres of the cells of a row-major sqrt(n) x sqrt(n) grid on [0, 1]^2."""
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"query_grid needs a square number of tokens, got {n}")
    centres = (torch.arange(side, dtype=torch.float32) + 0.5) / side
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=-1)


class PerceiverResampler(nn.Module):
    """``n_latents`` learned queries cross-attending, ``depth`` times, to a masked set.

    With ``query_grid``, query i has the position of grid cell i and its
    attention to input j is biased by ``-|p_i - x_j|^2 / (2 sigma^2)``
    (``positions`` x_j given to `forward`; sigma learned).
    """

    def __init__(
        self,
        dim: int,
        n_latents: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        query_grid: bool = False,
    ):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(n_latents, dim) * dim**-0.5)
        self.blocks = nn.ModuleList(
            _CrossAttentionBlock(dim, heads, mlp_ratio) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.log_sigma: nn.Parameter | None = None
        if query_grid:
            centres = grid_centres(n_latents)
            self.register_buffer("query_xy", centres, persistent=False)
            self.log_sigma = nn.Parameter(torch.tensor(math.log(1.0 / math.isqrt(n_latents))))

    def forward(
        self, inputs: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``inputs`` [B, N, dim], ``mask`` [B, N] (True = real), ``positions`` [B, N, 2]
        (needed with ``query_grid``) -> [B, n_latents, dim]."""
        b, m = inputs.shape[0], self.latents.shape[0]
        latents = self.latents.unsqueeze(0).expand(b, -1, -1).to(inputs.dtype)
        key_mask = torch.cat([mask, mask.new_ones(b, m)], dim=1)
        if self.log_sigma is None:
            attn_mask = key_mask[:, None, None, :]
        else:
            if positions is None:
                raise ValueError("a query_grid resampler needs the inputs' positions")
            d2 = (self.query_xy[None, :, None, :] - positions[:, None, :, :].float()).square()
            bias = -d2.sum(-1) / (2 * torch.exp(2 * self.log_sigma))  # [B, M, N]
            bias = torch.cat([bias, bias.new_zeros(b, m, m)], dim=-1)
            attn_mask = bias.masked_fill(~key_mask[:, None, :], float("-inf"))[:, None]
        for block in self.blocks:
            latents = block(latents, inputs, attn_mask)
        return self.norm(latents)


class GSStem(nn.Module):
    """Splats [B, N, 8] + mask [B, N] -> tokens [B, 1 + n_tokens, width].

    Token 0 is the class token: a learned vector plus a projection of the
    masked global mean of the splat features (the paper's global mean
    pooling); the projection starts at zero so that, at initialization, it is
    exactly the RGB ViT's class token (see `gscodec.clip.model`). Tokens
    ``1..n_tokens`` are the resampler's latents projected to ``width``. No
    positional embedding is added (each latent is its own learned query),
    except with ``query_grid`` (see `GSStemCfg`).
    """

    def __init__(self, width: int, cfg: GSStemCfg | None = None, **overrides: object):
        super().__init__()
        cfg = GSStemCfg(**{**(cfg.as_dict() if cfg else {}), **overrides})
        if cfg.kind != "resampler":
            raise ValueError(f"GSStem is the resampler stem; kind {cfg.kind!r} is built elsewhere")
        self.cfg = cfg
        self.width = width
        d_in = 2 + 4 * cfg.n_freqs + 6
        self.value = nn.Linear(d_in, cfg.dim)
        self.gate = nn.Linear(d_in, cfg.dim)
        self.norm = nn.LayerNorm(cfg.dim)  # z-score over the feature dimension
        self.resampler = PerceiverResampler(
            cfg.dim, cfg.n_tokens, cfg.depth, cfg.heads, cfg.mlp_ratio, cfg.query_grid
        )
        self.proj = nn.Linear(cfg.dim, width)
        self.cls_token = nn.Parameter(torch.zeros(width))
        self.pool_proj = nn.Linear(cfg.dim, width)
        nn.init.zeros_(self.pool_proj.weight)
        nn.init.zeros_(self.pool_proj.bias)
        self.token_pos = nn.Parameter(torch.zeros(cfg.n_tokens, width)) if cfg.query_grid else None

    @property
    def n_tokens(self) -> int:
        """Tokens produced per image, not counting the class token."""
        return self.cfg.n_tokens

    def forward(self, splats: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``splats`` [B, N, 8] padded; ``mask`` [B, N] bool, True for real splats (None = all)."""
        mask = check_splat_batch(splats, mask)
        splats = with_unit_padding(splats.float(), mask)  # masked out below
        # Logs and sines want fp32 even under autocast.
        with torch.autocast(device_type=splats.device.type, enabled=False):
            feats = splat_features(splats, self.cfg.n_freqs)
        h = self.norm(self.value(feats) * torch.sigmoid(self.gate(feats)))
        weights = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        cls = self.cls_token.to(h.dtype) + self.pool_proj(pooled)
        tokens = self.proj(self.resampler(h, mask, splats[..., 0:2]))
        if self.token_pos is not None:
            tokens = tokens + self.token_pos.to(tokens.dtype)
        return torch.cat([cls.unsqueeze(1).to(tokens.dtype), tokens], dim=1)
