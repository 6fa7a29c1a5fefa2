"""A small end-to-end run of every CUDA kernel, for compute-sanitizer (docs/gpu.md).

    compute-sanitizer --tool memcheck python3 cuda/smoke.py

Fits a mixed-size batch with the paper's fit (grid and random init: the device
init kernels) and with the default, encoder v2 (its host phases), pruning on,
decodes it in uint8 and float, and calls the test hooks (direct mode included). Exits non-zero
if CUDA and the CPU disagree grossly; the real comparisons are in
python/tests/test_cuda.py.
"""

from pathlib import Path

import numpy as np
from PIL import Image

import gscodec
from gscodec import _core

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    assert gscodec.backends()["cuda_available"], gscodec.backends()
    img = np.asarray(Image.open(REPO / "examples" / "kodim23-224.png").convert("RGB"))
    images = [img, img[:70, :150].copy(), img[100:117, 5:38].copy()]
    paper = gscodec.engine.PAPER_FIT
    for options in (paper, dict(paper, init="random"), {}):
        kw = dict(iterations=12, prune_threshold=0.02, prune_every=3, return_stats=True, **options)
        splats, stats = gscodec.fit(images, 45, device="cuda", **kw)
        _, cpu_stats = gscodec.fit(images, 45, device="cpu", **kw)
        for a, b in zip(stats, cpu_stats):
            assert abs(a["psnr"] - b["psnr"]) < 0.5, (a, b)
    for dtype in (np.uint8, np.float32):
        out = gscodec.render_batch(splats, [None, (33, 12), (300, 200)], dtype=dtype, device="cuda")
        ref = gscodec.render_batch(splats, [None, (33, 12), (300, 200)], dtype=dtype, device="cpu")
        assert all(np.abs(a.astype(float) - b).max() <= 1 for a, b in zip(out, ref))
    rng = np.random.default_rng(0)
    p = np.empty((300, 8), np.float32)
    p[:, 0], p[:, 1] = rng.uniform(0, 40, 300), rng.uniform(0, 30, 300)
    p[:, 2], p[:, 3], p[:, 4] = rng.uniform(0.5, 5, 300), rng.uniform(-2, 2, 300), rng.uniform(0.5, 5, 300)
    p[:, 5:] = rng.uniform(-0.5, 1, (300, 3))
    target = np.ascontiguousarray(img[:30, :40])
    for direct in (False, True):
        _core._cuda_render_px(p, 40, 30, force_direct=direct)
        _core._cuda_render_backward_px(p, 40, 30, rng.normal(size=(30, 40, 3)).astype(np.float32),
                                       force_direct=direct)
        _core._cuda_fit_grad_px(p, 40, 30, target, force_direct=direct)
    _core._cuda_bin_tiles_px(p, 40, 30)
    print("smoke run done:", [round(s["psnr"], 2) for s in stats])


if __name__ == "__main__":
    main()
