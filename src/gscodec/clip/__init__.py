"""gscodec.clip: a CLIP image encoder that reads Gaussian splats (paper §5).

Needs the ``clip`` extra (torch, open_clip_torch); ``import gscodec`` never
imports this package. Names load on first use, so ``import gscodec.clip`` is
cheap and fails with an install hint when the extra is missing.

- `GSStem` / `GSStemCfg`: splats [B, N, 8] + mask -> tokens (`gscodec.clip.stem`);
  `RasterStem` / `render_splats`: the same through the ViT's own patch embedding of
  the rendered splats (`gscodec.clip.raster`).
- `create_gs_model` / `GSCLIP`: open_clip CLIP with the stem in front of its ViT
  (`gscodec.clip.model`); `create_rgb_model` for the RGB teacher.
- `collate_splats`: pad splat sets to a batch (`gscodec.clip.data`).
- `SplatAugment`: splat-space augmentation (`gscodec.clip.augment`);
  `TeacherEmbeddings`: stored teacher targets (`gscodec.clip.embed`).
- `DistillLoss`, `TokenDistillLoss`, `ClipLoss` (`gscodec.clip.loss`); `evaluate` and friends
  (`gscodec.clip.zeroshot`); ``gscodec-train`` (`gscodec.clip.train`).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

for _dep, _pkg in (("torch", "torch"), ("open_clip", "open_clip_torch")):
    if importlib.util.find_spec(_dep) is None:
        raise ImportError(f"gscodec.clip needs {_pkg}: pip install 'gscodec[clip]'")

_EXPORTS = {
    "GSStem": "stem",
    "GSStemCfg": "stem",
    "PerceiverResampler": "stem",
    "splat_features": "stem",
    "RasterStem": "raster",
    "render_splats": "raster",
    "GSCLIP": "model",
    "GSVisionTransformer": "model",
    "create_gs_model": "model",
    "create_rgb_model": "model",
    "get_tokenizer": "model",
    "read_checkpoint": "model",
    "resolve_model_cfg": "model",
    "trainable_fraction": "model",
    "collate_splats": "data",
    "Captioner": "data",
    "ShardStream": "data",
    "DistillLoss": "loss",
    "TokenDistillLoss": "loss",
    "SplatAugment": "augment",
    "TeacherEmbeddings": "embed",
    "ClipLoss": "loss",
    "evaluate": "zeroshot",
    "build_classifier": "zeroshot",
    "classification_metrics": "zeroshot",
    "retrieval_metrics": "zeroshot",
    "CIFAR10_TEMPLATES": "zeroshot",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'gscodec.clip' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
