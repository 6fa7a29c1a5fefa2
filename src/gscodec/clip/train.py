"""``gscodec-train``: RGB teacher, stage 1 (distill), stage 2 (align) and zero-shot eval.

Subcommands:

- ``rgb``: train an RGB open_clip CLIP on image shards (the teacher, when no
  pretrained checkpoint exists). Captions: ``.txt``, or ``.cls`` + templates.
- ``distill``: stage 1. A `GSCLIP` initialized from the teacher learns to
  match the teacher's image embeddings (`DistillLoss`) on GS shards paired by
  key with the RGB shards. New students get the raster stem (the teacher's own
  patch embedding of the rendered splats, `gscodec.clip.raster`); ``--stem
  resampler`` is the paper's Perceiver stem, with its ``--n-tokens`` etc.
  Options: splat-space augmentation (``--aug-*``, the teacher sees the same
  view), token distillation (``--distill-tokens``), stored targets instead of
  RGB + teacher (``--teacher-embeddings``), and ``--recipe paper-v2`` (stage 1
  stem-only, then stage 2).
- ``align``: stage 2. open_clip's ``ClipLoss`` on GS shards + captions. With
  ``--from-scratch``, the paper's ablation: a fresh, fully trainable image
  tower against the pretrained text tower, no distillation.
- ``embed``: precompute the teacher's embeddings of K views per image into
  shards beside the ``.gsi`` (`gscodec.clip.embed`), for ``distill --teacher-embeddings``.
- ``eval``: zero-shot classification or retrieval, written as CLIP_benchmark
  writes its results.

The training subcommands take open_clip's flags with open_clip's meaning:
``--train-data`` (``::``-joined sources, ``{a..b}`` ranges), ``--logs`` and
``--name`` (the run folder ``LOGS/NAME`` with ``out.log``, ``params.txt``,
``checkpoints/epoch_N.pt``), ``--resume latest``, ``--save-frequency``,
``--save-most-recent``, ``--zeroshot-frequency``, ``--report-to tensorboard``,
``--log-every-n-steps``, ``--precision``, ``--accum-freq`` (for the
contrastive stages a feature cache, so the loss sees the whole accumulated
batch as negatives). Training follows open_clip: AdamW (no weight decay on
gains, biases and embeddings), cosine schedule with linear warmup, per-step
LR, logit scale clamped to 100. The GS stages train per the paper: text tower
and backbone frozen except the stem, the first 2 blocks, ``ln_post`` and
``proj``; the stem at ``--lr``, unfrozen backbone at ``--backbone-lr-scale`` x
``--lr``. Checkpoints are written atomically; ``--resume`` continues with the
same data order, so a resumed run matches an uninterrupted one. Machine-readable
logs go to ``LOGS/NAME/log.jsonl``. Under ``torchrun`` (``WORLD_SIZE`` > 1) it
runs DDP.

Library functions raise exceptions (``ValueError`` / ``FileNotFoundError``
for bad input); only `main` turns them into an exit status and a one-line message.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import time
from contextlib import nullcontext
from datetime import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import open_clip
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from gscodec import GSIError
from gscodec._io import atomic_path
from gscodec.datasets import expand_shards, rank_from_env

from .augment import SplatAugment, augment_image, augment_splats, draw_view
from .data import (
    Captioner,
    ShardStream,
    TarIndex,
    collate_gs,
    count_samples,
    decode_image,
    dist_info,
    read_class_names,
)
from .embed import TeacherEmbeddings, pick, write_teacher_embeddings
from .loss import TOKEN_MODES, ClipLoss, DistillLoss, TokenDistillLoss
from .model import (
    GSCLIP,
    capture_tokens,
    create_gs_model,
    create_rgb_model,
    get_tokenizer,
    is_gs_state_dict,
    read_checkpoint,
    resolve_model_cfg,
)
from .stem import STEM_KINDS, GSStemCfg
from .zeroshot import TEMPLATES, evaluate

__all__ = [
    "main",
    "run",
    "build_parser",
    "Stage",
    "build_stage",
    "train",
    "accumulate_gradients",
    "cosine_lr",
    "param_groups",
]

logger = logging.getLogger("gscodec.clip.train")

# open_clip's clamp on the learned temperature: logits at most 100x cosine.
_MAX_LOGIT_SCALE = math.log(100)


# --------------------------------------------------------------------------- optimizer pieces


def cosine_lr(step: int, base_lr: float, warmup: int, total: int) -> float:
    """Linear warmup to ``base_lr`` over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * base_lr


def _no_decay(name: str, p: nn.Parameter) -> bool:
    # open_clip's rule: gains, biases, embeddings, logit scale
    return (
        p.ndim < 2
        or "bn" in name
        or "ln" in name
        or "bias" in name
        or "logit_scale" in name
        or "embedding" in name
        or "token" in name
        or "latents" in name
    )


def param_groups(
    model: nn.Module, weight_decay: float, scales: Callable[[str], float] = lambda name: 1.0
) -> list[dict[str, Any]]:
    """AdamW groups of trainable parameters: (LR scale from ``scales(name)``) x (decay or not)."""
    groups: dict[tuple[float, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = (scales(name), _no_decay(name, p))
        group = groups.setdefault(
            key, {"params": [], "lr_scale": key[0], "weight_decay": 0.0 if key[1] else weight_decay}
        )
        group["params"].append(p)
    return list(groups.values())


# --------------------------------------------------------------------------- stages


Features = dict[str, torch.Tensor]


@dataclass
class Stage:
    """What one subcommand trains: the model, its loss, its data.

    ``forward(model, batch)`` gets the (maybe DDP-wrapped) model and returns
    the features the loss reads: per-sample tensors (batch first) and shared
    scalars (0-d, e.g. the logit scale); ``loss(features)`` returns the scalar
    loss. ``contrastive``: the loss couples the samples of a batch (each
    sample's negatives are the others), so ``--accum-freq`` caches features
    instead of averaging micro-batch losses. ``meta`` goes into every
    checkpoint (model config, kind).
    """

    name: str
    model: nn.Module
    forward: Callable[[nn.Module, Any], Features]
    loss: Callable[[Features], torch.Tensor]
    contrastive: bool
    dataset: ShardStream
    collate: Callable | None
    groups: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    helpers: list[nn.Module] = field(default_factory=list)  # moved to the device, never trained

    def batch_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """The loss of one batch."""
        return self.loss(self.forward(model, batch))


def _captioner(args: argparse.Namespace, shards: Any) -> Captioner:
    names_file = args.classnames
    if names_file is None:
        # classes.txt next to the shards, as the datasets pipeline writes it
        candidate = Path(expand_shards(shards)[0]).parent / "classes.txt"
        names_file = candidate if candidate.is_file() else None
    names = read_class_names(names_file) if names_file else None
    return Captioner(names, TEMPLATES[args.templates])


#: The stem of a new GS model: measured best (docs/results-cifar10.md, "The raster stem").
DEFAULT_STEM = "raster"


#: The resampler stem's settings: GSStemCfg field -> its flag (argparse dest = flag name).
_RESAMPLER_FLAGS = {
    "n_tokens": "--n-tokens",
    "dim": "--stem-dim",
    "depth": "--stem-depth",
    "heads": "--stem-heads",
    "n_freqs": "--n-freqs",
    "query_grid": "--query-grid",
}


def _stem_kind(args: argparse.Namespace, base: str | None) -> str:
    """``--stem``; else a GS checkpoint's own kind; else (a new stem) `DEFAULT_STEM`."""
    if args.stem is not None:
        return args.stem
    checkpoint = read_checkpoint(base) if base else None
    if checkpoint is not None and is_gs_state_dict(checkpoint["state_dict"]):
        return GSStemCfg(**checkpoint.get("gs_cfg", {})).kind
    return DEFAULT_STEM


def _stem_cfg(args: argparse.Namespace, base: str | None) -> dict[str, Any]:
    """Stem settings from the flags, for a model that starts from ``base`` (a
    checkpoint, or None). Resampler settings with a raster stem are an error."""
    kind = _stem_kind(args, base)
    values = {k: getattr(args, flag[2:].replace("-", "_")) for k, flag in _RESAMPLER_FLAGS.items()}
    given = {k: v for k, v in values.items() if v is not None}
    if kind == "raster" and given:
        flags = ", ".join(_RESAMPLER_FLAGS[k] for k in given)
        raise ValueError(f"{flags}: resampler settings, but the stem is raster (--stem resampler?)")
    return {"kind": kind, **given}


def _model_cfg(args: argparse.Namespace, checkpoint: str | None) -> dict[str, Any]:
    """``--model``, else the model config stored in the checkpoint."""
    if args.model is not None:
        return resolve_model_cfg(args.model)
    if checkpoint is not None:
        meta = read_checkpoint(checkpoint)
        if "model_cfg" in meta:
            return resolve_model_cfg(meta["model_cfg"])
    raise ValueError("--model is needed: the checkpoint does not record its model config")


def _preprocess(model_cfg: dict[str, Any], is_train: bool) -> Callable:
    return open_clip.image_transform(
        model_cfg["vision_cfg"].get("image_size", 224), is_train=is_train
    )


def _clip_loss() -> Callable[[Features], torch.Tensor]:
    rank, world = dist_info()
    clip_loss = ClipLoss(rank=rank, world_size=world)
    return lambda f: clip_loss(f["image_features"], f["text_features"], f["logit_scale"])


def _clip_features(output: Sequence[torch.Tensor]) -> Features:
    # open_clip's (image_features, text_features, logit_scale) tuple, by name
    return dict(zip(("image_features", "text_features", "logit_scale"), output))


def _build_rgb(args: argparse.Namespace) -> Stage:
    cfg = _model_cfg(args, args.pretrained)
    model = create_rgb_model(cfg, args.pretrained)
    tokenizer = get_tokenizer(cfg)
    captioner = _captioner(args, args.train_data)
    preprocess = _preprocess(cfg, is_train=True)
    clip_loss = _clip_loss()

    def transform(sample: dict, rng: Any) -> tuple:
        return preprocess(decode_image(sample)), tokenizer([captioner(sample, rng)])[0]

    def forward(m: nn.Module, batch: Any) -> Features:
        images, texts = batch
        return _clip_features(m(images, texts))

    dataset = ShardStream(args.train_data, transform, seed=args.seed)
    return Stage(
        "rgb",
        model,
        forward,
        clip_loss,
        True,
        dataset,
        None,
        param_groups(model, args.wd),
        {"kind": "rgb", "model_cfg": cfg},
    )


def _gs_groups(
    model: GSCLIP, args: argparse.Namespace, backbone_scale: float
) -> list[dict[str, Any]]:
    def scale(name: str) -> float:
        return 1.0 if name.startswith("visual.stem.") or name == "logit_scale" else backbone_scale

    return param_groups(model, args.wd, scale)


# Every stage defaults to no augmentation: scored on the whole CIFAR-10 test
# set it did not beat none (docs/results-cifar10.md, "Ablation, second pass").
_AUG_FLAGS = {"flip": "aug_flip", "min_crop": "aug_min_crop", "jitter": "aug_jitter",
              "dropout": "aug_dropout"}  # fmt: skip


def _augment(args: argparse.Namespace) -> SplatAugment:
    """The ``--aug-*`` flags given (the others keep `SplatAugment`'s: none)."""
    given = {field: getattr(args, flag, None) for field, flag in _AUG_FLAGS.items()}
    return SplatAugment(**{field: value for field, value in given.items() if value is not None})


def _lock_stem_only(model: GSCLIP, args: argparse.Namespace) -> None:
    if args.stem_only:  # paper v2 stage 1: nothing but the stem learns
        model.requires_grad_(False)
        model.visual.stem.requires_grad_(True)


def _token_layer(args: argparse.Namespace) -> int:
    """``--distill-tokens-layer``, by default the output of the last trainable block."""
    if args.distill_tokens_layer is not None:
        return args.distill_tokens_layer
    return 0 if args.stem_only else args.unlocked_blocks


def _build_distill(args: argparse.Namespace) -> Stage:
    cfg = _model_cfg(args, args.teacher)
    model = create_gs_model(
        cfg,
        args.pretrained or args.teacher,
        gs_cfg=_stem_cfg(args, args.pretrained or args.teacher),
        unlocked_blocks=args.unlocked_blocks,
    )
    _lock_stem_only(model, args)
    model.logit_scale.requires_grad = False  # unused by the MSE; DDP wants no idle trainable params
    augment = _augment(args)
    token_mode = args.distill_tokens
    token_layer = _token_layer(args) if token_mode else None
    distill_loss = DistillLoss()
    token_loss = TokenDistillLoss(token_mode) if token_mode else None
    helpers: list[nn.Module] = []

    if args.teacher_embeddings:
        stored = TeacherEmbeddings(args.teacher_embeddings)
        if stored.embed_dim != cfg["embed_dim"]:
            raise ValueError(
                f"--teacher-embeddings hold {stored.embed_dim}-d embeddings; the model's are "
                f"{cfg['embed_dim']}-d"
            )
        if token_mode and stored.token_layer != token_layer:
            raise ValueError(
                f"--distill-tokens needs teacher tokens after block {token_layer}; "
                f"--teacher-embeddings hold {'none' if stored.token_layer is None else 'block ' + str(stored.token_layer)}"
                " (gscodec-train embed --token-layer)"
            )
        if any(getattr(args, _AUG_FLAGS[f]) is not None for f in ("flip", "min_crop", "jitter")):
            raise ValueError(
                "with --teacher-embeddings the views were drawn by gscodec-train embed: "
                "only --aug-dropout applies here"
            )

        def transform(sample: dict, rng: Any) -> tuple:
            view, embedding, tokens = pick(stored[sample["__key__"]], rng)
            rows = augment_splats(sample["gsi"].to_array(), view, augment.dropout, rng)
            return (rows, embedding) + ((tokens,) if token_mode else ())

        def targets(rest: list[torch.Tensor]) -> list[torch.Tensor]:
            return rest

    else:
        if not args.rgb_data:
            raise ValueError("distill needs --rgb-data (the RGB originals) or --teacher-embeddings")
        teacher = create_rgb_model(cfg, args.teacher).eval().requires_grad_(False)
        helpers.append(teacher)
        rgb = TarIndex(args.rgb_data)
        preprocess = _preprocess(cfg, is_train=False)  # the splats saw the whole image: no crops

        def transform(sample: dict, rng: Any) -> tuple:
            view = draw_view(augment, rng)  # the same view for student and teacher
            rows = augment_splats(sample["gsi"].to_array(), view, augment.dropout, rng)
            image = augment_image(decode_image(rgb[sample["__key__"]]), view)
            return rows, preprocess(image)

        def targets(rest: list[torch.Tensor]) -> list[torch.Tensor]:
            with torch.no_grad(), _capturing(teacher.visual, token_layer) as captured:
                embedding = teacher.encode_image(rest[0])
            return [embedding, *captured]

    def forward(m: nn.Module, batch: Any) -> Features:
        splats, mask, *rest = batch
        wanted = targets(rest)
        visual = getattr(m, "module", m).visual  # DDP wraps the model
        with _capturing(visual, token_layer) as captured:
            student = m(splats, mask=mask)[0]
        features = {"student": student, "teacher": wanted[0]}
        if token_mode:
            features.update(student_tokens=captured[0], teacher_tokens=wanted[1])
        return features

    def loss(features: Features) -> torch.Tensor:
        value = distill_loss(features["student"], features["teacher"])
        if token_loss is not None:
            tokens = token_loss(features["student_tokens"], features["teacher_tokens"])
            value = value + args.distill_tokens_weight * tokens
        return value

    dataset = ShardStream(args.train_data, transform, seed=args.seed)
    return Stage(
        "distill",
        model,
        forward,
        loss,
        False,  # per-sample loss: accumulation averages micro-batch losses, exactly
        dataset,
        collate_gs,
        _gs_groups(model, args, args.backbone_lr_scale),
        {"kind": "gs", "model_cfg": cfg, "gs_cfg": model.gs_cfg.as_dict()},
        helpers=helpers,
    )


def _capturing(visual: nn.Module, layer: int | None) -> Any:
    """`capture_tokens` when token distillation is on, else a no-op yielding ``[]``."""
    return capture_tokens(visual, layer) if layer is not None else nullcontext([])


def _build_align(args: argparse.Namespace) -> Stage:
    if args.pretrained is None:
        raise ValueError("align needs --pretrained (a distilled GS or an RGB checkpoint)")
    cfg = _model_cfg(args, args.pretrained)
    if args.from_scratch:
        model = create_gs_model(cfg, None, gs_cfg=_stem_cfg(args, None), unlocked_blocks=None)
        model.load_text_state_dict(read_checkpoint(args.pretrained)["state_dict"])
        model.lock_text_tower()
        backbone_scale = 1.0  # nothing pretrained to protect
    else:
        model = create_gs_model(
            cfg,
            args.pretrained,
            gs_cfg=_stem_cfg(args, args.pretrained),
            unlocked_blocks=args.unlocked_blocks,
        )
        backbone_scale = args.backbone_lr_scale
    _lock_stem_only(model, args)
    augment = _augment(args)
    tokenizer = get_tokenizer(cfg)
    captioner = _captioner(args, args.train_data)
    clip_loss = _clip_loss()

    def transform(sample: dict, rng: Any) -> tuple:
        rows = augment_splats(sample["gsi"].to_array(), draw_view(augment, rng), augment.dropout, rng)
        return rows, tokenizer([captioner(sample, rng)])[0]

    def forward(m: nn.Module, batch: Any) -> Features:
        splats, mask, texts = batch
        return _clip_features(m(splats, texts, mask=mask))

    dataset = ShardStream(args.train_data, transform, seed=args.seed)
    return Stage(
        "align",
        model,
        forward,
        clip_loss,
        True,
        dataset,
        collate_gs,
        _gs_groups(model, args, backbone_scale),
        {"kind": "gs", "model_cfg": cfg, "gs_cfg": model.gs_cfg.as_dict()},
    )


def build_stage(args: argparse.Namespace) -> Stage:
    """The `Stage` for ``args.command`` (``rgb``, ``distill`` or ``align``)."""
    torch.manual_seed(args.seed)  # model init
    return {"rgb": _build_rgb, "distill": _build_distill, "align": _build_align}[args.command](args)


# --------------------------------------------------------------------------- run folder


LATEST_CHECKPOINT = "epoch_latest.pt"


def run_dir(args: argparse.Namespace) -> Path:
    """``LOGS/NAME``: the run folder (open_clip's layout)."""
    return Path(args.logs) / args.name


def default_run_name(args: argparse.Namespace) -> str:
    """open_clip's run name: date, (stage,) model, lr, batch size, workers, precision."""
    model = Path(args.model).stem if args.model else "from-checkpoint"
    date = datetime.now().strftime("%Y_%m_%d-%H_%M_%S")
    if dist_info()[1] > 1:  # every rank must name the same folder
        shared = [date]
        torch.distributed.broadcast_object_list(shared, src=0)
        date = shared[0]
    parts = [date, args.command, f"model_{model}", f"lr_{args.lr}", f"b_{args.batch_size}"]
    return "-".join([*parts, f"j_{args.workers}", f"p_{args.precision}"])


def split_sources(values: Sequence[str]) -> list[str]:
    """``--train-data`` values with open_clip's ``::`` separator split into sources."""
    return [part for value in values for part in value.split("::") if part]


def latest_checkpoint(checkpoints: Path) -> Path | None:
    """``epoch_latest.pt`` if there is one, else the highest ``epoch_N.pt``, else None."""
    if (checkpoints / LATEST_CHECKPOINT).is_file():
        return checkpoints / LATEST_CHECKPOINT
    numbered = [
        (int(match.group(1)), path)
        for path in checkpoints.glob("epoch_*.pt")
        if (match := re.fullmatch(r"epoch_(\d+)\.pt", path.name))
    ]
    return max(numbered)[1] if numbered else None


def _resume_path(resume: str, run: Path) -> Path | None:
    if resume == "latest":  # as open_clip: nothing saved yet means a fresh start
        return latest_checkpoint(run / "checkpoints")
    if not Path(resume).is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {resume}")
    return Path(resume)


def _prepare_run_dir(args: argparse.Namespace) -> Path:
    """Create ``LOGS/NAME`` and write ``params.txt``; refuse to overwrite another run."""
    run = run_dir(args)
    if (run / "out.log").exists() and args.resume != "latest":
        raise ValueError(
            f"run {run} already exists: give another --name, or --resume latest to continue it"
        )
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    with open(run / "params.txt", "w", encoding="utf-8") as handle:
        for name in sorted(vars(args)):
            handle.write(f"{name}: {getattr(args, name)}\n")
    return run


def _tensorboard_writer(args: argparse.Namespace, run: Path) -> Any | None:
    if "tensorboard" not in args.report_to:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ImportError(
            "--report-to tensorboard needs tensorboard: pip install 'gscodec[tensorboard]'"
        ) from None
    return SummaryWriter(str(run / "tensorboard"))


def save_checkpoint(
    run: Path,
    epoch: int,
    stage: Stage,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    args: argparse.Namespace,
    metrics: dict[str, Any],
    *,
    numbered: bool = True,
    latest: bool = False,
) -> list[Path]:
    """Write ``epoch_{epoch}.pt`` (``numbered``) and/or ``epoch_latest.pt`` (``latest``).

    open_clip's checkpoint (``epoch``, ``name``, ``state_dict``, ``optimizer``,
    ``scaler``) plus our metadata (stage, model config, RNG, args, metrics).
    """
    checkpoint = {
        "epoch": epoch,
        "name": args.name,
        "stage": stage.name,
        **stage.meta,
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": torch.get_rng_state(),
        "args": {
            k: (v if isinstance(v, (int, float, str, bool, type(None), list)) else str(v))
            for k, v in vars(args).items()
        },
        "metrics": metrics,
    }
    names = [f"epoch_{epoch}.pt"] * numbered + [LATEST_CHECKPOINT] * latest
    paths = [run / "checkpoints" / name for name in names]
    for path in paths:
        with atomic_path(path) as tmp:  # a killed save never leaves half a checkpoint
            torch.save(checkpoint, tmp)
    return paths


# --------------------------------------------------------------------------- loop


def _setup_distributed(args: argparse.Namespace) -> torch.device:
    """Join the process group when launched as one of several ranks (torchrun or
    SLURM, read by the one rank helper `gscodec.datasets.rank_from_env`; the
    rendezvous address comes from MASTER_ADDR/MASTER_PORT as torch reads it)."""
    rank, world, local_rank = rank_from_env()
    if world > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend, rank=rank, world_size=world)
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank or 0)
            return torch.device("cuda", local_rank or 0)
        return torch.device("cpu")
    return _device(args.device)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


#: ``--precision`` choices, as open_clip names them (its pure_/half modes are not offered).
PRECISIONS = ("amp", "amp_bf16", "amp_bfloat16", "fp32")


def _autocast(precision: str, device: torch.device) -> Callable[[], Any]:
    if precision == "fp32" or device.type != "cuda":
        return nullcontext
    dtype = torch.float16 if precision == "amp" else torch.bfloat16
    return lambda: torch.autocast("cuda", dtype=dtype)


def _to(batch: Sequence[Any], device: torch.device) -> list[Any]:
    return [b.to(device, non_blocking=True) if isinstance(b, torch.Tensor) else b for b in batch]


def accumulate_gradients(
    stage: Stage,
    model: nn.Module,
    micro_batches: Sequence[Any],
    *,
    autocast: Callable[[], Any] = nullcontext,
    scaler: Any = None,
    no_sync: Callable[[], Any] = nullcontext,
) -> float:
    """Backpropagate ``micro_batches`` as one batch; returns that batch's loss.

    A contrastive stage uses open_clip's feature cache: features of every
    micro-batch are first computed without gradients; then each micro-batch
    runs again with gradients, and the loss of the whole batch (its fresh
    features in place of its cached ones) is backpropagated. The gradients
    add up to those of one big batch, and every sample has the whole batch as
    negatives. Shared scalars (the logit scale) take their gradient from the
    last micro-batch only, so theirs matches too (open_clip's loop counts it
    once per micro-batch). Other stages average micro-batch losses, which is
    exact for a per-sample loss. ``no_sync`` wraps every micro-batch but the
    last (DDP's ``no_sync``: gradients are all-reduced once).
    """
    k = len(micro_batches)

    def backward(loss: torch.Tensor) -> None:
        (scaler.scale(loss) if scaler is not None else loss).backward()

    if k == 1 or not stage.contrastive:
        total = 0.0
        for j, batch in enumerate(micro_batches):
            with no_sync() if j < k - 1 else nullcontext():
                with autocast():
                    loss = stage.batch_loss(model, batch) / k
                backward(loss)
            total += loss.item()
        return total
    with torch.no_grad(), autocast():
        cached = [stage.forward(model, batch) for batch in micro_batches]
    for j, batch in enumerate(micro_batches):
        last = j == k - 1
        with no_sync() if not last else nullcontext():
            with autocast():
                fresh = stage.forward(model, batch)
                features = {
                    key: (value if last else cached[j][key])
                    if value.ndim == 0
                    else torch.cat([value if i == j else c[key] for i, c in enumerate(cached)])
                    for key, value in fresh.items()
                }
                loss = stage.loss(features)
            backward(loss)
    return loss.item()


class JsonlLog:
    """Appends one JSON object per line (rank 0 only)."""

    def __init__(self, path: Path | None):
        self.path = path

    def __call__(self, **record: Any) -> None:
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")


def train(
    stage: Stage, args: argparse.Namespace, device: torch.device | None = None
) -> dict[str, Any]:
    """Run ``args.epochs`` epochs of ``stage`` in the run folder ``LOGS/NAME``.

    Returns the last epoch's summary. Rank 0 writes ``params.txt``,
    ``out.log`` (the log lines), ``log.jsonl`` (the same, machine-readable),
    ``checkpoints/`` and, with ``--report-to tensorboard``, ``tensorboard/``.
    """
    device = device or torch.device("cpu")
    rank, world = dist_info()
    is_main = rank == 0
    run = run_dir(args)
    writer = None
    file_log = None
    level = logger.level
    if is_main:
        run = _prepare_run_dir(args)
        writer = _tensorboard_writer(args, run)
        file_log = logging.FileHandler(run / "out.log", encoding="utf-8")
        file_log.setFormatter(logging.Formatter("%(asctime)s | %(levelname)s | %(message)s"))
        logger.addHandler(file_log)
        logger.setLevel(logging.INFO)  # out.log gets the progress lines whatever the root level
    try:
        return _train(stage, args, device, run, writer)
    finally:
        if file_log is not None:
            logger.removeHandler(file_log)
            logger.setLevel(level)
            file_log.close()
        if writer is not None:
            writer.close()


def _train(
    stage: Stage, args: argparse.Namespace, device: torch.device, run: Path, writer: Any
) -> dict[str, Any]:
    rank, world = dist_info()
    is_main = rank == 0
    log = JsonlLog(run / "log.jsonl" if is_main else None)
    if args.precision != "fp32" and device.type != "cuda":
        logger.warning("--precision %s needs a GPU; training in fp32 on %s", args.precision, device)

    model = stage.model.to(device)
    for helper in stage.helpers:
        helper.to(device)
    optimizer = torch.optim.AdamW(
        stage.groups, lr=args.lr, betas=(args.beta1, args.beta2), eps=args.eps
    )
    use_scaler = args.precision == "amp" and device.type == "cuda"  # fp16 needs loss scaling
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    start_epoch = 0
    resume_from = _resume_path(args.resume, run) if args.resume else None
    if resume_from is not None:
        checkpoint = torch.load(resume_from, map_location="cpu", weights_only=True)
        model.load_state_dict(checkpoint["state_dict"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scaler is not None and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        torch.set_rng_state(checkpoint["rng"])
        start_epoch = checkpoint["epoch"]
        logger.info("resuming from %s (epoch %d)", resume_from, start_epoch)
    elif args.resume:
        logger.info("no checkpoint to resume in %s; starting afresh", run / "checkpoints")
    wrapped = model
    no_sync: Callable[[], Any] = nullcontext
    if world > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
        no_sync = wrapped.no_sync

    n_samples = args.train_num_samples or count_samples(stage.dataset.shards)
    steps_per_epoch = n_samples // (args.batch_size * world * args.accum_freq)
    if steps_per_epoch < 1:
        raise ValueError(
            f"--train-data: {n_samples} samples do not fill one step of "
            f"{args.batch_size} x {world} ranks x {args.accum_freq} accumulation"
        )
    total_steps = steps_per_epoch * args.epochs
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())
    if is_main:
        log(
            event="start",
            stage=stage.name,
            params=n_total,
            trainable=n_trainable,
            trainable_fraction=n_trainable / n_total,
            samples=n_samples,
            steps_per_epoch=steps_per_epoch,
            start_epoch=start_epoch,
            world_size=world,
            device=str(device),
        )
        logger.info(
            "%s: %d samples/epoch, %d steps/epoch, %d of %d parameters trainable (%.1f%%), %s",
            stage.name, n_samples, steps_per_epoch, n_trainable, n_total,
            100 * n_trainable / n_total, device,
        )  # fmt: skip
    autocast = _autocast(args.precision, device)
    samples_per_step = args.batch_size * args.accum_freq * world
    summary: dict[str, Any] = {"trainable_fraction": n_trainable / n_total}
    for epoch in range(start_epoch, args.epochs):
        model.train()
        stage.dataset.set_epoch(epoch)
        loader = iter(
            DataLoader(
                stage.dataset,
                batch_size=args.batch_size,
                num_workers=args.workers,
                collate_fn=stage.collate,
                drop_last=True,
                pin_memory=device.type == "cuda",
            )
        )
        start, losses = time.time(), []
        # A bar on a terminal (steps, rate, ETA); logs get the open_clip-style lines below.
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"{stage.name} epoch {epoch + 1}/{args.epochs}",
            disable=not (is_main and sys.stderr.isatty()),
            dynamic_ncols=True,
            leave=False,
        )
        for step in bar:
            global_step = epoch * steps_per_epoch + step
            lr = cosine_lr(global_step, args.lr, args.warmup, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            micro_batches = [_to(next(loader), device) for _ in range(args.accum_freq)]
            step_loss = accumulate_gradients(
                stage, wrapped, micro_batches, autocast=autocast, scaler=scaler, no_sync=no_sync
            )
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                model.logit_scale.clamp_(0, _MAX_LOGIT_SCALE)
            losses.append(step_loss)
            if not math.isfinite(step_loss):
                raise FloatingPointError(
                    f"{stage.name}: loss is {step_loss} at epoch {epoch + 1} step {step}"
                )
            if is_main and (step % args.log_every_n_steps == 0 or step == steps_per_epoch - 1):
                rate = (step + 1) * samples_per_step / (time.time() - start)
                scale = model.logit_scale.exp().item()
                done = (step + 1) * samples_per_step
                logger.info(
                    "Train Epoch: %d [%d/%d (%.0f%%)] Loss: %.5f LR: %.3e Logit Scale: %.3f "
                    "Samples/s: %.1f",
                    epoch, done, steps_per_epoch * samples_per_step,
                    100 * (step + 1) / steps_per_epoch, step_loss, lr, scale, rate,
                )  # fmt: skip
                log(
                    event="step",
                    stage=stage.name,
                    epoch=epoch,
                    step=step,
                    global_step=global_step,
                    loss=step_loss,
                    lr=lr,
                    samples_per_s=rate,
                    logit_scale=scale,
                )
                if writer is not None:
                    for key, value in (
                        ("loss", step_loss), ("lr", lr), ("scale", scale),
                        ("samples_per_second", rate),
                    ):  # fmt: skip
                        writer.add_scalar(f"train/{key}", value, global_step)
        completed = epoch + 1
        summary.update(
            epoch=completed, loss=sum(losses) / len(losses), epoch_seconds=time.time() - start
        )
        if is_main and _zeroshot_due(args, completed):
            result = _evaluate_model(model, stage.meta, args, device)
            summary.update({f"zeroshot_{k}": v for k, v in result.items()})
            logger.info("Eval Epoch: %d %s", completed, json.dumps(result))
            if writer is not None:
                for key, value in result.items():
                    writer.add_scalar(f"val/zeroshot_{key}", value, completed)
        if is_main:
            numbered = completed == args.epochs or (
                args.save_frequency > 0 and completed % args.save_frequency == 0
            )
            paths = save_checkpoint(
                run, completed, stage, model, optimizer, scaler, args, summary,
                numbered=numbered, latest=args.save_most_recent,
            )  # fmt: skip
            log(event="epoch", stage=stage.name, checkpoints=[str(p) for p in paths], **summary)
        if world > 1:
            torch.distributed.barrier()
    return summary


def _zeroshot_due(args: argparse.Namespace, completed_epoch: int) -> bool:
    """open_clip's rule: every ``--zeroshot-frequency`` epochs, and after the last."""
    if not args.zeroshot_data or args.zeroshot_frequency <= 0:
        return False
    return completed_epoch % args.zeroshot_frequency == 0 or completed_epoch == args.epochs


# --------------------------------------------------------------------------- eval


def _evaluate_model(
    model: nn.Module, meta: dict[str, Any], args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    cfg = meta["model_cfg"]
    preprocess = None if isinstance(model, GSCLIP) else _preprocess(cfg, is_train=False)
    names = read_class_names(args.classnames) if args.classnames else None
    return evaluate(
        model,
        get_tokenizer(cfg),
        args.zeroshot_data,
        preprocess=preprocess,
        class_names=names,
        templates=TEMPLATES[args.templates],
        batch_size=args.batch_size,
        device=device,
    )


#: CLIP_benchmark's task names, and how to tell their metrics apart.
TASKS = {
    "zeroshot_classification": lambda key: key.startswith("acc") or key == "mean_per_class_recall",
    "zeroshot_retrieval": lambda key: "_retrieval_recall@" in key,
}


def _run_eval(args: argparse.Namespace) -> dict[str, Any]:
    device = _device(args.device)
    checkpoint = read_checkpoint(args.checkpoint)
    cfg = _model_cfg(args, args.checkpoint)
    is_gs = is_gs_state_dict(checkpoint["state_dict"])
    model = (
        create_gs_model(cfg, args.checkpoint) if is_gs else create_rgb_model(cfg, args.checkpoint)
    )
    model.to(device)
    start = time.time()
    result = _evaluate_model(model, {"model_cfg": cfg}, args, device)
    task = args.task or ("zeroshot_classification" if "acc1" in result else "zeroshot_retrieval")
    metrics = {k: v for k, v in result.items() if TASKS[task](k)}
    if not metrics:
        wanted = "class labels with class names" if "classification" in task else ".txt captions"
        raise ValueError(f"--zeroshot-data: no {wanted} for {task} in {args.zeroshot_data}")
    saved_args = checkpoint.get("args") or {}
    record = {  # CLIP_benchmark's result layout, then what is particular to gscodec
        "dataset": args.dataset or " ".join(args.zeroshot_data),
        "model": args.model or saved_args.get("model") or "custom",
        "pretrained": str(args.checkpoint),
        "task": task,
        "metrics": metrics,
        "language": "en",
        "kind": "gs" if is_gs else "rgb",
        "n_images": result["n"],
        "eval_seconds": round(time.time() - start, 2),
    }
    if is_gs:
        record["n_tokens"] = model.visual.stem.n_tokens
    print(json.dumps(record))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


# --------------------------------------------------------------------------- CLI


def _report_to(value: str) -> list[str]:
    targets = [t for t in value.split(",") if t]
    unknown = [t for t in targets if t != "tensorboard"]
    if unknown:
        raise argparse.ArgumentTypeError(f"{unknown}: only 'tensorboard' is supported")
    return targets


def build_parser() -> argparse.ArgumentParser:
    """The ``gscodec-train`` argument parser."""
    parser = argparse.ArgumentParser(prog="gscodec-train", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--model", help="open_clip model name or JSON config (default: the checkpoint's)"
        )
        p.add_argument("--batch-size", type=int, default=256, help="per rank")
        p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
        g = p.add_argument_group("captions and zero-shot prompts (gscodec)")
        g.add_argument(
            "--classnames", help="class names file, one per line (default: classes.txt by the data)"
        )
        g.add_argument(
            "--templates",
            default="cifar10",
            choices=sorted(TEMPLATES),
            help="prompt templates for captions from .cls and for zero-shot classifiers",
        )

    def training(p: argparse.ArgumentParser) -> None:
        common(p)
        p.add_argument(
            "--train-data",
            nargs="+",
            required=True,
            type=str,
            help="tar shards: paths, globs, {a..b} ranges, folders; sources joined by '::'",
        )
        p.add_argument(
            "--train-num-samples", type=int, help="samples per epoch (default: count the shards)"
        )
        p.add_argument("--logs", default="./logs/", help="where run folders go")
        p.add_argument(
            "--name",
            help="run folder LOGS/NAME (default: date, model, lr, batch, workers, precision)",
        )
        p.add_argument("--pretrained", help="local checkpoint to start from (never downloaded)")
        p.add_argument("--epochs", type=int, help="default 1 (--recipe paper-v2: 2, stage 1)")
        p.add_argument(
            "--lr", type=float, default=1e-3, help="base LR (the GS stem's in distill/align)"
        )
        p.add_argument("--wd", type=float, default=0.2)
        p.add_argument("--beta1", type=float, default=0.9)
        p.add_argument("--beta2", type=float, default=0.98)
        p.add_argument("--eps", type=float, default=1e-6)
        p.add_argument("--warmup", type=int, default=100, help="linear warmup steps")
        p.add_argument(
            "--accum-freq",
            type=int,
            default=1,
            help="micro-batches per optimizer step (contrastive stages: feature cache, "
            "negatives from the whole accumulated batch)",
        )
        p.add_argument(
            "--precision",
            default="amp_bf16",
            choices=PRECISIONS,
            help="autocast on GPU (amp = fp16 + grad scaling); CPU always runs fp32",
        )
        p.add_argument("--workers", type=int, default=1, help="data loader processes per rank")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--log-every-n-steps", type=int, default=100)
        p.add_argument(
            "--report-to", type=_report_to, default=[], help="'tensorboard' (LOGS/NAME/tensorboard)"
        )
        p.add_argument(
            "--resume",
            help="checkpoint path, or 'latest' (the newest in LOGS/NAME/checkpoints, if any)",
        )
        p.add_argument(
            "--save-frequency",
            type=int,
            default=1,
            help="epochs between epoch_N.pt checkpoints (the last epoch is always saved)",
        )
        p.add_argument(
            "--save-most-recent",
            action="store_true",
            help="also keep checkpoints/epoch_latest.pt, rewritten every epoch",
        )
        p.add_argument(
            "--zeroshot-data", nargs="+", help="zero-shot eval set: tar shards, class folder or CSV"
        )
        p.add_argument(
            "--zeroshot-frequency",
            type=int,
            default=2,
            help="epochs between zero-shot evals (and after the last; 0: never)",
        )

    def gs(p: argparse.ArgumentParser) -> Any:
        g = p.add_argument_group("splat encoder (gscodec)")
        g.add_argument(
            "--stem",
            choices=STEM_KINDS,
            help="raster: the ViT's patch embedding of the splats rendered at its input size; "
            "resampler: the paper's set-to-tokens stem (default: a GS checkpoint's, else raster)",
        )
        g.add_argument(
            "--n-tokens", type=int, help="resampler output tokens (default 196; raster: patches)"
        )
        g.add_argument("--stem-dim", type=int, help="resampler width (default 256)")
        g.add_argument("--stem-depth", type=int, help="resampler layers (default 2)")
        g.add_argument("--stem-heads", type=int, help="resampler heads (default 8)")
        g.add_argument("--n-freqs", type=int, help="Fourier octaves of the position (default 8)")
        g.add_argument(
            "--query-grid",
            action="store_true",
            default=None,
            help="resampler queries with positions: a grid, a distance bias, patch positions",
        )
        g.add_argument(
            "--unlocked-blocks", type=int, default=2, help="leading ViT blocks left trainable"
        )
        g.add_argument(
            "--stem-only",
            action="store_true",
            help="train only the GS stem (backbone, head and text tower frozen; paper v2 stage 1)",
        )
        a = p.add_argument_group("splat-space augmentation (gscodec; off by default)")
        augmentation_flags(a)
        a.add_argument(
            "--aug-dropout",
            type=float,
            help="probability of dropping each splat (default 0)",
        )
        g.add_argument(
            "--backbone-lr-scale",
            type=float,
            default=0.1,
            help="LR factor of the unfrozen backbone",
        )
        return g

    def augmentation_flags(a: Any) -> None:
        a.add_argument(
            "--aug-flip",
            type=float,
            help="probability of a horizontal flip (default 0)",
        )
        a.add_argument(
            "--aug-min-crop",
            type=float,
            help="smallest crop side, fraction of the image (default 1: no crop/zoom)",
        )
        a.add_argument(
            "--aug-jitter",
            type=float,
            help="brightness/contrast/saturation factors uniform in [1-J, 1+J] (default 0)",
        )

    p = sub.add_parser("rgb", help="train an RGB CLIP teacher on image shards")
    training(p)
    p = sub.add_parser("distill", help="stage 1: match the RGB teacher's image embeddings")
    training(p)
    g = gs(p)
    g.add_argument(
        "--teacher", required=True, help="RGB teacher checkpoint (also the default --pretrained)"
    )
    g.add_argument("--rgb-data", nargs="+", help="RGB shards holding the GS samples' keys")
    g.add_argument(
        "--teacher-embeddings",
        nargs="+",
        help="shards from gscodec-train embed: stored teacher targets instead of --rgb-data "
        "(no teacher forward pass per step)",
    )
    g.add_argument(
        "--distill-tokens",
        choices=TOKEN_MODES,
        help="also match the teacher's hidden tokens: 'pooled' (class token + mean token) or "
        "'grid' (class token + patch grid pooled to the student's token grid)",
    )
    g.add_argument(
        "--distill-tokens-layer",
        type=int,
        help="block after which tokens are matched (default: the last trainable one)",
    )
    g.add_argument(
        "--distill-tokens-weight", type=float, default=1.0, help="weight of the token loss"
    )
    g.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        help="preset schedule; paper-v2: stage 1 stem-only distill (--epochs, default 2) into "
        "LOGS/NAME-distill, then align (--align-epochs, default 5) into LOGS/NAME",
    )
    g.add_argument(
        "--align-epochs", type=int, default=5, help="stage-2 epochs of --recipe paper-v2"
    )
    p = sub.add_parser("align", help="stage 2: contrastive alignment with the text tower")
    training(p)
    g = gs(p)
    g.add_argument(
        "--from-scratch",
        action="store_true",
        help="ablation: fresh, fully trainable image tower; only the text tower comes from --pretrained",
    )
    p = sub.add_parser("embed", help="precompute teacher embeddings into shards (for distill)")
    common(p)
    p.add_argument("--train-data", nargs="+", required=True, help="RGB shards")
    p.add_argument("--teacher", required=True, help="RGB teacher checkpoint")
    p.add_argument("--output", required=True, help="folder for the embedding shards")
    p.add_argument("--views", type=int, default=1, help="views per image (view 0: unaugmented)")
    p.add_argument(
        "--token-layer", type=int, help="also store the hidden tokens after this block"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the drawn views")
    a = p.add_argument_group("augmentation of views 1..K-1")
    augmentation_flags(a)
    p = sub.add_parser("eval", help="zero-shot classification / retrieval of a checkpoint")
    common(p)
    p.add_argument("--checkpoint", required=True, help="RGB or GS checkpoint file")
    p.add_argument(
        "--zeroshot-data",
        nargs="+",
        required=True,
        help="eval set: tar shards (RGB or GS), class folder or image,caption CSV",
    )
    p.add_argument(
        "--task",
        choices=sorted(TASKS),
        help="default: classification if the data has class labels, else retrieval",
    )
    p.add_argument("--dataset", help="dataset name in the result (default: --zeroshot-data)")
    p.add_argument("--output", help="also write the result (CLIP_benchmark's JSON) to this file")
    p.set_defaults(batch_size=512)
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run parsed ``gscodec-train`` arguments: the eval record, or the last epoch's summary."""
    if args.command == "eval":
        return _run_eval(args)
    args.train_data = split_sources(args.train_data)
    if args.command == "embed":
        return _run_embed(args)
    if getattr(args, "rgb_data", None):
        args.rgb_data = split_sources(args.rgb_data)
    device = _setup_distributed(args)
    try:
        if args.name is None:
            args.name = default_run_name(args)
        if getattr(args, "recipe", None) == "paper-v2":
            return _run_paper_v2(args, device)
        if args.epochs is None:
            args.epochs = 1
        return train(build_stage(args), args, device)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


#: ``--recipe`` presets (`run` dispatches on the name).
RECIPES = {
    "paper-v2": "stage 1: stem-only distillation (MSE of normalized embeddings), "
    "stage 2: contrastive alignment from its last checkpoint",
}


def _run_paper_v2(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """The paper's v2 recipe: stage 1 trains only the stem to match the teacher's
    normalized embeddings (``--epochs``, default 2) in ``LOGS/NAME-distill``;
    stage 2 trains stem + first blocks + head contrastively (``--align-epochs``,
    default 5) from stage 1's checkpoint in ``LOGS/NAME``, the final model."""
    first = argparse.Namespace(**vars(args))
    first.name, first.stem_only, first.recipe = f"{args.name}-distill", True, None
    first.epochs = args.epochs or 2
    train(build_stage(first), first, device)
    second = argparse.Namespace(**vars(args))
    second.command, second.from_scratch, second.recipe = "align", False, None
    second.pretrained = str(run_dir(first) / "checkpoints" / f"epoch_{first.epochs}.pt")
    second.epochs = args.align_epochs
    return train(build_stage(second), second, device)


def _run_embed(args: argparse.Namespace) -> dict[str, Any]:
    cfg = _model_cfg(args, args.teacher)
    augment = _augment(args)
    record = write_teacher_embeddings(
        create_rgb_model(cfg, args.teacher),
        _preprocess(cfg, is_train=False),
        args.train_data,
        args.output,
        n_views=args.views,
        augment=augment,
        seed=args.seed,
        token_layer=args.token_layer,
        batch_size=args.batch_size,
        device=_device(args.device),
        metadata={"teacher": str(args.teacher), "model_cfg": cfg},
    )
    logger.info("embed: wrote %s (%d views per image)", args.output, args.views)
    return record


#: What bad input raises (missing files, mismatched checkpoints, empty data,
#: a missing optional package): reported in one line, not as a traceback.
_INPUT_ERRORS = (ValueError, OSError, KeyError, ImportError, GSIError)


def _one_line(exc: BaseException) -> str:
    # DataLoader workers re-raise with the worker's traceback in the message: its last line counts
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    message = lines[-1] if lines else type(exc).__name__
    return message.strip("'\"") if isinstance(exc, KeyError) else message


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gscodec-train``: 0 on success, 1 with a one-line message on bad input."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        run(args)
    except _INPUT_ERRORS as exc:
        print(f"gscodec-train {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
