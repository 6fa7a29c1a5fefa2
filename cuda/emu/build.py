"""Build gscodec with the CUDA backend running on the CPU emulator.

    python cuda/emu/build.py OUT_DIR [-j N]

compiles cuda/*.cu as plain C++ against cuda/emu/ (an emulated CUDA runtime,
see cuda_runtime.h there), links it with the CPU backend and the bindings into
OUT_DIR/gscodec/_core*.so next to a copy of src/gscodec, and prints the
PYTHONPATH to use. A rebuild compiles only the files whose sources changed. With it, `gscodec.backends()["cuda_available"]` is True and
the `gpu` tests run the kernels' logic on the CPU (slowly: small tests only).
It checks what the kernels compute and that their barriers and warp
intrinsics are reached by every thread; it says nothing about speed, and runs
blocks one at a time, so races between blocks go unseen. Not a substitute for
the GPU runs in docs/gpu.md.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAUNCH = re.compile(r"([A-Za-z_]\w*(?:<[^<>;()]*>)?)<<<(.+?)>>>")


def split_top_level(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "(<[":
            depth += 1
        elif ch in ")>]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    return parts


def rewrite_launches(source: str) -> str:
    """kernel<<<grid, block, smem, stream>>>(args) -> ::emu::launch(kernel, grid, block)(args)."""

    def repl(m: re.Match) -> str:
        args = split_top_level(m.group(2))
        if len(args) < 2:
            raise SystemExit(f"cannot parse launch {m.group(0)!r}")
        return f"::emu::launch(&{m.group(1)}, {args[0]}, {args[1]})"

    return LAUNCH.sub(repl, source)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("-j", type=int, default=2)
    args = ap.parse_args()
    out = args.out.resolve()
    gen = out / "gen"
    objs = out / "obj"
    for d in (gen, objs):
        d.mkdir(parents=True, exist_ok=True)

    import pybind11

    py_inc = sysconfig.get_paths()["include"]
    common = ["-std=c++17", "-O2", "-g", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra",
              "-Wno-unused-parameter", "-Wno-unknown-pragmas", "-Wno-clobbered", f"-I{REPO / 'cpp'}", f"-I{REPO / 'cuda'}"]
    jobs = []
    for cu in sorted((REPO / "cuda").glob("*.cu")):
        cpp = gen / (cu.stem + ".cpp")
        text = f'#line 1 "{cu}"\n' + rewrite_launches(cu.read_text())
        if not cpp.exists() or cpp.read_text() != text:
            cpp.write_text(text)
        # the emulator's headers shadow the CUDA toolkit's
        jobs.append(["g++", *common, f"-I{REPO / 'cuda' / 'emu'}", "-c", str(cpp), "-o", str(objs / (cu.stem + ".o"))])
    # The CPU backend as CMakeLists.txt builds it, generic instruction set only.
    host = [(REPO / "cpp" / "bindings.cpp", []), (REPO / "cpp" / "cpu" / "dispatch.cpp", []),
            (REPO / "cpp" / "cpu" / "fit.cpp", ["-DGS_ISA=generic"]),
            (REPO / "cpp" / "cpu" / "decode.cpp", ["-DGS_ISA=generic", "-ffp-contract=off"]),
            (REPO / "cuda" / "bindings_cuda.cpp", [])]
    for src, extra in host:
        jobs.append(["g++", *common, "-O3", "-fopenmp", "-DGSCODEC_WITH_CUDA", *extra,
                     f"-I{pybind11.get_include()}", f"-I{py_inc}", "-c", str(src),
                     "-o", str(objs / (src.stem + "_host.o"))])

    def up_to_date(cmd: list[str]) -> bool:
        """The object exists, was built by this command, and is newer than every
        file it was built from (the dependency list g++ -MMD wrote)."""
        obj = Path(cmd[-1])
        stamp, deps = obj.with_suffix(".cmd"), obj.with_suffix(".d")
        if not (obj.exists() and deps.exists() and stamp.exists()) or stamp.read_text() != " ".join(cmd):
            return False
        files = deps.read_text().replace("\\\n", " ").split(":", 1)[1].split()
        built = obj.stat().st_mtime
        return all(Path(f).exists() and Path(f).stat().st_mtime < built for f in files)

    def compile_one(cmd: list[str]) -> None:
        if up_to_date(cmd):
            return
        run([*cmd[:-2], "-MMD", *cmd[-2:]])
        Path(cmd[-1]).with_suffix(".cmd").write_text(" ".join(cmd))

    def run(cmd: list[str]) -> None:
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0 or r.stderr.strip():
            sys.stderr.write(" ".join(cmd) + "\n" + r.stderr)
        if r.returncode != 0:
            raise SystemExit(f"failed: {cmd[-3]}")

    with ThreadPoolExecutor(args.j) as pool:
        list(pool.map(compile_one, jobs))

    pkg = out / "gscodec"
    shutil.rmtree(pkg, ignore_errors=True)
    shutil.copytree(REPO / "src" / "gscodec", pkg, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    run(["g++", "-shared", "-fopenmp", "-o", str(pkg / f"_core{suffix}"), *map(str, sorted(objs.glob("*.o")))])
    print(f"PYTHONPATH={out}")


if __name__ == "__main__":
    main()
