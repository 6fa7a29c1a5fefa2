"""Shared test set-up: the `gpu` marker skips cleanly on machines without CUDA."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import gscodec

REPO = Path(__file__).resolve().parents[2]
SAMPLE_IMAGE = REPO / "examples" / "kodim23-224.png"
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    if gscodec.backends()["cuda_available"]:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sample_image() -> np.ndarray:
    """The repo's sample image (Kodak kodim23, 224 x 224), H x W x 3 uint8."""
    return np.asarray(Image.open(SAMPLE_IMAGE).convert("RGB"))


@pytest.fixture
def torch_one_thread():
    """Torch on one thread while a test runs the reference twin: its dense tensors
    are small, and intra-op threads on a loaded 2-core machine mostly wait for
    each other (10x slower, measured)."""
    import torch  # here, not at the top: most tests never touch torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
