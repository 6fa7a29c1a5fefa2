"""Losses: stage 1 distillation (embedding MSE, optionally hidden-token MSE), stage 2
contrastive (open_clip's ``ClipLoss``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from open_clip import ClipLoss
from torch import nn

__all__ = ["DistillLoss", "TokenDistillLoss", "ClipLoss", "TOKEN_MODES", "token_targets"]


class DistillLoss(nn.Module):
    """MSE between student (GS) and teacher (RGB) image embeddings, both L2-normalized.

    Summed over the embedding dimension and averaged over the batch, so it
    equals ``2 - 2 cos(student, teacher)``: 0 is a perfect match, whatever the
    width. Normalized because zero-shot use only looks at directions.
    """

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        diff = F.normalize(student.float(), dim=-1) - F.normalize(teacher.float(), dim=-1)
        return diff.pow(2).sum(-1).mean()


#: ``--distill-tokens`` choices: how the student's tokens correspond to the teacher's.
TOKEN_MODES = ("pooled", "grid")


def token_targets(teacher_tokens: torch.Tensor, mode: str, n_student_tokens: int) -> torch.Tensor:
    """The teacher's hidden tokens [B, 1 + P, W] reduced to what the student matches.

    ``pooled``: the class token and the mean of the P patch tokens, [B, 2, W]
    (order-free: the student's resampler tokens need no fixed correspondence).
    ``grid``: the class token and the teacher's sqrt(P) x sqrt(P) patch grid
    average-pooled to the student's sqrt(T) x sqrt(T) tokens, row-major,
    [B, 1 + T, W] (student token i <-> grid cell i, the layout ``query_grid``
    gives its queries).
    """
    if mode not in TOKEN_MODES:
        raise ValueError(f"token distillation mode must be one of {TOKEN_MODES}, got {mode!r}")
    cls, patches = teacher_tokens[:, :1], teacher_tokens[:, 1:]
    if mode == "pooled":
        return torch.cat([cls, patches.mean(1, keepdim=True)], dim=1)
    side, out_side = math.isqrt(patches.shape[1]), math.isqrt(n_student_tokens)
    if side * side != patches.shape[1] or out_side * out_side != n_student_tokens:
        raise ValueError(
            f"grid token distillation needs square token counts, got {patches.shape[1]} teacher "
            f"patches and {n_student_tokens} student tokens"
        )
    b, _, w = patches.shape
    grid = patches.transpose(1, 2).reshape(b, w, side, side)
    pooled = F.adaptive_avg_pool2d(grid, out_side).flatten(2).transpose(1, 2)
    return torch.cat([cls, pooled], dim=1)


def student_tokens(tokens: torch.Tensor, mode: str) -> torch.Tensor:
    """The student's hidden tokens [B, 1 + T, W] in the layout of `token_targets`."""
    if mode == "pooled":
        return torch.cat([tokens[:, :1], tokens[:, 1:].mean(1, keepdim=True)], dim=1)
    return tokens


class TokenDistillLoss(nn.Module):
    """MSE between student and teacher hidden tokens, each layer-normalized (no gain).

    Normalized per token because the residual stream's scale differs between
    tokens and layers; the mean is over tokens and width, so 0 is a perfect
    match and ~2 is unrelated unit-variance tokens. ``mode``: see `token_targets`.
    """

    def __init__(self, mode: str):
        super().__init__()
        if mode not in TOKEN_MODES:
            raise ValueError(f"token distillation mode must be one of {TOKEN_MODES}, got {mode!r}")
        self.mode = mode

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """``student`` [B, 1 + T, W]; ``teacher`` [B, 1 + P, W] (reduced here to the student's)."""
        s = student_tokens(student.float(), self.mode)
        t = token_targets(teacher.float(), self.mode, student.shape[1] - 1)
        width = s.shape[-1]
        return F.mse_loss(F.layer_norm(s, (width,)), F.layer_norm(t, (width,)))
