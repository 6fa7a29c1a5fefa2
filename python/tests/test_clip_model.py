"""GSCLIP: open_clip integration, freezing, trainable fraction, local checkpoints."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="gscodec.clip needs the clip extra (torch)")
open_clip = pytest.importorskip(
    "open_clip", reason="gscodec.clip needs the clip extra (open_clip_torch)"
)

from gscodec.clip import GSCLIP, collate_splats, create_gs_model, create_rgb_model  # noqa: E402

TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 32, "layers": 3, "head_width": 16},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TINY_STEM = {"n_tokens": 4, "dim": 16, "depth": 1, "heads": 2, "n_freqs": 3}


def splat_batch(counts=(5, 2)):
    rng = np.random.default_rng(0)
    sets = []
    for n in counts:
        s = rng.random((n, 8)).astype(np.float32)
        s[:, 2:5] = s[:, 2:5] * 0.1 + 0.01
        sets.append(s)
    return collate_splats(sets)


def test_paper_freezing_and_trainable_fraction():
    model = create_gs_model(TINY_CFG, gs_cfg=TINY_STEM)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    # text tower frozen; the temperature stays trainable for the contrastive stage
    assert {n for n in trainable if not n.startswith("visual.")} == {"logit_scale"}
    assert {n for n in trainable if n.startswith("visual.stem.")} == {
        "visual.stem." + n for n, _ in model.visual.stem.named_parameters()
    }
    assert any(n.startswith("visual.transformer.resblocks.1.") for n in trainable)
    assert not any(n.startswith("visual.transformer.resblocks.2.") for n in trainable)
    assert "visual.ln_post.weight" in trainable and "visual.proj" in trainable
    assert "visual.ln_pre.weight" not in trainable
    n_total = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for n, p in model.named_parameters() if n in trainable)
    assert model.trainable_fraction() == pytest.approx(n_train / n_total)
    everything = create_gs_model(TINY_CFG, gs_cfg=TINY_STEM, unlocked_blocks=None)
    assert everything.trainable_fraction() == 1.0


@pytest.mark.parametrize("n_tokens", [196, 98])
def test_vit_b16_trainable_fraction_in_paper_range(n_tokens):
    with torch.device("meta"):  # counts parameters without allocating ViT-B-16
        model = create_gs_model("ViT-B-16", n_tokens=n_tokens)
    assert 0.07 <= model.trainable_fraction() <= 0.14
    assert model.visual.stem.n_tokens == n_tokens


def test_encode_image_and_forward_shapes():
    model = create_gs_model(TINY_CFG, gs_cfg=TINY_STEM).eval()
    splats, mask = splat_batch()
    assert model.encode_image(splats, mask).shape == (2, 16)
    tokens = open_clip.tokenizer.SimpleTokenizer(context_length=12)(["a cat", "a dog"])
    image, text, scale = model(splats, tokens, mask=mask)
    assert image.shape == text.shape == (2, 16)
    torch.testing.assert_close(image.norm(dim=-1), torch.ones(2))
    assert scale.item() == pytest.approx(1 / 0.07)


@torch.no_grad()
def test_model_output_ignores_padding():
    model = create_gs_model(TINY_CFG, gs_cfg=TINY_STEM).eval()
    splats, mask = splat_batch((6, 3))
    together = model.encode_image(splats, mask)
    alone = model.encode_image(splats[1:, :3], mask[1:, :3])
    torch.testing.assert_close(together[1:], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout", ["open_clip", "bare", "ddp"])
def test_loads_local_rgb_open_clip_checkpoint(tmp_path, layout):
    torch.manual_seed(1)
    rgb = open_clip.CLIP(**TINY_CFG).eval()
    sd = rgb.state_dict()
    payload = {
        "bare": sd,
        "open_clip": {"epoch": 3, "state_dict": sd},
        "ddp": {"state_dict": {"module." + k: v for k, v in sd.items()}},
    }[layout]
    path = tmp_path / "rgb.pt"
    torch.save(payload, path)
    gs = create_gs_model(TINY_CFG, pretrained=str(path), gs_cfg=TINY_STEM).eval()
    tokens = open_clip.tokenizer.SimpleTokenizer(context_length=12)(["a photo of a cat"])
    torch.testing.assert_close(gs.encode_text(tokens), rgb.encode_text(tokens))
    for name in ("ln_pre", "transformer", "ln_post"):
        for (k, a), b in zip(
            getattr(gs.visual, name).state_dict().items(),
            getattr(rgb.visual, name).state_dict().values(),
        ):
            assert torch.equal(a, b), f"{name}.{k}"
    assert torch.equal(gs.visual.proj, rgb.visual.proj)
    torch.testing.assert_close(
        gs.visual.stem.cls_token, rgb.visual.class_embedding + rgb.visual.positional_embedding[0]
    )
    # create_rgb_model reads the same file through open_clip's loader
    torch.testing.assert_close(
        create_rgb_model(TINY_CFG, str(path)).encode_text(tokens), rgb.encode_text(tokens)
    )


def test_gs_checkpoint_round_trip(tmp_path):
    torch.manual_seed(2)
    model = create_gs_model(TINY_CFG, gs_cfg=TINY_STEM).eval()
    path = tmp_path / "gs.pt"
    torch.save({"state_dict": model.state_dict(), "gs_cfg": model.gs_cfg.as_dict()}, path)
    loaded = create_gs_model(
        TINY_CFG, pretrained=path
    ).eval()  # stem config comes from the checkpoint
    assert loaded.gs_cfg == model.gs_cfg
    splats, mask = splat_batch()
    torch.testing.assert_close(loaded.encode_image(splats, mask), model.encode_image(splats, mask))


def test_pretrained_must_be_an_existing_file(tmp_path):
    # an open_clip tag would mean a download: refused
    with pytest.raises(FileNotFoundError, match="existing local checkpoint"):
        create_gs_model("ViT-B-16", pretrained="openai")
    with pytest.raises(FileNotFoundError):
        create_rgb_model(TINY_CFG, tmp_path / "missing.pt")


def test_rejects_mismatched_checkpoint(tmp_path):
    other = dict(TINY_CFG, vision_cfg=dict(TINY_CFG["vision_cfg"], width=64, head_width=32))
    path = tmp_path / "other.pt"
    torch.save(open_clip.CLIP(**other).state_dict(), path)
    with pytest.raises(ValueError, match="does not match the model config"):
        create_gs_model(TINY_CFG, pretrained=path, gs_cfg=TINY_STEM)
    with pytest.raises(ValueError, match="does not match the model config"):
        create_rgb_model(TINY_CFG, path)


def test_custom_config_from_json(tmp_path):
    import json

    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"model_cfg": TINY_CFG}))
    model = create_gs_model(str(path), gs_cfg=TINY_STEM)
    assert isinstance(model, GSCLIP) and model.visual.output_dim == 16


def test_query_grid_tokens_start_at_the_patch_positions(tmp_path):
    torch.manual_seed(2)
    rgb = open_clip.CLIP(**TINY_CFG)
    path = tmp_path / "rgb.pt"
    torch.save(rgb.state_dict(), path)
    stem = dict(TINY_STEM, query_grid=True)  # 4 tokens, as the 16x16 / patch 8 ViT has patches
    gs = create_gs_model(TINY_CFG, pretrained=str(path), gs_cfg=stem)
    torch.testing.assert_close(gs.visual.stem.token_pos, rgb.visual.positional_embedding[1:])
    fresh = create_gs_model(TINY_CFG, gs_cfg=stem)  # random init: the fresh ViT's positions
    assert fresh.visual.stem.token_pos.abs().sum() > 0
    assert gs.visual.stem.token_pos.requires_grad  # part of the stem, trained
