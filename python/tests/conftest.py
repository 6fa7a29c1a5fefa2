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
