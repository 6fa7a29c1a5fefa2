"""Write the seed corpora of the fuzz harnesses (small, valid inputs that
reach every precision, metadata and the renderer), so that no binary corpus
lives in the repository.

    python python/fuzz/seeds.py OUT_DIR    # writes OUT_DIR/open_render/ and OUT_DIR/from_array_render/
"""

import sys
from pathlib import Path

import numpy as np

from gscodec import Splats
from gscodec import format as fmt

from caps import MAX_SIDE
from gsi_input import from_gsi

PRECISIONS = ["fp32", "fp16", "q6", "q7", "q8", "q:x=12,y=11,l11=16,l21=9,l22=3,r=1,g=8,b=16"]


def random_splats(n: int, width: int, height: int, seed: int) -> Splats:
    rng = np.random.default_rng(seed)
    chol = np.stack([np.exp(rng.uniform(-4, -1, n)), rng.normal(0, 0.05, n),
                     np.exp(rng.uniform(-4, -1, n))], axis=1)
    return Splats(rng.uniform(0, 1, (n, 2)), chol, rng.normal(0.5, 0.3, (n, 3)), width, height)


#: Files of the version-2.0 writer (read-only version), kept as test fixtures.
V2_0_FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "v2_0"


def open_seeds() -> dict[str, bytes]:
    """.gsi files (every precision, with and without metadata, 0 to 40 splats;
    version 3 and a few version-2.0 fixtures), each in both forms of `gsi_input`."""
    seeds = {}
    for name in ("q7-2.gsi", "q7-400.gsi", "fp16-40.gsi"):
        file = (V2_0_FIXTURES / name).read_bytes()
        seeds[f"v2_0-{name[:-4]}-raw.bin"] = from_gsi(file, raw=True)
        seeds[f"v2_0-{name[:-4]}-payload.bin"] = from_gsi(file, raw=False)
    for i, precision in enumerate(PRECISIONS):
        splats = random_splats([0, 1, 3, 8, 40, 5][i], [40, 16, 64, 7, 100, 33][i],
                               [30, 16, 48, 9, 3, 65][i], seed=i)
        metadata = {"source": "a.png", "k": "v"} if i % 2 else None
        file = fmt.dumps(splats, precision=precision, metadata=metadata)
        name = f"{i}-{precision.split(':')[0]}"
        seeds[f"{name}-raw.bin"] = from_gsi(file, raw=True)
        seeds[f"{name}-payload.bin"] = from_gsi(file, raw=False)
    return seeds


def from_array_seed(splats: Splats, out_w: int, out_h: int, float_output: bool) -> bytes:
    """The byte layout `fuzz_from_array_render.TestOneInput` parses."""
    header = (splats.width.to_bytes(2, "little") + splats.height.to_bytes(2, "little")
              + bytes([(out_w - 1) % MAX_SIDE, (out_h - 1) % MAX_SIDE, int(float_output)]))
    return header + splats.to_array().astype("<f4").tobytes()


def from_array_seeds() -> dict[str, bytes]:
    return {
        "random-8.bin": from_array_seed(random_splats(8, 40, 30, 0), 40, 30, False),
        "random-30-float.bin": from_array_seed(random_splats(30, 64, 64, 1), 64, 64, True),
        "wide.bin": from_array_seed(random_splats(4, 65535, 1, 2), 64, 1, False),
        # one splat much larger than the image: it covers every tile
        "cover.bin": from_array_seed(Splats.from_array(
            np.array([[.5, .5, 10, 0, 10, 1e-6, 1e-6, 1e-6]]), 1024, 1024), 64, 64, False),
    }


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    for name, seeds in (("open_render", open_seeds()), ("from_array_render", from_array_seeds())):
        (out / name).mkdir(parents=True, exist_ok=True)
        for filename, data in seeds.items():
            (out / name / filename).write_bytes(data)


if __name__ == "__main__":
    main()
