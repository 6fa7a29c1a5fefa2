"""Dataset throughput of this tree against another gscodec tree, as ratios measured in one run.

Three figures on a CIFAR-10 subset (one webdataset shard of ``--images``
32x32 images): ``encode_dataset`` (images/s, native size), reading the
encoded ``.gsi`` shard back with ``iter_samples`` (samples/s, splats
decoded), and the training loader (``gscodec.clip.ShardStream`` through a
torch ``DataLoader`` with ``collate_gs``, samples/s). Each tree runs in
``--repeats`` processes, the trees alternating, and the median is kept; of the
reading stages each process keeps its fastest of ``--passes`` passes (the one
least disturbed by other jobs). ``--old`` is the ``src`` folder of the other
tree, its compiled ``_core`` copied in (e.g. from ``git worktree add /tmp/old
main``).

    python benchmarks/datasets_throughput.py --old /tmp/old/src
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from common import header

REPO = Path(__file__).resolve().parents[1]
CIFAR = REPO.parent / "shared" / "data" / "cifar10_train_wds" / "cifar10-train-00000.tar"

# Runs in a child process; {old} is a src folder or "" for this tree's install.
CHILD = r"""
import json, sys, time
old = {old!r}
if old:  # bypass this tree's editable install
    sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("_editable")]
    sys.path.insert(0, old)
import torch
from torch.utils.data import DataLoader
import gscodec
from gscodec.datasets import encode_dataset, iter_samples
from gscodec.clip.data import ShardStream, collate_gs
assert gscodec.__file__.startswith(old or {here!r}), gscodec.__file__
t0 = time.perf_counter()
encode_dataset({inp!r}, {out!r}, splats={splats}, iterations={iterations}, size=None,
               progress=False)
encode = time.perf_counter() - t0
shard = {out!r} + "/cifar-00000.tar"
stream = ShardStream(shard, lambda s, rng: (s["gsi"], int(s["cls"])), shuffle=True, repeat=False)
read = load = float("inf")
for _ in range({passes}):  # the fastest pass: the least disturbed by other jobs
    t0 = time.perf_counter()
    n_read = sum(1 for _ in iter_samples(shard))
    read = min(read, time.perf_counter() - t0)
    t0 = time.perf_counter()
    n_loaded = sum(len(b[0]) for b in DataLoader(stream, batch_size=64, collate_fn=collate_gs))
    load = min(load, time.perf_counter() - t0)
print(json.dumps(dict(images={images}, encode=encode, read=read, load=load,
                      n_read=n_read, n_loaded=n_loaded)))
"""


def subset(source: Path, target: Path, images: int) -> None:
    """The first ``images`` samples of a webdataset shard (members in order)."""
    keys: list[str] = []
    with tarfile.open(source) as src, tarfile.open(target, "w") as dst:
        for member in src:
            key = member.name.split(".", 1)[0]
            if key not in keys:
                if len(keys) == images:
                    break
                keys.append(key)
            dst.addfile(member, src.extractfile(member))


def measure(old: str, inp: Path, out: Path, args: argparse.Namespace) -> dict:
    code = CHILD.format(old=old, here=str(REPO / "src"), inp=str(inp), out=str(out),
                        splats=args.splats, iterations=args.iterations, images=args.images,
                        passes=args.passes)
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True, cwd=REPO)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", required=True, help="src folder of the tree to compare with")
    parser.add_argument("--shard", type=Path, default=CIFAR, help="a CIFAR-10 webdataset shard")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--splats", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="processes per tree")
    parser.add_argument("--passes", type=int, default=3, help="reading passes per process")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "cifar-00000.tar"
        subset(args.shard, inp, args.images)
        for r in range(args.repeats):
            for name, src in (("old", args.old), ("new", "")):
                runs[name].append(measure(src, inp, Path(tmp) / f"{name}{r}", args))
    rates = {name: {stage: statistics.median(run["images"] / run[stage] for run in rs)
                    for stage in ("encode", "read", "load")} for name, rs in runs.items()}
    assert all(run["n_read"] == run["n_loaded"] == args.images for rs in runs.values() for run in rs)
    print(header("python benchmarks/datasets_throughput.py " + " ".join(sys.argv[1:])))
    print(f"CIFAR-10 subset: {args.images} images (one shard), {args.splats} splats, "
          f"{args.iterations} iterations, median of {args.repeats} processes per tree "
          f"(reading: best of {args.passes} passes each), trees alternating\n")
    print("| stage | old (img/s) | new (img/s) | new / old |")
    print("|---|---|---|---|")
    for stage, label in (("encode", "encode_dataset"), ("read", "iter_samples (.gsi decoded)"),
                         ("load", "ShardStream + DataLoader")):
        old, new = rates["old"][stage], rates["new"][stage]
        print(f"| {label} | {old:.0f} | {new:.0f} | {new / old:.2f} |")


if __name__ == "__main__":
    main()
