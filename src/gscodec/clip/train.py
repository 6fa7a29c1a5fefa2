"""``gscodec-train``: RGB teacher, stage 1 (distill), stage 2 (align) and zero-shot eval.

Subcommands:

- ``rgb``: train an RGB open_clip CLIP on image shards (the teacher, when no
  pretrained checkpoint exists). Captions: ``.txt``, or ``.cls`` + templates.
- ``distill``: stage 1. A `GSCLIP` initialized from the teacher learns to
  match the teacher's image embeddings (`DistillLoss`) on GS shards paired by
  key with the RGB shards.
- ``align``: stage 2. open_clip's ``ClipLoss`` on GS shards + captions. With
  ``--from-scratch``, the paper's ablation: a fresh, fully trainable image
  tower against the pretrained text tower, no distillation.
- ``eval``: zero-shot classification (top-1/5) and retrieval (R@1/5/10).

Training follows open_clip: AdamW (no weight decay on gains, biases and
embeddings), cosine schedule with linear warmup, per-step LR, logit scale
clamped to 100. The GS stages train per the paper: text tower and backbone
frozen except the stem, the first 2 blocks, ``ln_post`` and ``proj``; the
stem at ``--lr``, unfrozen backbone at ``--backbone-lr-scale`` x ``--lr``.
Each epoch ends in a checkpoint (``OUTPUT/checkpoints/epoch_N.pt`` and
``epoch_latest.pt``, written atomically); ``--resume`` continues from one with
the same data order, so a resumed run matches an uninterrupted one. Logs go
to ``OUTPUT/log.jsonl``. Under ``torchrun`` (``WORLD_SIZE`` > 1) it runs DDP.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import open_clip
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from gscodec.datasets import expand_shards

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
from .loss import ClipLoss, DistillLoss
from .model import (
    GSCLIP,
    create_gs_model,
    create_rgb_model,
    get_tokenizer,
    read_checkpoint,
    resolve_model_cfg,
)
from .zeroshot import TEMPLATES, evaluate

__all__ = ["main", "build_parser", "Stage", "build_stage", "train", "cosine_lr", "param_groups"]

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


@dataclass
class Stage:
    """What one subcommand trains: the model, its loss on a batch, its data.

    ``loss(model, batch)`` gets the (maybe DDP-wrapped) model and returns the
    scalar loss; ``meta`` goes into every checkpoint (model config, kind).
    """

    name: str
    model: nn.Module
    loss: Callable[[nn.Module, Any], torch.Tensor]
    dataset: ShardStream
    collate: Callable | None
    groups: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    helpers: list[nn.Module] = field(default_factory=list)  # moved to the device, never trained


def _captioner(args: argparse.Namespace, shards: Any) -> Captioner:
    names_file = args.classnames
    if names_file is None:
        # classes.txt next to the shards, as the datasets pipeline writes it
        candidate = Path(expand_shards(shards)[0]).parent / "classes.txt"
        names_file = candidate if candidate.is_file() else None
    names = read_class_names(names_file) if names_file else None
    return Captioner(names, TEMPLATES[args.templates])


def _stem_cfg(args: argparse.Namespace) -> dict[str, Any]:
    cfg = {
        "n_tokens": args.n_tokens,
        "dim": args.stem_dim,
        "depth": args.stem_depth,
        "heads": args.stem_heads,
        "n_freqs": args.n_freqs,
    }
    return {k: v for k, v in cfg.items() if v is not None}


def _model_cfg(args: argparse.Namespace, checkpoint: str | None) -> dict[str, Any]:
    """``--model``, else the model config stored in the checkpoint."""
    if args.model is not None:
        return resolve_model_cfg(args.model)
    if checkpoint is not None:
        meta = read_checkpoint(checkpoint)
        if "model_cfg" in meta:
            return resolve_model_cfg(meta["model_cfg"])
    raise SystemExit("error: give --model (the checkpoint does not record its model config)")


def _preprocess(model_cfg: dict[str, Any], is_train: bool) -> Callable:
    return open_clip.image_transform(
        model_cfg["vision_cfg"].get("image_size", 224), is_train=is_train
    )


def _clip_loss() -> ClipLoss:
    rank, world = dist_info()
    return ClipLoss(rank=rank, world_size=world)


def _build_rgb(args: argparse.Namespace) -> Stage:
    cfg = _model_cfg(args, args.pretrained)
    model = create_rgb_model(cfg, args.pretrained)
    tokenizer = get_tokenizer(cfg)
    captioner = _captioner(args, args.train_data)
    preprocess = _preprocess(cfg, is_train=True)
    clip_loss = _clip_loss()

    def transform(sample: dict, rng: Any) -> tuple:
        return preprocess(decode_image(sample)), tokenizer([captioner(sample, rng)])[0]

    def loss(m: nn.Module, batch: Any) -> torch.Tensor:
        images, texts = batch
        return clip_loss(*m(images, texts))

    dataset = ShardStream(args.train_data, transform, seed=args.seed)
    return Stage(
        "rgb",
        model,
        loss,
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


def _build_distill(args: argparse.Namespace) -> Stage:
    cfg = _model_cfg(args, args.teacher)
    teacher = create_rgb_model(cfg, args.teacher).eval().requires_grad_(False)
    model = create_gs_model(
        cfg,
        args.pretrained or args.teacher,
        gs_cfg=_stem_cfg(args),
        unlocked_blocks=args.unlocked_blocks,
    )
    model.logit_scale.requires_grad = False  # unused by the MSE; DDP wants no idle trainable params
    rgb = TarIndex(args.rgb_data)
    preprocess = _preprocess(cfg, is_train=False)  # the splats saw the whole image: no crops
    distill_loss = DistillLoss()

    def transform(sample: dict, rng: Any) -> tuple:
        return sample["gsi"].to_array(), preprocess(decode_image(rgb[sample["__key__"]]))

    def loss(m: nn.Module, batch: Any) -> torch.Tensor:
        splats, mask, images = batch
        with torch.no_grad():
            target = teacher.encode_image(images)
        student = m(splats, mask=mask)[0]
        return distill_loss(student, target)

    dataset = ShardStream(args.train_data, transform, seed=args.seed)
    return Stage(
        "distill",
        model,
        loss,
        dataset,
        collate_gs,
        _gs_groups(model, args, args.backbone_lr_scale),
        {"kind": "gs", "model_cfg": cfg, "gs_cfg": model.gs_cfg.as_dict()},
        helpers=[teacher],
    )


def _build_align(args: argparse.Namespace) -> Stage:
    if args.pretrained is None:
        raise SystemExit("error: align needs --pretrained (a distilled GS or an RGB checkpoint)")
    cfg = _model_cfg(args, args.pretrained)
    if args.from_scratch:
        model = create_gs_model(cfg, None, gs_cfg=_stem_cfg(args), unlocked_blocks=None)
        model.load_text_state_dict(read_checkpoint(args.pretrained)["state_dict"])
        model.lock_text_tower()
        backbone_scale = 1.0  # nothing pretrained to protect
    else:
        model = create_gs_model(
            cfg, args.pretrained, gs_cfg=_stem_cfg(args), unlocked_blocks=args.unlocked_blocks
        )
        backbone_scale = args.backbone_lr_scale
    tokenizer = get_tokenizer(cfg)
    captioner = _captioner(args, args.train_data)
    clip_loss = _clip_loss()

    def transform(sample: dict, rng: Any) -> tuple:
        return sample["gsi"].to_array(), tokenizer([captioner(sample, rng)])[0]

    def loss(m: nn.Module, batch: Any) -> torch.Tensor:
        splats, mask, texts = batch
        return clip_loss(*m(splats, texts, mask=mask))

    dataset = ShardStream(args.train_data, transform, seed=args.seed)
    return Stage(
        "align",
        model,
        loss,
        dataset,
        collate_gs,
        _gs_groups(model, args, backbone_scale),
        {"kind": "gs", "model_cfg": cfg, "gs_cfg": model.gs_cfg.as_dict()},
    )


def build_stage(args: argparse.Namespace) -> Stage:
    """The `Stage` for ``args.command`` (``rgb``, ``distill`` or ``align``)."""
    torch.manual_seed(args.seed)  # model init
    return {"rgb": _build_rgb, "distill": _build_distill, "align": _build_align}[args.command](args)


# --------------------------------------------------------------------------- checkpoints


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_checkpoint(
    out_dir: Path,
    epoch: int,
    stage: Stage,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    args: argparse.Namespace,
    metrics: dict[str, Any],
) -> Path:
    """Write ``epoch_{epoch}.pt`` and ``epoch_latest.pt`` (open_clip's layout + our metadata)."""
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "epoch": epoch,
        "name": args.name or out_dir.name,
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
    path = ckpt_dir / f"epoch_{epoch}.pt"
    _atomic_save(checkpoint, path)
    _atomic_save(checkpoint, ckpt_dir / "epoch_latest.pt")
    return path


def _resume_path(resume: str, out_dir: Path) -> Path:
    path = out_dir / "checkpoints" / "epoch_latest.pt" if resume == "latest" else Path(resume)
    if not path.is_file():
        raise SystemExit(f"error: --resume: no checkpoint at {path}")
    return path


# --------------------------------------------------------------------------- loop


def _setup_distributed(args: argparse.Namespace) -> torch.device:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
        if torch.cuda.is_available():
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local_rank)
            return torch.device("cuda", local_rank)
        return torch.device("cpu")
    return _device(args.device)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _autocast(precision: str, device: torch.device) -> Callable[[], Any]:
    if precision == "fp32" or device.type != "cuda":
        return nullcontext
    dtype = torch.bfloat16 if precision == "amp_bf16" else torch.float16
    return lambda: torch.autocast("cuda", dtype=dtype)


def _to(batch: Sequence[Any], device: torch.device) -> list[Any]:
    return [b.to(device, non_blocking=True) if isinstance(b, torch.Tensor) else b for b in batch]


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
    """Run ``args.epochs`` epochs of ``stage``; returns the last epoch's summary."""
    device = device or torch.device("cpu")
    rank, world = dist_info()
    out_dir = Path(args.output)
    is_main = rank == 0
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    log = JsonlLog(out_dir / "log.jsonl" if is_main else None)
    if args.precision != "fp32" and device.type != "cuda":
        logger.warning("--precision %s needs a GPU; training in fp32 on %s", args.precision, device)

    model = stage.model.to(device)
    for helper in stage.helpers:
        helper.to(device)
    optimizer = torch.optim.AdamW(stage.groups, lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    scaler = (
        torch.amp.GradScaler("cuda") if args.precision == "amp" and device.type == "cuda" else None
    )
    start_epoch = 0
    if args.resume:
        checkpoint = torch.load(
            _resume_path(args.resume, out_dir), map_location="cpu", weights_only=True
        )
        model.load_state_dict(checkpoint["state_dict"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scaler is not None and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        torch.set_rng_state(checkpoint["rng"])
        start_epoch = checkpoint["epoch"]
    wrapped = model
    if world > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    n_samples = args.train_num_samples or count_samples(stage.dataset.shards)
    steps_per_epoch = n_samples // (args.batch_size * world * args.accum_freq)
    if steps_per_epoch < 1:
        raise SystemExit(
            f"error: {n_samples} samples do not fill one step of "
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
    autocast = _autocast(args.precision, device)
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
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"{stage.name} epoch {epoch + 1}/{args.epochs}",
            disable=not is_main,
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
            dynamic_ncols=True,
        )
        start, losses = time.time(), []
        for step in bar:
            global_step = epoch * steps_per_epoch + step
            lr = cosine_lr(global_step, args.lr, args.warmup, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            step_loss = 0.0
            for micro in range(args.accum_freq):
                batch = _to(next(loader), device)
                # DDP: all-reduce gradients only on the last micro-batch
                sync = (
                    nullcontext()
                    if world == 1 or micro == args.accum_freq - 1
                    else wrapped.no_sync()
                )
                with sync:
                    with autocast():
                        loss = stage.loss(wrapped, batch) / args.accum_freq
                    (scaler.scale(loss) if scaler else loss).backward()
                step_loss += loss.item()
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
            if is_main and (step % args.log_every == 0 or step == steps_per_epoch - 1):
                rate = (
                    (step + 1) * args.batch_size * args.accum_freq * world / (time.time() - start)
                )
                bar.set_postfix(loss=f"{step_loss:.4f}", rate=f"{rate:.0f}/s")
                log(
                    event="step",
                    stage=stage.name,
                    epoch=epoch,
                    step=step,
                    global_step=global_step,
                    loss=step_loss,
                    lr=lr,
                    samples_per_s=rate,
                    logit_scale=model.logit_scale.exp().item(),
                )
        bar.close()
        summary.update(
            epoch=epoch + 1, loss=sum(losses) / len(losses), epoch_seconds=time.time() - start
        )
        if args.zeroshot_data and is_main:
            result = _evaluate_model(model, stage.meta, args, device)
            summary.update({f"zeroshot_{k}": v for k, v in result.items()})
        if is_main:
            path = save_checkpoint(
                out_dir, epoch + 1, stage, model, optimizer, scaler, args, summary
            )
            log(event="epoch", stage=stage.name, checkpoint=str(path), **summary)
        if world > 1:
            torch.distributed.barrier()
    return summary


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


def _run_eval(args: argparse.Namespace) -> dict[str, Any]:
    device = _device(args.device)
    checkpoint = read_checkpoint(args.checkpoint)
    cfg = _model_cfg(args, args.checkpoint)
    is_gs = any(k.startswith("visual.stem.") for k in checkpoint["state_dict"])
    model = (
        create_gs_model(cfg, args.checkpoint) if is_gs else create_rgb_model(cfg, args.checkpoint)
    )
    model.to(device)
    start = time.time()
    result = _evaluate_model(model, {"model_cfg": cfg}, args, device)
    result = {
        "checkpoint": str(args.checkpoint),
        "kind": "gs" if is_gs else "rgb",
        "data": args.zeroshot_data,
        **result,
        "eval_seconds": round(time.time() - start, 2),
    }
    if is_gs:
        result["n_tokens"] = model.visual.stem.n_tokens
    print(json.dumps(result))
    if args.output:
        with open(args.output, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(result) + "\n")
    return result


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """The ``gscodec-train`` argument parser."""
    parser = argparse.ArgumentParser(prog="gscodec-train", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--model", help="open_clip model name or JSON config (default: the checkpoint's)"
        )
        p.add_argument(
            "--classnames", help="class names file, one per line (default: classes.txt by the data)"
        )
        p.add_argument(
            "--templates",
            default="cifar10",
            choices=sorted(TEMPLATES),
            help="prompt templates for captions from .cls and for zero-shot classifiers",
        )
        p.add_argument("--batch-size", type=int, default=256)
        p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
        p.add_argument(
            "--zeroshot-data", nargs="+", help="zero-shot eval set: tar shards, class folder or CSV"
        )

    def training(p: argparse.ArgumentParser) -> None:
        common(p)
        p.add_argument(
            "--train-data",
            nargs="+",
            required=True,
            help="tar shards (paths, globs, {a..b}, folders)",
        )
        p.add_argument(
            "--train-num-samples", type=int, help="samples per epoch (default: count the shards)"
        )
        p.add_argument("--output", required=True, help="run folder: checkpoints/, log.jsonl")
        p.add_argument(
            "--name", help="run name stored in checkpoints (default: the output folder name)"
        )
        p.add_argument("--pretrained", help="local checkpoint to start from (never downloaded)")
        p.add_argument("--epochs", type=int, default=1)
        p.add_argument(
            "--lr", type=float, default=1e-3, help="base LR (the GS stem's in distill/align)"
        )
        p.add_argument("--wd", type=float, default=0.2)
        p.add_argument("--warmup", type=int, default=100, help="linear warmup steps")
        p.add_argument("--accum-freq", type=int, default=1, help="micro-batches per optimizer step")
        p.add_argument(
            "--precision",
            default="amp_bf16",
            choices=["fp32", "amp", "amp_bf16"],
            help="autocast on GPU (amp = fp16 + grad scaling); CPU always runs fp32",
        )
        p.add_argument("--workers", type=int, default=1, help="data loader processes per rank")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--log-every", type=int, default=20, help="steps between log lines")
        p.add_argument(
            "--resume", help="checkpoint path, or 'latest' for OUTPUT/checkpoints/epoch_latest.pt"
        )

    def gs(p: argparse.ArgumentParser) -> None:
        p.add_argument("--n-tokens", type=int, help="stem output tokens (default 196)")
        p.add_argument("--stem-dim", type=int, help="resampler width (default 256)")
        p.add_argument("--stem-depth", type=int, help="resampler layers (default 2)")
        p.add_argument("--stem-heads", type=int, help="resampler heads (default 8)")
        p.add_argument("--n-freqs", type=int, help="Fourier octaves of the position (default 8)")
        p.add_argument(
            "--unlocked-blocks", type=int, default=2, help="leading ViT blocks left trainable"
        )
        p.add_argument(
            "--backbone-lr-scale",
            type=float,
            default=0.1,
            help="LR factor of the unfrozen backbone",
        )

    p = sub.add_parser("rgb", help="train an RGB CLIP teacher on image shards")
    training(p)
    p = sub.add_parser("distill", help="stage 1: match the RGB teacher's image embeddings")
    training(p)
    gs(p)
    p.add_argument(
        "--teacher", required=True, help="RGB teacher checkpoint (also the default --pretrained)"
    )
    p.add_argument(
        "--rgb-data", nargs="+", required=True, help="RGB shards holding the GS samples' keys"
    )
    p = sub.add_parser("align", help="stage 2: contrastive alignment with the text tower")
    training(p)
    gs(p)
    p.add_argument(
        "--from-scratch",
        action="store_true",
        help="ablation: fresh, fully trainable image tower; only the text tower comes from --pretrained",
    )
    p = sub.add_parser("eval", help="zero-shot classification / retrieval of a checkpoint")
    common(p)
    p.add_argument("--checkpoint", required=True, help="RGB or GS checkpoint file")
    p.add_argument("--output", help="append the result as a JSON line to this file")
    p.set_defaults(batch_size=512)
    return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Entry point of ``gscodec-train``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "eval":
        if not args.zeroshot_data:
            raise SystemExit("error: eval needs --zeroshot-data")
        return _run_eval(args)
    device = _setup_distributed(args)
    try:
        stage = build_stage(args)
        return train(stage, args, device)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
