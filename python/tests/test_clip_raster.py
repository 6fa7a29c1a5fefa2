"""The raster stem: its torch render against the codec's, and the RGB model it starts as."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="gscodec.clip needs the clip extra (torch)")
open_clip = pytest.importorskip(
    "open_clip", reason="gscodec.clip needs the clip extra (open_clip_torch)"
)

import gscodec  # noqa: E402
from gscodec.clip import collate_splats, create_gs_model, create_rgb_model  # noqa: E402
from gscodec.clip import raster  # noqa: E402
from gscodec.clip.raster import RasterStem, render_splats  # noqa: E402
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD  # noqa: E402

from test_clip_model import TINY_CFG as TINY_CFG_PATCH_8  # noqa: E402

# 16 x 16 input in 4 x 4 patches: 16 tokens.
TINY_CFG = {**TINY_CFG_PATCH_8, "vision_cfg": {**TINY_CFG_PATCH_8["vision_cfg"], "patch_size": 4}}


def random_splats(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = np.zeros((n, 8), np.float32)
    s[:, 0:2] = rng.uniform(-0.1, 1.1, (n, 2))  # some centres outside the image
    s[:, 2] = rng.uniform(0.01, 0.3, n)
    s[:, 3] = rng.uniform(-0.2, 0.2, n)
    s[:, 4] = rng.uniform(0.01, 0.3, n)
    s[:, 5:8] = rng.uniform(-0.5, 1.5, (n, 3))
    return s


@pytest.mark.parametrize("n,width,height", [(1, 5, 3), (17, 40, 24), (60, 16, 16)])
def test_render_matches_the_codec(n, width, height):
    rows = random_splats(n, seed=n)
    ours = render_splats(torch.from_numpy(rows)[None], None, height, width)[0]
    codec = gscodec.render(gscodec.Splats.from_array(rows, width, height), dtype=np.float32)
    np.testing.assert_allclose(ours.permute(1, 2, 0).numpy(), codec, atol=2e-6, rtol=1e-5)


def test_rendering_in_chunks_of_splats_changes_nothing(monkeypatch):
    rows = torch.from_numpy(random_splats(23, 7))[None]
    whole = render_splats(rows, None, 16, 16)
    monkeypatch.setattr(raster, "_CHUNK_ELEMENTS", 5 * 16 * 16)  # 5 splats per chunk
    torch.testing.assert_close(render_splats(rows, None, 16, 16), whole, atol=1e-6, rtol=1e-6)


def test_padding_rows_render_nothing():
    sets = [random_splats(7, 1), random_splats(3, 2)]
    splats, mask = collate_splats(sets)
    splats[1, 3:] = 0.0  # zeros are not a valid splat (l11 = 0): must stay harmless
    batch = render_splats(splats, mask, 12, 12)
    for i, rows in enumerate(sets):
        alone = render_splats(torch.from_numpy(rows)[None], None, 12, 12)[0]
        torch.testing.assert_close(batch[i], alone)
    assert torch.isfinite(batch).all()


def test_starts_as_the_rgb_model_reading_the_rendering(tmp_path):
    torch.manual_seed(0)
    rgb = open_clip.CLIP(**TINY_CFG).eval()
    path = tmp_path / "rgb.pt"
    torch.save({"state_dict": rgb.state_dict()}, path)
    gs = create_gs_model(TINY_CFG, path, gs_cfg={"kind": "raster"}).eval()
    assert gs.visual.stem.n_tokens == 16 and gs.gs_cfg.n_tokens == 16
    rows = [random_splats(9, 3), random_splats(4, 4)]
    splats, mask = collate_splats(rows)
    images = []
    for r in rows:
        pixels = gscodec.render(gscodec.Splats.from_array(r, 16, 16), dtype=np.float32)
        images.append(torch.from_numpy(pixels).permute(2, 0, 1).clamp(0, 1))
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(3, 1, 1)
    with torch.no_grad():
        want = rgb.encode_image((torch.stack(images) - mean) / std)
        got = gs.encode_image(splats, mask)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_gs_checkpoint_keeps_the_raster_stem(tmp_path):
    model = create_gs_model(TINY_CFG, gs_cfg={"kind": "raster"})
    with torch.no_grad():
        model.visual.stem.conv1.weight.add_(1.0)
    path = tmp_path / "gs.pt"
    torch.save({"state_dict": model.state_dict(), "gs_cfg": model.gs_cfg.as_dict()}, path)
    again = create_gs_model(TINY_CFG, path)
    assert isinstance(again.visual.stem, RasterStem)
    torch.testing.assert_close(again.visual.stem.conv1.weight, model.visual.stem.conv1.weight)


def test_trains_its_embeddings_not_the_render():
    model = create_gs_model(TINY_CFG, gs_cfg={"kind": "raster"})
    trainable = {n for n, p in model.visual.stem.named_parameters() if p.requires_grad}
    assert trainable == {"conv1.weight", "class_embedding", "positional_embedding"}
    splats, mask = collate_splats([random_splats(5, 5)])
    model.encode_image(splats, mask).sum().backward()
    assert model.visual.stem.conv1.weight.grad.abs().sum() > 0


def test_rejects_bad_input():
    stem = RasterStem(width=8, image_size=8, patch_size=4)
    with pytest.raises(ValueError, match=r"splats must be \[B, N, 8\]"):
        stem(torch.zeros(2, 3, 7))
    with pytest.raises(ValueError, match="mask must be bool"):
        stem(torch.zeros(2, 3, 8), torch.ones(2, 3))
    with pytest.raises(ValueError, match="not a multiple of patch"):
        RasterStem(width=8, image_size=10, patch_size=4)
    with pytest.raises(ValueError, match="stem kind"):
        create_gs_model(TINY_CFG, gs_cfg={"kind": "pixels"})


def test_vit_b16_raster_student_trains_a_paper_sized_fraction():
    with torch.device("meta"):  # counts parameters without allocating ViT-B-16
        model = create_gs_model("ViT-B-16", gs_cfg={"kind": "raster"})
    assert model.visual.stem.n_tokens == 196  # one per 16x16 patch of 224x224
    assert 0.07 <= model.trainable_fraction() <= 0.14
