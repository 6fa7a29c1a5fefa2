"""The ``gscodec encode-dataset`` subcommand.

``register(subparsers)`` adds it to the ``gscodec`` command's argparse
sub-parsers; the handler is stored as ``func``: ``args.func(args)`` returns
the exit status and raises `ValueError` / `OSError` for bad inputs, which the
caller prints (as ``gscodec.cli.main`` does).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from ..argtypes import non_negative_int, positive_int
from .pipeline import DEFAULT_ITERATIONS, DEFAULT_MAX_PIXELS, SUMMARY_FILE, encode_dataset

__all__ = ["register", "run"]

_EPILOG = """\
INPUT is a webdataset tar shard (path, glob, or brace range such as
'data/shard-{00000..00009}.tar'), an image folder (class/xxx.jpg -> key.cls
labels + classes.txt) or a CSV with an 'image,caption' header. Output: one tar
per input shard (or per --shard-size images of a folder/CSV) holding key.gsi
plus the input's .cls/.txt/.json, NAME.manifest.json per shard, summary.json
and sizes.json (shard -> sample count, as open_clip reads it); with
--dictionary also gsi.dict, the zstd dictionary every .gsi needs.
Rerunning skips finished shards. Under torchrun or SLURM each rank encodes its
own share of the shards (RANK/WORLD_SIZE or SLURM_PROCID/SLURM_NTASKS).
Exit status: 0 done, 1 an error or some shards not encoded, 2 bad usage.
"""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``encode-dataset`` subcommand to ``subparsers`` and return its parser."""
    parser = subparsers.add_parser(
        "encode-dataset",
        help="encode an image dataset into .gsi tar shards",
        description="Fit every image of a dataset into Gaussian splats and write "
                    "webdataset tar shards of .gsi files.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="tar shards, folders or CSVs")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    parser.add_argument("-n", "--splats", required=True, type=positive_int, help="splats per image")
    parser.add_argument("--iterations", type=non_negative_int, default=DEFAULT_ITERATIONS,
                        help="fitting iterations (default %(default)s)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--size", type=positive_int, default=224,
                      help="resize the short side and centre-crop to SIZE x SIZE, like CLIP "
                           "preprocessing (default %(default)s)")
    size.add_argument("--native", action="store_true", help="keep each image's own size")
    parser.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                        help="with --native, refuse images of more pixels, before decoding "
                             "them (default %(default)s)")
    parser.add_argument("--precision", default="fp16",
                        help=".gsi precision: fp16, fp32, q6/q7/q8/q10, q:<spec> (quantized ones "
                             "finished as `gscodec encode` does) or auto (q7's quality, each "
                             "image's grids chosen for the fewest bits) (default %(default)s)")
    parser.add_argument("--dictionary", action="store_true",
                        help="write every .gsi with one zstd dictionary, trained on the first "
                             "shard and stored as DIR/gsi.dict (readers need it)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="fitting device (default %(default)s)")
    parser.add_argument("--batch-size", type=positive_int, default=128,
                        help="images per gscodec.fit call (default %(default)s)")
    parser.add_argument("--workers", type=positive_int, default=1,
                        help="processes on this machine, each taking whole shards "
                             "(default %(default)s)")
    parser.add_argument("--threads", type=non_negative_int, default=0,
                        help="CPU threads per worker (default: the cores shared out)")
    parser.add_argument("--shard-size", type=positive_int, default=1000,
                        help="images per output shard for folder/CSV inputs "
                             "(default %(default)s)")
    parser.add_argument("--rank", type=non_negative_int, default=None,
                        help="this rank (default: from torchrun/SLURM environment, else 0)")
    parser.add_argument("--world-size", type=positive_int, default=None,
                        help="number of ranks (default: from the environment, else 1)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Handle ``encode-dataset``: run `encode_dataset` and return the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    summary = encode_dataset(
        args.inputs,
        args.output,
        splats=args.splats,
        iterations=args.iterations,
        size=None if args.native else args.size,
        precision=args.precision,
        device=args.device,
        batch_size=args.batch_size,
        workers=args.workers,
        shard_size=args.shard_size,
        rank=args.rank,
        world_size=args.world_size,
        threads=args.threads,
        max_pixels=args.max_pixels,
        dictionary=args.dictionary,
        dry_run=args.dry_run,
        progress=not args.quiet,
    )
    if args.dry_run:
        return 0
    run_info = summary["run"]
    psnr = "n/a" if summary["psnr_mean"] is None else f"{summary['psnr_mean']:.2f} dB"
    print(
        f"rank {run_info['rank']}/{run_info['world_size']}: encoded {run_info['images_encoded']} "
        f"images in {run_info['shards_encoded']} shard(s), skipped "
        f"{run_info['shards_skipped']} complete shard(s), {run_info['images_failed']} "
        f"image(s) failed, {run_info['seconds']:.1f} s"
    )
    print(
        f"{args.output}: {summary['shards_complete']}/{summary['shards']} shards complete, "
        f"{summary['count']} images, mean PSNR {psnr}; see {SUMMARY_FILE}"
    )
    for name, error in summary["errors"].items():
        print(f"gscodec encode-dataset: {name}: not encoded: {error}", file=sys.stderr)
    return 1 if summary["errors"] else 0

