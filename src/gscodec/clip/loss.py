"""Losses: stage 1 distillation (embedding MSE), stage 2 contrastive (open_clip's ``ClipLoss``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip import ClipLoss
from torch import nn

__all__ = ["DistillLoss", "ClipLoss"]


class DistillLoss(nn.Module):
    """MSE between student (GS) and teacher (RGB) image embeddings, both L2-normalized.

    Summed over the embedding dimension and averaged over the batch, so it
    equals ``2 - 2 cos(student, teacher)``: 0 is a perfect match, whatever the
    width. Normalized because zero-shot use only looks at directions.
    """

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        diff = F.normalize(student.float(), dim=-1) - F.normalize(teacher.float(), dim=-1)
        return diff.pow(2).sum(-1).mean()
