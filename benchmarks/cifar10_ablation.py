"""CIFAR-10 student ablation on a subset: variants of the stage-1 student, several seeds.

Small enough for a shared CPU: an RGB teacher trained on the first
``--train-shards`` train shards, then 16-splat students distilled on the same
images, one per variant (``--variants NAME=FLAGS``, flags added to
``gscodec-train distill``; resampler-stem students with the stem of
``cifar10_clip.py`` unless the flags say ``--stem raster``) and seed, all
evaluated zero-shot on the CIFAR-10 test images (all 10,000, or the first ``--test-shards`` GS test shards, which are
the first classes only: the test set is encoded class by class),
next to the render ceiling (the teacher on the same test splats decoded to
pixels). Finished steps are skipped on a rerun.

Variant flags may use ``{embeddings}``: the folder that ``gscodec-train embed``
fills (with ``--embed-flags``) from the teacher before those variants run; such
variants get no ``--rgb-data``. ``{aug}`` stands for the splat augmentation the
ablations measured (``--aug-flip 0.5 --aug-min-crop 0.7 --aug-jitter 0.2
--aug-dropout 0.1``; no stage augments by default), ``{no_aug}`` for the flags that
turn it all off (the default today; rows measured while augmentation was
``distill``'s default used it). A variant with ``--recipe paper-v2`` is two
runs (``NAME-distill`` then ``NAME``); its wall time is their sum.

    python benchmarks/cifar10_encode.py --splats 16 --train-shards 3   # GS shards, build/cifar10_gs16
    nice -n 10 python benchmarks/cifar10_ablation.py                    # -> build/cifar10_ablation

Prints a markdown table (per run and mean over seeds) and writes ``ROOT/results.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from cifar10_clip import run_all, teacher_on_renders, train_cmd, train_seconds, trainable
from common import SHARED_DATA

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# The resampler students of cifar10_clip.py; a variant with --stem raster gets none of these.
STEM = ["--stem", "resampler", "--n-tokens", "16", "--stem-dim", "64", "--stem-depth", "2"]
STEM += ["--stem-heads", "4", "--n-freqs", "6"]
NO_AUGMENT = "--aug-flip 0 --aug-min-crop 1 --aug-jitter 0 --aug-dropout 0"
AUGMENT = "--aug-flip 0.5 --aug-min-crop 0.7 --aug-jitter 0.2 --aug-dropout 0.1"


def flag_value(flags: list[str], name: str, default: int) -> int:
    """The last value of ``name`` in a flag list (argparse's rule), else ``default``."""
    values = [flags[i + 1] for i, flag in enumerate(flags[:-1]) if flag == name]
    return int(values[-1]) if values else default


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=REPO / "build" / "cifar10_ablation")
    p.add_argument("--gs-root", type=Path, default=REPO / "build")
    p.add_argument("--rgb-train", type=Path, default=SHARED_DATA / "cifar10_train_wds")
    p.add_argument("--rgb-test", type=Path, default=SHARED_DATA / "cifar10_test_jpg")
    p.add_argument("--train-shards", type=int, default=3, help="first N of the 9 train shards")
    p.add_argument("--splats", type=int, default=16)
    p.add_argument("--teacher-epochs", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2, help="student epochs")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument(
        "--variants",
        nargs="+",
        default=["baseline={no_aug}", "query_grid=--query-grid {no_aug}"],
        help="NAME=FLAGS (space-separated gscodec-train distill flags)",
    )
    p.add_argument("--jobs", type=int, default=1, help="runs at once (after the teacher)")
    p.add_argument(
        "--test-shards",
        type=int,
        help="first N GS test shards only (default: all); the test set is sharded by class, "
        "so N < 10 keeps only the first N classes (10-way zero-shot on N classes)",
    )
    p.add_argument(
        "--embed-flags",
        default="--views 4 --aug-flip 0.5 --aug-min-crop 0.7 --aug-jitter 0.2",
        help="gscodec-train embed flags for {embeddings}",
    )
    args = p.parse_args()
    root = args.root
    shards = [f"cifar10-train-{i:05d}.tar" for i in range(args.train_shards)]
    gs_dir = args.gs_root / f"cifar10_gs{args.splats}"
    gs_train = [str(gs_dir / "train" / name) for name in shards]
    gs_test = gs_dir / "test"
    missing = [s for s in [*gs_train, str(gs_test / "summary.json")] if not Path(s).is_file()]
    test_shards = sorted(str(t) for t in gs_test.glob("*.tar"))[: args.test_shards]
    if missing:
        raise SystemExit(
            f"GS shards missing ({missing[0]} ...): run python benchmarks/cifar10_encode.py "
            f"--splats {args.splats} --train-shards {args.train_shards} --out-root {args.gs_root}"
        )
    rgb_train = [str(args.rgb_train / name) for name in shards]
    common = ["--batch-size", str(args.batch_size), "--wd", "0.2", "--workers", "1"]
    common += ["--save-most-recent", "--log-every-n-steps", "20"]
    teacher_dir = root / "teacher"
    teacher = teacher_dir / "checkpoints" / f"epoch_{args.teacher_epochs}.pt"
    runs = [("RGB teacher", None, teacher_dir, teacher, args.rgb_test)]
    jobs = []

    def exists(path: Path):
        return lambda: path.is_file()

    if not teacher.is_file():
        cmd = train_cmd("rgb", teacher_dir, "--train-data", "::".join(rgb_train))
        cmd += ["--model", str(HERE / "cifar10_clip_model.json"), "--epochs"]
        cmd += [str(args.teacher_epochs), "--lr", "1e-3", "--warmup", "50", "--seed", "0"]
        cmd += [*common, "--batch-size", "256"]  # the last --batch-size counts
        jobs.append(
            {"name": "teacher", "cmd": cmd, "log": root / "teacher.out", "ready": lambda: True}
        )
    embeddings = root / "embeddings"
    embedded = embeddings / "teacher_embeddings.json"
    if any("{embeddings}" in v for v in args.variants) and not embedded.is_file():
        cmd = [sys.executable, "-m", "gscodec.clip.train", "embed", "--train-data", *rgb_train]
        cmd += ["--teacher", str(teacher), "--output", str(embeddings), "--batch-size", "256"]
        cmd += args.embed_flags.split()
        jobs.append(
            {"name": "embed", "cmd": cmd, "log": root / "embed.out", "ready": exists(teacher)}
        )
    for variant in args.variants:
        name, _, flags = variant.partition("=")
        flags = flags.replace("{embeddings}", str(embeddings)).replace("{no_aug}", NO_AUGMENT) \
            .replace("{aug}", AUGMENT)
        flags = flags.split()
        final_epoch = flag_value(flags, "--align-epochs", 5) if "--recipe" in flags else (
            flag_value(flags, "--epochs", args.epochs))
        for seed in args.seeds:
            out = root / f"{name}_s{seed}"
            ckpt = out / "checkpoints" / f"epoch_{final_epoch}.pt"
            runs.append((name, seed, out, ckpt, test_shards))
            if not ckpt.is_file():
                cmd = train_cmd("distill", out, "--train-data", "::".join(gs_train))
                if "--teacher-embeddings" not in flags:
                    cmd += ["--rgb-data", *rgb_train]
                cmd += ["--teacher", str(teacher)]
                cmd += ["--epochs", str(args.epochs), "--lr", "1e-3", "--warmup", "20"]
                raster = "--stem" in flags and flags[flags.index("--stem") + 1] == "raster"
                cmd += ["--seed", str(seed), *([] if raster else STEM), *flags, *common]
                log = root / f"{out.name}.out"
                ready = exists(embedded if str(embeddings) in flags else teacher)
                jobs.append({"name": out.name, "cmd": cmd, "log": log, "ready": ready})
    for _, _, out, ckpt, test in runs:
        result = root / "eval" / f"{out.name}.json"
        if not result.is_file():
            cmd = [sys.executable, "-m", "gscodec.clip.train", "eval", "--checkpoint", str(ckpt)]
            test = [str(test)] if isinstance(test, Path) else test
            cmd += ["--zeroshot-data", *test, "--dataset", "cifar10", "--output", str(result)]
            log = root / f"eval_{out.name}.out"
            jobs.append({"name": f"eval {out.name}", "cmd": cmd, "log": log, "ready": exists(ckpt)})
    run_all(jobs, args.jobs)

    renders_file = root / "teacher_on_renders.json"
    if not renders_file.is_file():
        renders_file.write_text(json.dumps(teacher_on_renders(teacher, test_shards), indent=2))
    ceiling = json.loads(renders_file.read_text())["acc1"]
    score = {
        out: json.loads((root / "eval" / f"{out.name}.json").read_text())["metrics"]
        for _, _, out, _, _ in runs
    }
    teacher_acc = score[teacher_dir]["acc1"]
    rows = []
    print(f"Teacher (RGB test JPEGs): top-1 {100 * teacher_acc:.1f}%; render ceiling "
          f"(teacher on the {args.splats}-splat test set decoded, {len(test_shards)} "
          f"shards): {100 * ceiling:.1f}%\n")
    print("| variant | seed | top-1 % | mean per-class recall % | of teacher | of ceiling "
          "| trainable | train wall min |")
    print("|---|---|---|---|---|---|---|---|")
    for name, seed, out, _, _ in runs[1:]:
        m = score[out]
        stages = [out.with_name(out.name + "-distill"), out]  # --recipe runs stage 1 there
        row = {"variant": name, "seed": seed, **m, "trainable_fraction": trainable(out),
               "train_seconds": sum(train_seconds(o) for o in stages)}
        rows.append(row)
        print(f"| {name} | {seed} | {100 * m['acc1']:.1f} | {100 * m['mean_per_class_recall']:.1f} "
              f"| {100 * m['acc1'] / teacher_acc:.0f}% | {100 * m['acc1'] / ceiling:.0f}% "
              f"| {100 * row['trainable_fraction']:.1f}% | {row['train_seconds'] / 60:.1f} |")
    for variant in args.variants:
        name = variant.partition("=")[0]
        accs = [r["acc1"] for r in rows if r["variant"] == name]
        spread = f" ± {100 * statistics.stdev(accs):.1f}" if len(accs) > 1 else ""
        print(f"| **{name}, mean** | {len(accs)} seeds | {100 * statistics.mean(accs):.1f}{spread} "
              f"| | {100 * statistics.mean(accs) / teacher_acc:.0f}% "
              f"| {100 * statistics.mean(accs) / ceiling:.0f}% | | |")
    (root / "results.json").write_text(json.dumps(
        {"teacher_acc1": teacher_acc, "render_ceiling_acc1": ceiling, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
