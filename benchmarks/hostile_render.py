"""Render issue 9's tile-binning overflow file: N splats of radius 10 (each
covers every tile) on a WIDTH x 1024 reference, 588 bytes on disk. Run it under
the sanitizer build (docs/benchmarks.md, "Fuzzing") to see what the decoder
does with it: before issue 9's fix, ASan/UBSan report the overflow; after, it
must end in `GSIError` (the decode-work limit) or render.

    python benchmarks/hostile_render.py [N] [WIDTH]    # default 1048576 1024
"""

import sys
import time

import numpy as np

import gscodec


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1 << 20
    width = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
    array = np.tile([[.5, .5, 10, 0, 10, 1e-6, 1e-6, 1e-6]], (n, 1))
    data = gscodec.format.dumps(gscodec.Splats.from_array(array, width, 1024))
    print(f"{len(data)} bytes, {n} splats, {width}x1024", flush=True)
    start = time.perf_counter()
    try:
        pixels = gscodec.open(data).render()
    except gscodec.GSIError as e:
        print(f"GSIError after {time.perf_counter() - start:.2f} s: {e}")
        return
    print(f"rendered {pixels.shape} in {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
