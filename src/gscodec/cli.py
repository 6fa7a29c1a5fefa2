"""The ``gscodec`` command line: ``encode``, ``decode``, ``info`` and
``encode-dataset`` (registered by `gscodec.datasets.cli`).

Every subcommand is an argparse subparser whose ``func`` default takes the
parsed arguments and returns the exit status; a ``func`` may raise `GSIError`,
`OSError` or `ValueError`, which `main` prints as one line (no traceback) with
exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from PIL import Image
from tqdm import tqdm

from . import __version__
from . import format as fmt
from . import image as gsimage
from ._io import atomic_path, check_replaceable, load_image
from .argtypes import image_side, positive_float, positive_int
from .datasets.cli import register as register_encode_dataset
from .errors import GSIError
from .limits import MAX_SIDE
from .metrics import psnr
from .engine import DEFAULT_ITERATIONS
from .quantize import PRESETS

__all__ = ["build_parser", "main"]


def _progress(total: int, quiet: bool) -> tqdm:
    """A bar on a terminal (none in logs or with ``quiet``); results go through ``.write``."""
    return tqdm(total=total, unit="file", disable=True if quiet else None, leave=False,
                file=sys.stderr)


def _report(bar: tqdm, quiet: bool, line: str) -> None:
    """Print a per-file result line (also to logs) above the bar."""
    if not quiet:
        bar.write(line, file=sys.stderr)
    bar.update(1)


def _check_output(path: Path, force: bool) -> None:
    if (path.exists() or path.is_symlink()) and not force:
        raise FileExistsError(f"output {str(path)!r} exists (use --force to overwrite)")
    check_replaceable(path)  # before any work: --force replaces regular files only
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output directory {str(path.parent)!r} does not exist")


def _encode_outputs(args: argparse.Namespace) -> list[Path]:
    inputs = [Path(p) for p in args.inputs]
    if args.output is not None:
        if len(inputs) != 1:
            raise ValueError("-o/--output takes one input; use --out-dir for several")
        outputs = [Path(args.output)]
    elif args.out_dir is not None:
        out_dir = Path(args.out_dir)
        if not out_dir.is_dir():
            raise FileNotFoundError(f"output directory {str(out_dir)!r} does not exist")
        outputs = [out_dir / (p.stem + fmt.EXTENSION) for p in inputs]
    else:
        outputs = [p.with_suffix(fmt.EXTENSION) for p in inputs]
    seen: dict[Path, Path] = {}
    for src, dst in zip(inputs, outputs):
        if dst in seen:
            raise ValueError(f"inputs {str(seen[dst])!r} and {str(src)!r} would both be "
                             f"written to {str(dst)!r}")
        seen[dst] = src
    return outputs


def _cmd_encode(args: argparse.Namespace) -> int:
    outputs = _encode_outputs(args)
    for dst in outputs:
        _check_output(dst, args.force)
    bar = _progress(len(outputs), args.quiet)
    failed = 0
    for i, (src, dst) in enumerate(zip(args.inputs, outputs)):
        bar.set_description_str(f"{src}: encoding")
        t0 = time.perf_counter()
        try:
            pixels = load_image(src)
            gsi = gsimage.encode(pixels, n_splats=args.splats, bpp=args.bpp,
                                 iterations=args.iterations, precision=args.precision,
                                 device=args.device)
            gsi.save(dst)
            quality = psnr(pixels, gsi.render())
        except (GSIError, OSError, ValueError, RuntimeError) as e:
            failed += 1
            _report(bar, args.quiet, f"[{i + 1}/{len(outputs)}] {src}: failed")
            bar.write(f"gscodec: error: {src}: {e}", file=sys.stderr)
            continue
        info = gsi.info
        _report(bar, args.quiet,
                f"[{i + 1}/{len(outputs)}] {src} -> {dst}: {info['n_splats']} splats, "
                f"{info['bpp']:.3f} bpp, {quality:.2f} dB, {time.perf_counter() - t0:.1f} s")
    bar.close()
    return 1 if failed else 0


def _decode_size(args: argparse.Namespace, width: int, height: int) -> tuple[int, int]:
    if args.width is not None:
        return args.width, max(1, round(args.width * height / width))
    if args.height is not None:
        return max(1, round(args.height * width / height)), args.height
    if args.scale is not None:
        w, h = width * args.scale, height * args.scale
        if max(w, h) > MAX_SIDE:  # also inf: round() would raise OverflowError
            raise ValueError(f"--scale {args.scale:g} gives a {w:.0f}x{h:.0f} image; the "
                             f"largest side is {MAX_SIDE}")
        return max(1, round(w)), max(1, round(h))
    return width, height


def _cmd_decode(args: argparse.Namespace) -> int:
    src = Path(args.input)
    dst = Path(args.output) if args.output else src.with_suffix(".png")
    ext = dst.suffix.lower()
    out_format = Image.registered_extensions().get(ext)
    if out_format is None or out_format not in Image.SAVE:
        raise ValueError(f"cannot write {str(dst)!r}: no image format for extension "
                         f"{ext or '(none)'!r}")
    _check_output(dst, args.force)
    bar = _progress(1, args.quiet)
    bar.set_description_str(f"{src}: decoding")
    t0 = time.perf_counter()
    with gsimage.open(src) as gsi:
        size = _decode_size(args, gsi.width, gsi.height)
        picture = gsi.to_pil(size)
    with atomic_path(dst) as tmp:
        picture.save(tmp, format=out_format)
    _report(bar, args.quiet, f"[1/1] {src} -> {dst}: {size[0]}x{size[1]}, "
                             f"{(time.perf_counter() - t0) * 1000:.0f} ms")
    bar.close()
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    with gsimage.open(args.input) as gsi:
        info = gsi.info
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{args.input}: GSI {info['version']}, {info['width']}x{info['height']}, "
          f"{info['n_splats']} splats, {info['precision']}")
    bps = info["bits_per_splat"]
    print(f"  {info['file_bytes']} bytes, {bps:.1f} bits/splat, {info['bpp']:.4f} bpp"
          if bps is not None else f"  {info['file_bytes']} bytes, {info['bpp']:.4f} bpp")
    for name, field in info.get("fields", {}).items():
        print(f"  {name:>3}: {field['bits']:2d} bits {field['transform']:<6} "
              f"[{field['lo']:.6g}, {field['hi']:.6g}]")
    for key, value in info["metadata"].items():
        print(f"  {key}: {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``gscodec`` argument parser, with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="gscodec", description="Encode images as 2D Gaussian splats (.gsi) and back.")
    parser.add_argument("--version", action="version", version=f"gscodec {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")

    enc = subparsers.add_parser("encode", help="fit images into .gsi files",
                                description="Fit images into .gsi files.")
    enc.add_argument("inputs", nargs="+", metavar="IN", help="input images")
    where = enc.add_mutually_exclusive_group()
    where.add_argument("-o", "--output", metavar="OUT", help="output file (one input only)")
    where.add_argument("--out-dir", metavar="DIR", help="directory for the outputs (must exist)")
    rate = enc.add_mutually_exclusive_group()
    rate.add_argument("--splats", type=positive_int, metavar="N",
                      help="number of splats (default: one per 64 pixels)")
    rate.add_argument("--bpp", type=positive_float, metavar="B",
                      help="target file size in bits per pixel (within 10%%)")
    enc.add_argument("--iterations", type=positive_int, default=DEFAULT_ITERATIONS, metavar="K",
                     help=f"optimizer steps per fit (default {DEFAULT_ITERATIONS})")
    enc.add_argument("--precision", default=None, metavar="P",
                     help=f"fp32, fp16, {', '.join(PRESETS)} or q:<spec> (default: "
                          f"{gsimage.DEFAULT_PRECISION}'s quality in the fewest bits, per-field "
                          f"grids chosen for the image)")
    enc.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    enc.add_argument("--force", action="store_true", help="overwrite existing outputs")
    enc.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    enc.set_defaults(func=_cmd_encode)

    dec = subparsers.add_parser("decode", help="render a .gsi file to an image",
                                description="Render a .gsi file to an image (format from "
                                            "the output extension).")
    dec.add_argument("input", metavar="IN.gsi")
    dec.add_argument("-o", "--output", metavar="OUT", help="output image (default IN.png)")
    size = dec.add_mutually_exclusive_group()
    size.add_argument("--width", type=image_side, metavar="W", help="output width")
    size.add_argument("--height", type=image_side, metavar="H", help="output height")
    size.add_argument("--scale", type=positive_float, metavar="S", help="scale factor")
    dec.add_argument("--force", action="store_true", help="overwrite an existing output")
    dec.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    dec.set_defaults(func=_cmd_decode)

    inf = subparsers.add_parser("info", help="describe a .gsi file",
                                description="Describe a .gsi file (header, bits per splat).")
    inf.add_argument("input", metavar="IN.gsi")
    inf.add_argument("--json", action="store_true", help="print JSON")
    inf.set_defaults(func=_cmd_info)

    register_encode_dataset(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 error, 2 usage, 130 ^C)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except (GSIError, OSError, ValueError, RuntimeError) as e:
        print(f"gscodec: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gscodec: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
