"""open_clip integration: a CLIP whose image tower reads splats.

`GSVisionTransformer` is an open_clip ``VisionTransformer`` with its patch
embedding (``conv1``, class and positional embeddings) replaced by a `GSStem`;
``ln_pre``, ``transformer``, the pooling, ``ln_post`` and ``proj`` are the
ViT's own modules, so an RGB checkpoint's weights load into them unchanged.
`GSCLIP` is open_clip's ``CLIP`` with that tower; the text tower is open_clip's.
"""

from __future__ import annotations

import copy
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import open_clip
import torch
from open_clip.transformer import VisionTransformer
from torch import nn

from .raster import RasterStem
from .stem import GSStem, GSStemCfg

__all__ = [
    "GSCLIP",
    "GSVisionTransformer",
    "create_gs_model",
    "create_rgb_model",
    "resolve_model_cfg",
    "read_checkpoint",
    "get_tokenizer",
    "trainable_fraction",
    "is_gs_state_dict",
    "capture_tokens",
]

#: Keys of an RGB open_clip state dict that the GS tower does not have.
_RGB_ONLY_KEYS = ("visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding")

#: A raster stem's parameters <- the RGB ViT's of the same names (``visual.`` keys).
_RASTER_FROM_RGB = {
    "visual.conv1.weight": "conv1.weight",
    "visual.class_embedding": "class_embedding",
    "visual.positional_embedding": "positional_embedding",
}


class GSVisionTransformer(nn.Module):
    """Splats -> image embedding: `GSStem` then the ViT's ``ln_pre`` ... ``proj``.

    Built from an open_clip ``VisionTransformer`` whose modules it takes over.
    A resampler stem's class token starts as the ViT's class token plus its
    position embedding, i.e. what the backbone saw at position 0 (and, with
    ``query_grid``, token i's position as the ViT's patch i position); a raster
    stem starts with the ViT's patch, class and position embeddings.
    """

    # open_clip's own pooling (class token / mean, attentional pool, ln_post),
    # reused as is; it only reads the attributes copied in __init__.
    _global_pool = VisionTransformer._global_pool
    _pool = VisionTransformer._pool

    def __init__(self, vit: VisionTransformer, stem_cfg: GSStemCfg):
        super().__init__()
        if not isinstance(vit, VisionTransformer):
            raise TypeError(
                f"the GS stem needs an open_clip VisionTransformer, got {type(vit).__name__}"
            )
        self.stem: GSStem | RasterStem
        if stem_cfg.kind == "raster":
            self.stem = RasterStem(vit.transformer.width, vit.image_size[0], vit.patch_size[0])
            stem_cfg = GSStemCfg(**{**stem_cfg.as_dict(), "n_tokens": self.stem.n_tokens})
            vit_state = vit.state_dict()
            self.stem.load_state_dict(
                {dst: vit_state[src.removeprefix("visual.")] for src, dst in _RASTER_FROM_RGB.items()}
            )
        else:
            self.stem = GSStem(vit.transformer.width, stem_cfg)
            with torch.no_grad():
                self.stem.cls_token.copy_(vit.class_embedding + vit.positional_embedding[0])
                if self._patch_positions_fit(vit.positional_embedding):
                    self.stem.token_pos.copy_(vit.positional_embedding[1:])
        self.stem_cfg = stem_cfg
        self.ln_pre = vit.ln_pre
        self.transformer = vit.transformer
        self.attn_pool = vit.attn_pool
        self.attn_pool_contrastive = getattr(vit, "attn_pool_contrastive", None)
        self.attn_pool_type = getattr(vit, "attn_pool_type", "")
        self.pool_type = vit.pool_type
        self.final_ln_after_pool = vit.final_ln_after_pool
        self.ln_post = vit.ln_post
        self.proj = vit.proj
        self.output_dim = vit.output_dim
        self.output_tokens = vit.output_tokens

    def _patch_positions_fit(self, positional_embedding: torch.Tensor) -> bool:
        """Whether the stem's token positions can start as the ViT's patch positions."""
        token_pos = getattr(self.stem, "token_pos", None)
        return token_pos is not None and positional_embedding[1:].shape == token_pos.shape

    def forward(self, splats: torch.Tensor, mask: torch.Tensor | None = None) -> Any:
        """``splats`` [B, N, 8] padded, ``mask`` [B, N] bool -> [B, output_dim]."""
        x = self.ln_pre(self.stem(splats, mask))
        x = self.transformer(x)
        pooled, tokens = self._pool(x)
        if self.proj is not None:
            pooled = pooled @ self.proj
        return (pooled, tokens) if self.output_tokens else pooled

    def lock(self, unlocked_blocks: int = 2) -> None:
        """Freeze the backbone except the stem, the first blocks and the head (paper §5.1)."""
        for p in self.parameters():
            p.requires_grad = False
        unlocked: list[nn.Module | None] = [
            self.stem,
            self.ln_post,
            self.attn_pool,
            self.attn_pool_contrastive,
        ]
        unlocked += list(self.transformer.resblocks[:unlocked_blocks])
        for module in unlocked:
            if module is not None:
                module.requires_grad_(True)
        if self.proj is not None:
            self.proj.requires_grad = True


class GSCLIP(open_clip.CLIP):
    """open_clip ``CLIP`` whose image tower is a `GSVisionTransformer`.

    Same constructor as ``CLIP`` plus ``gs_cfg`` (a `GSStemCfg` as a dict);
    ``encode_image``/``forward`` take the padded splats and their mask.
    """

    def __init__(
        self,
        embed_dim: int,
        vision_cfg: Any,
        text_cfg: Any,
        gs_cfg: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ):
        super().__init__(embed_dim, vision_cfg, text_cfg, **kwargs)
        self.visual = GSVisionTransformer(self.visual, GSStemCfg(**(gs_cfg or {})))
        self.gs_cfg = self.visual.stem_cfg

    def encode_image(
        self, splats: torch.Tensor, mask: torch.Tensor | None = None, normalize: bool = False
    ) -> torch.Tensor:
        features = self.visual(splats, mask)
        return nn.functional.normalize(features, dim=-1) if normalize else features

    def forward(
        self,
        splats: torch.Tensor | None = None,
        text: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> Any:
        image_features = (
            self.encode_image(splats, mask, normalize=True) if splats is not None else None
        )
        text_features = self.encode_text(text, normalize=True) if text is not None else None
        out = {
            "image_features": image_features,
            "text_features": text_features,
            "logit_scale": self.logit_scale.exp(),
        }
        if self.logit_bias is not None:
            out["logit_bias"] = self.logit_bias
        return out if self.output_dict else tuple(out.values())

    def lock_for_transfer(self, unlocked_blocks: int = 2) -> None:
        """The paper's freezing: text tower frozen; image backbone frozen except
        the stem, the first ``unlocked_blocks`` blocks, ``ln_post`` and ``proj``."""
        self.lock_text_tower()
        self.visual.lock(unlocked_blocks)

    def trainable_fraction(self) -> float:
        """Fraction of all parameters (both towers) that require grad."""
        return trainable_fraction(self)

    def load_rgb_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load an RGB open_clip CLIP state dict: text tower and ViT backbone as
        is. A raster stem takes the patch, class and position embeddings as they
        are; a resampler stem's class token starts as the class + position-0
        embedding and the patch embedding is dropped. Raises if anything else
        does not match."""
        sd = dict(state_dict)
        missing_rgb = [k for k in _RGB_ONLY_KEYS if k not in sd]
        if missing_rgb:
            raise ValueError(f"not an open_clip ViT CLIP state dict: missing {missing_rgb}")
        if isinstance(self.visual.stem, RasterStem):
            for src, dst in _RASTER_FROM_RGB.items():
                sd[f"visual.stem.{dst}"] = sd[src]
        else:
            sd["visual.stem.cls_token"] = (
                sd["visual.class_embedding"] + sd["visual.positional_embedding"][0]
            )
        if self.visual._patch_positions_fit(sd["visual.positional_embedding"]):
            sd["visual.stem.token_pos"] = sd["visual.positional_embedding"][1:]
        for key in _RGB_ONLY_KEYS:
            del sd[key]
        for key in (
            "logit_scale",
            "logit_bias",
        ):  # scalar vs [1], as open_clip.load_checkpoint does
            own = getattr(self, key)
            if key in sd and own is not None:
                sd[key] = sd[key].reshape(own.shape)
        missing, unexpected = self.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.startswith("visual.stem.")]
        if missing or unexpected:
            raise ValueError(
                f"RGB checkpoint does not match the model: missing {missing}, unexpected {unexpected}"
            )

    def load_text_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load only the text tower (and logit scale) of a CLIP state dict, RGB or GS.

        For the from-scratch ablation: a fresh image tower aligned to a known text tower.
        """
        sd = {k: v for k, v in state_dict.items() if not k.startswith("visual.")}
        if "logit_scale" in sd:
            sd["logit_scale"] = sd["logit_scale"].reshape(self.logit_scale.shape)
        missing, unexpected = self.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.startswith("visual.")]
        if missing or unexpected:
            raise ValueError(
                f"text tower does not match the model: missing {missing}, unexpected {unexpected}"
            )


@contextmanager
def capture_tokens(visual: nn.Module, layer: int) -> Iterator[list[torch.Tensor]]:
    """Collect an image tower's hidden tokens [B, 1 + T, W] after block ``layer`` while inside.

    ``visual``: an open_clip ``VisionTransformer`` (RGB teacher) or a
    `GSVisionTransformer`; both put the class token first. ``layer`` 0 is the
    input of the first block (after ``ln_pre``); ``layer`` k the output of block
    k. Each forward pass appends one tensor to the yielded list (a forward
    hook, so the tower's own forward runs unchanged).
    """
    blocks = visual.transformer.resblocks
    if not 0 <= layer <= len(blocks):
        raise ValueError(f"token layer must be in 0..{len(blocks)}, got {layer}")
    module = visual.ln_pre if layer == 0 else blocks[layer - 1]
    batch_first = layer == 0 or getattr(visual.transformer, "batch_first", True)
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        captured.append(output if batch_first else output.transpose(0, 1))

    handle = module.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def is_gs_state_dict(state_dict: Mapping[str, Any]) -> bool:
    """Whether a CLIP state dict is a `GSCLIP`'s (it has a GS stem), not an RGB model's."""
    return any(k.startswith("visual.stem.") for k in state_dict)


def trainable_fraction(model: nn.Module) -> float:
    """Fraction of ``model``'s parameters that require grad."""
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    return sum(p.numel() for p in params if p.requires_grad) / total


def resolve_model_cfg(model: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """An open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``, ...) as a new dict.

    ``model``: a built-in open_clip name (``"ViT-B-16"``), a dict, or a JSON
    file holding either the config or ``{"model_cfg": config}`` (open_clip's
    ``open_clip_config.json`` layout).
    """
    if isinstance(model, Mapping):
        cfg = copy.deepcopy(dict(model))
    elif str(model).endswith(".json") or Path(model).is_file():
        cfg = json.loads(Path(model).read_text())
        cfg = cfg.get("model_cfg", cfg)
    else:
        cfg = open_clip.get_model_config(str(model))
        if cfg is None:
            raise ValueError(f"unknown open_clip model {model!r} (not built in, not a JSON file)")
        cfg = copy.deepcopy(cfg)
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in cfg]
    if missing:
        raise ValueError(f"model config lacks {missing}")
    if cfg.pop("custom_text", False) or "hf_model_name" in cfg["text_cfg"]:
        raise ValueError(
            "only open_clip's built-in text tower is supported (no custom_text / HF text)"
        )
    if "timm_model_name" in cfg["vision_cfg"]:
        raise ValueError("the GS stem needs open_clip's VisionTransformer, not a timm tower")
    return cfg


def get_tokenizer(model_cfg: Mapping[str, Any]) -> Any:
    """open_clip's BPE tokenizer (bundled vocabulary, no download) at the config's context."""
    context_length = model_cfg["text_cfg"].get("context_length", 77)
    return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a local checkpoint file as ``{"state_dict": ..., **metadata}``.

    Takes open_clip / `gscodec-train` checkpoints (a dict with
    ``"state_dict"``, maybe DDP's ``module.`` prefixes), bare state dicts and
    ``.safetensors``. Only tensors and plain containers are unpickled.
    """
    if not os.path.isfile(path):
        # Never fall back to open_clip's pretrained tags: that would download.
        raise FileNotFoundError(
            f"pretrained must be an existing local checkpoint file, got {str(path)!r}"
        )
    if str(path).endswith(".safetensors"):
        return {"state_dict": open_clip.load_state_dict(str(path))}
    # mmap: reading a config from a big checkpoint does not load all of it
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: not a checkpoint (a {type(checkpoint).__name__})")
    if "state_dict" not in checkpoint:
        checkpoint = {"state_dict": checkpoint}
    sd = checkpoint["state_dict"]
    if sd and all(k.startswith("module.") for k in sd):
        checkpoint["state_dict"] = {k[len("module.") :]: v for k, v in sd.items()}
    return checkpoint


@contextmanager
def _mismatch_as_value_error(path: str | os.PathLike | None) -> Iterator[None]:
    """torch's ``load_state_dict`` mismatch (a RuntimeError) as a ValueError naming the file."""
    try:
        yield
    except RuntimeError as exc:
        details = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        raise ValueError(
            f"{path}: checkpoint does not match the model config ({'; '.join(details[:2])})"
        ) from exc


def create_rgb_model(
    model: str | os.PathLike | Mapping[str, Any],
    pretrained: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
) -> open_clip.CLIP:
    """An RGB open_clip ``CLIP`` from a name / config (see `resolve_model_cfg`),
    optionally loaded from a local checkpoint file (open_clip's loader)."""
    model_obj = open_clip.CLIP(**resolve_model_cfg(model))
    if pretrained is not None:
        read_checkpoint(pretrained)  # checks the path before open_clip sees it
        with _mismatch_as_value_error(pretrained):
            open_clip.load_checkpoint(model_obj, str(pretrained))
    return model_obj if device is None else model_obj.to(device)


def create_gs_model(
    model: str | os.PathLike | Mapping[str, Any],
    pretrained: str | os.PathLike | None = None,
    *,
    n_tokens: int | None = None,
    gs_cfg: Mapping[str, Any] | GSStemCfg | None = None,
    unlocked_blocks: int | None = 2,
    device: str | torch.device | None = None,
) -> GSCLIP:
    """Build a `GSCLIP`: open_clip's CLIP with the splat stem in front of its ViT.

    ``model``: open_clip model name, config dict or JSON file (`resolve_model_cfg`).
    ``pretrained``: None (random init) or a local checkpoint file, either an
    RGB open_clip CLIP (backbone + text tower load; the stem starts fresh) or a
    GS checkpoint saved from a `GSCLIP` (loads entirely). Nothing is downloaded.
    ``n_tokens`` / ``gs_cfg``: stem settings (`GSStemCfg`; ``n_tokens`` wins;
    a GS checkpoint's own ``gs_cfg`` is the default).
    ``unlocked_blocks``: freeze as in the paper, leaving that many leading ViT
    blocks trainable (`GSCLIP.lock_for_transfer`); None leaves all trainable.
    ``device``: where to put the model (None: leave it where it was built).
    """
    cfg = resolve_model_cfg(model)
    checkpoint = read_checkpoint(pretrained) if pretrained is not None else {}
    state_dict = checkpoint.get("state_dict", {})
    is_gs = is_gs_state_dict(state_dict)
    stem = dict(checkpoint.get("gs_cfg", {})) if is_gs else {}
    stem.update(gs_cfg.as_dict() if isinstance(gs_cfg, GSStemCfg) else dict(gs_cfg or {}))
    if n_tokens is not None:
        stem["n_tokens"] = n_tokens
    gs_model = GSCLIP(**cfg, gs_cfg=stem)
    with _mismatch_as_value_error(pretrained):
        if is_gs:
            gs_model.load_state_dict(state_dict)
        elif state_dict:
            gs_model.load_rgb_state_dict(state_dict)
    if unlocked_blocks is not None:
        gs_model.lock_for_transfer(unlocked_blocks)
    return gs_model if device is None else gs_model.to(device)
