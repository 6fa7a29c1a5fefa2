"""CIFAR-10 zero-shot experiment: RGB teacher vs GS students at 16/32/64 splats.

Steps, run as soon as their inputs exist (students wait for the teacher and
for GS shards still being encoded), several at once; each is skipped when its
checkpoint or result exists, and an interrupted run resumes:

1. ``gscodec-train rgb``: a tiny open_clip ViT teacher (``cifar10_clip_model.json``)
   on the RGB train shards, captions from the CIFAR-10 templates.
2. ``gscodec-train distill``: GS students (``--students SPLATS:EPOCHS ...``),
   initialized from and distilled towards that teacher (stage 1); optional
   ``align`` (stage 2, ``--align-epochs``).
3. ``gscodec-train align --from-scratch``: the paper's ablation, no
   distillation, fresh image tower, teacher's frozen text tower.
4. ``gscodec-train eval``: zero-shot top-1/top-5 on the CIFAR-10 test set
   (RGB class folder for the teacher, GS test shards for the students),
   one CLIP_benchmark-style JSON per run in ``ROOT/eval/``.
5. The render ceiling per splat count: the teacher on the GS test sets
   decoded back to pixels, i.e. how much the splats themselves keep, apart
   from how well a student reads them.

Prints a markdown table (bytes/image, tokens/image, trainable fraction,
accuracy, wall time) and writes ``ROOT/results.json``. Run folders are
``ROOT/NAME`` (``gscodec-train --logs ROOT --name NAME``). GS shards come from
``benchmarks/cifar10_encode.py`` at ``GS_ROOT/cifar10_gs{N}/{train,test}``.
Defaults are relative to the repository: data in ``../shared/data`` (see
``benchmarks/common.py``), everything written under ``build/``:

    python benchmarks/cifar10_encode.py          # -> build/cifar10_gs{16,32,64}/{train,test}
    nice -n 10 python benchmarks/cifar10_clip.py  # -> build/cifar10_clip/

Threads: one per process (``OMP_NUM_THREADS=1``); on a shared CPU several
single-threaded runs beat one multi-threaded run. Run it under ``nice``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from common import SHARED_DATA

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RAW_BYTES = 32 * 32 * 3
FP16_SPLAT_BYTES = 16  # the paper's accounting: 8 fp16 numbers per splat


def train_cmd(command: str, out: Path, *args: str) -> list[str]:
    """A ``gscodec-train`` run in the folder ``out``; reruns continue it (``--resume latest``)."""
    logs = ["--logs", str(out.parent), "--name", out.name, "--resume", "latest"]
    return [sys.executable, "-m", "gscodec.clip.train", command, *logs, *args]


def run_all(jobs: list[dict], parallel: int) -> None:
    """Run jobs ``{name, cmd, log, ready}``, ``parallel`` at a time, each once ``ready()``.

    ``ready`` lets students wait for their teacher and for GS shards still
    being encoded, while whatever can run already runs. Fails on the first error.
    """
    env = dict(os.environ, OMP_NUM_THREADS="1")
    pending, running = list(jobs), []
    while pending or running:
        for job in [j for j in pending if j["ready"]()][: parallel - len(running)]:
            pending.remove(job)
            job["log"].parent.mkdir(parents=True, exist_ok=True)
            print(
                f"[{time.strftime('%H:%M:%S')}] start {job['name']}: {' '.join(job['cmd'])}",
                flush=True,
            )
            job["proc"] = subprocess.Popen(
                job["cmd"], stdout=open(job["log"], "w"), stderr=subprocess.STDOUT, env=env
            )
            job["start"] = time.time()
            running.append(job)
        time.sleep(5)
        for job in [j for j in running if j["proc"].poll() is not None]:
            running.remove(job)
            rc = job["proc"].returncode
            print(
                f"[{time.strftime('%H:%M:%S')}] done {job['name']} rc={rc} ({time.time() - job['start']:.0f} s)",
                flush=True,
            )
            if rc:
                raise SystemExit(f"{job['name']} failed, see {job['log']}")


def log_records(out: Path) -> list[dict]:
    path = out / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def train_seconds(out: Path) -> float:
    return sum(r["epoch_seconds"] for r in log_records(out) if r["event"] == "epoch")


def trainable(out: Path) -> float:
    return [r for r in log_records(out) if r["event"] == "start"][-1]["trainable_fraction"]


def teacher_on_renders(teacher: Path, test: Path, batch_size: int = 500) -> dict[str, float]:
    """Zero-shot accuracy of the RGB teacher on the test splats decoded to 32x32 pixels.

    What the splats still tell an RGB model: separates the codec's loss from the student's.
    """
    import open_clip
    import torch
    from PIL import Image

    import gscodec
    from gscodec.clip import (
        build_classifier,
        classification_metrics,
        create_rgb_model,
        get_tokenizer,
    )
    from gscodec.clip.data import iter_eval_samples
    from gscodec.clip.zeroshot import CIFAR10_TEMPLATES

    cfg = torch.load(teacher, weights_only=True, mmap=True)["model_cfg"]
    model = create_rgb_model(cfg, teacher).eval()
    preprocess = open_clip.image_transform(cfg["vision_cfg"]["image_size"], is_train=False)
    samples, names = iter_eval_samples(test)
    weights = build_classifier(model, get_tokenizer(cfg), names, CIFAR10_TEMPLATES)
    logits, labels = [], []
    with torch.no_grad():
        while batch := list(itertools.islice(samples, batch_size)):
            pixels = gscodec.render_batch([s["gsi"] for s in batch])
            images = torch.stack([preprocess(Image.fromarray(p)) for p in pixels])
            logits.append(model.encode_image(images, normalize=True) @ weights)
            labels += [int(s["cls"]) for s in batch]
    return classification_metrics(torch.cat(logits), torch.tensor(labels))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--root", type=Path, default=REPO / "build" / "cifar10_clip", help="runs and results"
    )
    p.add_argument(
        "--gs-root",
        type=Path,
        default=REPO / "build",
        help="holds cifar10_gs{N}/{train,test} (benchmarks/cifar10_encode.py --out-root)",
    )
    p.add_argument("--rgb-train", type=Path, default=SHARED_DATA / "cifar10_train_wds")
    p.add_argument("--rgb-test", type=Path, default=SHARED_DATA / "cifar10_test_jpg")
    p.add_argument(
        "--students",
        nargs="+",
        default=["16:1", "32:1", "64:1"],
        help="distilled students as SPLATS:EPOCHS",
    )
    p.add_argument("--ablation-splats", type=int, default=16)
    p.add_argument("--teacher-epochs", type=int, default=4)
    p.add_argument(
        "--align-epochs", type=int, default=0, help="stage 2 after distillation (0 = skip)"
    )
    p.add_argument(
        "--ablation-epochs", type=int, nargs="*", default=[1], help="none: skip the ablation"
    )
    p.add_argument(
        "--n-tokens", type=int, default=16, help="resampler tokens (the teacher has 16 patches)"
    )
    p.add_argument(
        "--stem",
        choices=["resampler", "raster"],
        default="resampler",
        help="the students' stem (gscodec-train --stem); raster runs get a _raster suffix",
    )
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--jobs", type=int, default=4, help="runs at once")
    args = p.parse_args()
    root = args.root
    model = str(HERE / "cifar10_clip_model.json")
    common = ["--batch-size", str(args.batch_size), "--wd", "0.2", "--workers", "1", "--seed", "0"]
    common += ["--save-most-recent"]  # an interrupted run resumes from its last epoch
    stem = ["--stem", args.stem]
    if args.stem == "resampler":
        stem += ["--n-tokens", str(args.n_tokens), "--stem-dim", "64", "--stem-depth", "2"]
        stem += ["--stem-heads", "4", "--n-freqs", "6"]
    kind = "" if args.stem == "resampler" else f"_{args.stem}"
    teacher_dir = root / "teacher"
    teacher = teacher_dir / "checkpoints" / f"epoch_{args.teacher_epochs}.pt"
    eval_dir = root / "eval"

    def gs(n: int, split: str) -> Path:
        return args.gs_root / f"cifar10_gs{n}" / split

    def encoded(n: int, split: str) -> Callable[[], bool]:
        return lambda: (gs(n, split) / "summary.json").is_file()  # written when a split is complete

    def exists(path: Path) -> Callable[[], bool]:
        return lambda: path.is_file()

    def both(a: Callable[[], bool], b: Callable[[], bool]) -> Callable[[], bool]:
        return lambda: a() and b()

    jobs: list[dict] = []
    runs = []  # (table name, run folder, epochs, test set, splats or None)

    def add_train(
        name: str, command: str, out: Path, epochs: int, ready: Callable[[], bool], *extra: str
    ) -> None:
        if not (out / "checkpoints" / f"epoch_{epochs}.pt").is_file():
            jobs.append(
                {
                    "name": name,
                    "cmd": train_cmd(command, out, "--epochs", str(epochs), *extra, *common),
                    "log": root / f"{out.name}.out",
                    "ready": ready,
                }
            )

    # 1. teacher: needs only the RGB shards
    add_train(
        "teacher",
        "rgb",
        teacher_dir,
        args.teacher_epochs,
        lambda: True,
        "--train-data",
        str(args.rgb_train),
        "--model",
        model,
        "--lr",
        "1e-3",
        "--warmup",
        "100",
    )
    runs.append(("RGB teacher", teacher_dir, args.teacher_epochs, args.rgb_test, None))
    # 2. students: wait for the teacher and their shards
    students = [tuple(map(int, spec.split(":"))) for spec in args.students]
    for n, epochs in students:
        out = root / f"distill_gs{n}_e{epochs}{kind}"
        add_train(
            f"distill gs{n} x{epochs}",
            "distill",
            out,
            epochs,
            both(exists(teacher), encoded(n, "train")),
            "--train-data",
            str(gs(n, "train")),
            "--rgb-data",
            str(args.rgb_train),
            "--teacher",
            str(teacher),
            "--lr",
            "1e-3",
            "--warmup",
            "50",
            *stem,
            # measured before splat augmentation became distill's default: reproduce without it
            *"--aug-flip 0 --aug-min-crop 1 --aug-jitter 0 --aug-dropout 0".split(),
        )
        runs.append(
            (f"GS student, {n} splats (distill, {epochs} ep)", out, epochs, gs(n, "test"), n)
        )
        if args.align_epochs:
            distilled = out / "checkpoints" / f"epoch_{epochs}.pt"
            aligned = root / f"align_gs{n}_e{epochs}{kind}"
            add_train(
                f"align gs{n} x{epochs}",
                "align",
                aligned,
                args.align_epochs,
                exists(distilled),
                "--train-data",
                str(gs(n, "train")),
                "--pretrained",
                str(distilled),
                "--lr",
                "1e-3",
                "--warmup",
                "50",
                *stem,
            )
            runs.append(
                (
                    f"GS student, {n} splats (distill {epochs} ep + align {args.align_epochs} ep)",
                    aligned,
                    args.align_epochs,
                    gs(n, "test"),
                    n,
                )
            )
    # 3. the paper's ablation: no distillation, fresh image tower
    n = args.ablation_splats
    for epochs in args.ablation_epochs:
        ablation = root / f"scratch_gs{n}_e{epochs}{kind}"
        add_train(
            f"from-scratch ablation x{epochs}",
            "align",
            ablation,
            epochs,
            both(exists(teacher), encoded(n, "train")),
            "--from-scratch",
            "--train-data",
            str(gs(n, "train")),
            "--pretrained",
            str(teacher),
            "--lr",
            "1e-3",
            "--warmup",
            "50",
            *stem,
        )
        runs.append(
            (
                f"GS from scratch, {n} splats (no distill, {epochs} ep)",
                ablation,
                epochs,
                gs(n, "test"),
                n,
            )
        )
    # 4. zero-shot evaluation of each finished run
    for name, out, epochs, test, n in runs:
        ckpt = out / "checkpoints" / f"epoch_{epochs}.pt"
        if not (eval_dir / f"{out.name}.json").is_file():
            ready = exists(ckpt) if n is None else both(exists(ckpt), encoded(n, "test"))
            jobs.append(
                {
                    "name": f"eval {out.name}",
                    "ready": ready,
                    "log": root / f"eval_{out.name}.out",
                    "cmd": [
                        sys.executable,
                        "-m",
                        "gscodec.clip.train",
                        "eval",
                        "--checkpoint",
                        str(ckpt),
                        "--zeroshot-data",
                        str(test),
                        "--dataset",
                        "cifar10",
                        "--output",
                        str(eval_dir / f"{out.name}.json"),
                    ],
                }
            )
    run_all(jobs, args.jobs)
    scores = {out: json.loads((eval_dir / f"{out.name}.json").read_text()) for _, out, *_ in runs}

    # 5. table
    jpeg = statistics.mean(f.stat().st_size for f in args.rgb_test.glob("*/*.jpg"))
    vision = json.loads(Path(model).read_text())["vision_cfg"]
    teacher_tokens = (vision["image_size"] // vision["patch_size"]) ** 2
    teacher_top1 = scores[teacher_dir]["metrics"]["acc1"]
    rows, table = [], []
    for name, out, epochs, test, n in runs:
        score = scores[out]
        if n is None:
            size, fp16, tokens = jpeg, None, teacher_tokens
        else:
            summary = json.loads((test / "summary.json").read_text())
            size, fp16, tokens = (
                summary["gsi_bytes"] / summary["count"],
                FP16_SPLAT_BYTES * n,
                score["n_tokens"],
            )
        row = {
            "model": name,
            "bytes": size,
            "fp16_bytes": fp16,
            "tokens": tokens,
            "trainable_fraction": trainable(out),
            "top1": score["metrics"]["acc1"],
            "top5": score["metrics"]["acc5"],
            "mean_per_class_recall": score["metrics"]["mean_per_class_recall"],
            "of_teacher": score["metrics"]["acc1"] / teacher_top1,
            "train_seconds": train_seconds(out),
            "eval_seconds": score["eval_seconds"],
        }
        rows.append(row)
        fp16_txt = f"{fp16} ({RAW_BYTES / fp16:.1f}x)" if fp16 else "-"
        table.append(
            f"| {name} | {size:.0f} ({RAW_BYTES / size:.1f}x) | {fp16_txt} | {tokens} | "
            f"{100 * row['trainable_fraction']:.1f}% | {100 * row['top1']:.1f} | {100 * row['top5']:.1f} | "
            f"{100 * row['of_teacher']:.0f}% | {row['train_seconds'] / 60:.1f} |"
        )
    renders_file = root / "teacher_on_renders.json"
    renders = json.loads(renders_file.read_text()) if renders_file.is_file() else {}
    splat_counts = sorted({n for n, _ in students})
    for n in splat_counts:
        if str(n) not in renders:
            renders[str(n)] = teacher_on_renders(teacher, gs(n, "test"))
            renders_file.write_text(json.dumps(renders, indent=2))
    for n in splat_counts:
        table.append(
            f"| RGB teacher on the {n}-splat test set decoded to pixels | - | - | {teacher_tokens} | - | "
            f"{100 * renders[str(n)]['acc1']:.1f} | {100 * renders[str(n)]['acc5']:.1f} | "
            f"{100 * renders[str(n)]['acc1'] / teacher_top1:.0f}% | - |"
        )
    (root / "results.json").write_text(
        json.dumps({"raw_bytes": RAW_BYTES, "rows": rows, "teacher_on_renders": renders}, indent=2)
    )
    print(
        "| model | bytes/image as stored (vs 3072 raw) | fp16 splat bytes (paper) | tokens | trainable "
        "| top-1 % | top-5 % | of teacher top-1 | train wall min |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(table))


if __name__ == "__main__":
    main()
