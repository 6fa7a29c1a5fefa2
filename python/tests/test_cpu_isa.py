"""The generic and the AVX2 builds of the CPU kernels agree (CPU twin of a twin)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import gscodec
from conftest import SAMPLE_IMAGE

SCRIPT = """
import json, sys, numpy as np, gscodec
from PIL import Image
img = np.asarray(Image.open(sys.argv[1]).convert("RGB"))[:96, :128]
# The paper's fit: its result is a smooth function of the kernels' arithmetic
# (densification's discrete draws would turn last-bit differences into others).
s, st = gscodec.fit(img, 150, iterations=60, return_stats=True, **gscodec.engine.PAPER_FIT)
print(json.dumps({"isa": gscodec.backends()["cpu_isa"], "psnr": st["psnr"],
                  "splats": s.to_array().tolist()}))
"""


def run_fit(isa):
    env = dict(os.environ)
    env.pop("GSCODEC_CPU_ISA", None)
    if isa:
        env["GSCODEC_CPU_ISA"] = isa
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(SAMPLE_IMAGE)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def test_generic_and_native_builds_agree():
    if gscodec.backends()["cpu_isa"] == "generic":
        pytest.skip("this CPU runs the generic build only")
    native, generic = run_fit(None), run_fit("generic")
    assert (native["isa"], generic["isa"]) == ("avx2", "generic")
    assert native["psnr"] == pytest.approx(generic["psnr"], abs=0.01)
    np.testing.assert_allclose(native["splats"], generic["splats"], rtol=1e-3, atol=1e-3)
    # The decoder never contracts a*b+c: the same splats decode to the same pixels.
    splats = gscodec.Splats.from_array(np.array(native["splats"], np.float32), 128, 96)
    mine = gscodec.render(splats, 200, 150)
    assert run_decode(splats, "generic") == mine.tolist()


def run_decode(splats, isa):
    script = (
        "import sys, json, numpy as np, gscodec\n"
        "a = np.array(json.loads(sys.stdin.read()), np.float32)\n"
        "s = gscodec.Splats.from_array(a, 128, 96)\n"
        "print(json.dumps(gscodec.render(s, 200, 150).tolist()))\n"
    )
    env = dict(os.environ, GSCODEC_CPU_ISA=isa)
    out = subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True,
                         text=True, input=json.dumps(splats.to_array().tolist())).stdout
    return json.loads(out)
