"""Rate control: this checkout's against an earlier commit's, in one run.

For each image and target bpp, ``gscodec.encode(..., bpp=)`` with no
precision given (count and precision chosen together) by this checkout's
`gscodec.ratecontrol` ("new") and by the rate control of ``--main`` (a git
ref; ``git show REF:src/gscodec/ratecontrol.py``, run on this build with
this build's fit and finish: "main").
Reports bpp, PSNR of the decoded file against the image, splats, fits from
scratch and seconds. ``--kodak224`` uses the 224 x 224 crops instead of the
full 768 x 512 images. ``--variants F,K,A ...`` adds this checkout's rate
control with other constants: the finish margin `_FINISH_MARGIN_DB` F, the
fit margin `_FIT_MARGIN_DB` K and the extra aim `_REALLOCATED_AIM` A.

    nice -n 10 .venv/bin/python benchmarks/ratecontrol_joint.py --images 4
    .venv/bin/python benchmarks/ratecontrol_joint.py --main fa6ae57 --images 4 \
        --targets 0.125 0.25 0.5 1.0
    .venv/bin/python benchmarks/ratecontrol_joint.py --modes new --images 4 --targets 0.5 \
        --variants 0,-99,1 2,2,1.1 5,2,1.2
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import header, kodak224, kodak_paths  # noqa: E402

import gscodec  # noqa: E402
from gscodec import engine, ratecontrol  # noqa: E402
from gscodec.metrics import psnr  # noqa: E402
from gscodec.splats import Splats  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
REPO = Path(__file__).resolve().parent.parent


def main_ratecontrol(ref: str):
    """main's rate control module, bound to this build's `gscodec` package
    (its ``engine.quantized_finish`` is ``ratecontrol.quantized_finish`` now)."""
    source = subprocess.run(["git", "show", f"{ref}:src/gscodec/ratecontrol.py"], cwd=REPO,
                            check=True, capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("gscodec._ratecontrol_main", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "gscodec"
    exec(compile(source, f"{ref}:src/gscodec/ratecontrol.py", "exec"), module.__dict__)

    class Engine:  # main's engine as rate control sees it
        def __getattr__(self, name):
            if name == "quantized_finish":
                return ratecontrol.quantized_finish
            return getattr(engine, name)

    module.engine = Engine()
    if hasattr(module, "quantized_finish"):  # the same finish for both (this build's)
        module.quantized_finish = ratecontrol.quantized_finish
    return module


@contextlib.contextmanager
def _constants(values: list[float] | None):
    """This checkout's rate control with other margins and aim (None: as is)."""
    names = ("_FINISH_MARGIN_DB", "_FIT_MARGIN_DB", "_REALLOCATED_AIM")
    saved = [getattr(ratecontrol, n) for n in names]
    try:
        if values is not None:
            for n, v in zip(names, values):
                setattr(ratecontrol, n, v)
        yield
    finally:
        for n, v in zip(names, saved):
            setattr(ratecontrol, n, v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--targets", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    ap.add_argument("--iterations", type=int, default=engine.DEFAULT_ITERATIONS)
    ap.add_argument("--kodak224", action="store_true")
    ap.add_argument("--main", default="main", help="git ref of the old rate control")
    ap.add_argument("--modes", nargs="+", default=["main", "new"], choices=["main", "new"])
    ap.add_argument("--variants", nargs="*", default=[],
                    help="this checkout with other constants: FINISH_MARGIN,FIT_MARGIN,AIM")
    args = ap.parse_args()
    args.modes = args.modes + [f"new {v}" for v in args.variants]
    old = main_ratecontrol(args.main)
    fit = engine.fit
    calls: list[int] = []

    def counting_fit(*a, **k):
        if not isinstance(k.get("init"), Splats):  # the finish's warm start is no fit
            calls.append(1)
        return fit(*a, **k)

    engine.fit = counting_fit
    rows = []
    for path in kodak_paths(args.images):
        image = kodak224(path) if args.kodak224 else np.asarray(Image.open(path).convert("RGB"))
        for target in args.targets:
            for label in args.modes:
                encode = old.encode_to_rate if label == "main" else ratecontrol.encode_to_rate
                constants = ([float(v) for v in label.split()[1].split(",")]
                             if label.startswith("new ") else None)
                calls.clear()
                t0 = time.perf_counter()
                with _constants(constants):
                    data = encode(image, target, iterations=args.iterations)
                seconds = time.perf_counter() - t0
                g = gscodec.open(data)
                rows.append(dict(image=path.stem, target=target, mode=label, bpp=g.info["bpp"],
                                 psnr=psnr(np.asarray(gscodec.decode(data)), image),
                                 splats=g.n_splats, fits=len(calls), precision=g.precision,
                                 seconds=seconds))
                print(rows[-1], flush=True)
    command = "benchmarks/ratecontrol_joint.py " + " ".join(sys.argv[1:])
    print(header(command))
    size = "Kodak-224" if args.kodak224 else "Kodak 768x512"
    print(f"{size}, first {args.images} images, {args.iterations} iterations; means:\n")
    print("| target bpp | rate control | bpp | PSNR (dB) | splats | fits | s / image |")
    print("|---|---|---|---|---|---|---|")
    for target in args.targets:
        for mode in args.modes:
            r = [x for x in rows if x["target"] == target and x["mode"] == mode]
            print(f"| {target} | {mode} | {np.mean([x['bpp'] for x in r]):.3f} | "
                  f"{np.mean([x['psnr'] for x in r]):.2f} | "
                  f"{np.mean([x['splats'] for x in r]):.0f} | "
                  f"{np.mean([x['fits'] for x in r]):.1f} | "
                  f"{np.mean([x['seconds'] for x in r]):.1f} |")
    OUT.mkdir(exist_ok=True)
    (OUT / "ratecontrol_joint.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
