"""gscodec-train: every stage learns, resume is exact, accumulation is exact, eval runs."""

import io
import json
import shutil
import tarfile

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="gscodec.clip needs the clip extra (torch)")
open_clip = pytest.importorskip(
    "open_clip", reason="gscodec.clip needs the clip extra (open_clip_torch)"
)

from PIL import Image  # noqa: E402

import gscodec  # noqa: E402
from gscodec import format as gsi_format  # noqa: E402
from gscodec.clip.train import build_parser, build_stage, main  # noqa: E402

TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 32, "layers": 3, "head_width": 16},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
CLASSES = ["red", "green", "blue"]
STEM = [
    "--n-tokens",
    "4",
    "--stem-dim",
    "16",
    "--stem-depth",
    "1",
    "--stem-heads",
    "2",
    "--n-freqs",
    "3",
]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Paired RGB / GS shards (2 x 12 samples, 3 colours, 3..8 splats each) and an RGB teacher."""
    root = tmp_path_factory.mktemp("clip_data")
    rng = np.random.default_rng(0)
    (root / "rgb").mkdir()
    (root / "gs").mkdir()
    for folder in ("rgb", "gs"):
        (root / folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    for shard in range(2):
        with (
            tarfile.open(root / "rgb" / f"s-{shard}.tar", "w") as rgb,
            tarfile.open(root / "gs" / f"s-{shard}.tar", "w") as gs,
        ):
            for i in range(12):
                label = int(rng.integers(3))
                n = int(rng.integers(3, 9))
                rows = np.empty((n, 8), np.float32)
                rows[:, 0:2] = rng.random((n, 2))
                rows[:, 2] = rng.uniform(0.1, 0.3, n)
                rows[:, 3] = rng.normal(0, 0.05, n)
                rows[:, 4] = rng.uniform(0.1, 0.3, n)
                rows[:, 5:8] = rng.uniform(0, 0.2, (n, 3))
                rows[:, 5 + label] += 0.6
                splats = gscodec.Splats.from_array(rows, 16, 16)
                jpg = io.BytesIO()
                Image.fromarray(gscodec.render(splats)).save(jpg, format="JPEG", quality=95)
                key = f"{shard}_{i:03d}"
                _add(rgb, key + ".jpg", jpg.getvalue())
                _add(rgb, key + ".cls", str(label).encode())
                _add(gs, key + ".gsi", gsi_format.dumps(splats))
                _add(gs, key + ".cls", str(label).encode())
    torch.manual_seed(0)
    teacher = root / "teacher.pt"
    torch.save(
        {"state_dict": open_clip.CLIP(**TINY_CFG).state_dict(), "model_cfg": TINY_CFG}, teacher
    )
    (root / "model.json").write_text(json.dumps(TINY_CFG))
    return root


def stage_argv(command: str, data, out, *extra: str) -> list[str]:
    common = [
        "--output",
        str(out),
        "--batch-size",
        "8",
        "--workers",
        "0",
        "--warmup",
        "1",
        "--log-every",
        "1",
        "--templates",
        "simple",
    ]
    if command == "rgb":
        return [
            "rgb",
            "--train-data",
            str(data / "rgb"),
            "--model",
            str(data / "model.json"),
            *common,
            *extra,
        ]
    if command == "distill":
        return [
            "distill",
            "--train-data",
            str(data / "gs"),
            "--rgb-data",
            str(data / "rgb"),
            "--teacher",
            str(data / "teacher.pt"),
            *STEM,
            *common,
            *extra,
        ]
    return [
        "align",
        "--train-data",
        str(data / "gs"),
        "--pretrained",
        str(data / "teacher.pt"),
        *STEM,
        *common,
        *extra,
    ]


@pytest.mark.parametrize(
    "command,extra", [("rgb", ()), ("distill", ()), ("align", ()), ("align", ("--from-scratch",))]
)
def test_each_stage_lowers_its_loss(data, tmp_path, command, extra):
    args = build_parser().parse_args(stage_argv(command, data, tmp_path, *extra))
    stage = build_stage(args)
    batch = next(
        iter(torch.utils.data.DataLoader(stage.dataset, batch_size=8, collate_fn=stage.collate))
    )
    optimizer = torch.optim.AdamW(stage.groups, lr=3e-3)
    losses = []
    for _ in range(8):
        loss = stage.loss(stage.model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


def test_gs_stages_train_only_the_paper_parameters(data, tmp_path):
    stage = build_stage(build_parser().parse_args(stage_argv("align", data, tmp_path)))
    scales = {id(p): g["lr_scale"] for g in stage.groups for p in g["params"]}
    for name, p in stage.model.named_parameters():
        if name.startswith("visual.stem.") or name == "logit_scale":
            assert scales[id(p)] == 1.0, name
        elif p.requires_grad:
            assert scales[id(p)] == pytest.approx(0.1), name
        else:
            assert id(p) not in scales
    assert not any(p.requires_grad for p in stage.model.transformer.parameters())  # text tower


def _log(out, event="step"):
    return [
        r
        for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())
        if r["event"] == event
    ]


def test_resume_continues_exactly(data, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    main(stage_argv("align", data, straight, "--epochs", "2"))
    # A run of the same length that stopped after epoch 1, then resumed.
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(
        straight / "checkpoints" / "epoch_1.pt", resumed / "checkpoints" / "epoch_latest.pt"
    )
    main(stage_argv("align", data, resumed, "--epochs", "2", "--resume", "latest"))
    a = torch.load(straight / "checkpoints" / "epoch_2.pt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "epoch_2.pt", weights_only=True)
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for key, value in a["optimizer"]["state"].items():
        for name, tensor in value.items():
            assert torch.equal(tensor, b["optimizer"]["state"][key][name]), (key, name)
    second_epoch = lambda out: [r["loss"] for r in _log(out) if r["epoch"] == 1]  # noqa: E731
    assert second_epoch(straight) == second_epoch(resumed)
    assert not list((resumed / "checkpoints").glob(".*tmp*"))  # atomic writes leave no temporaries


def test_gradient_accumulation_matches_a_big_batch(data, tmp_path):
    whole, accum = tmp_path / "whole", tmp_path / "accum"
    main(stage_argv("distill", data, whole, "--batch-size", "8"))
    main(stage_argv("distill", data, accum, "--batch-size", "4", "--accum-freq", "2"))
    a = torch.load(whole / "checkpoints" / "epoch_latest.pt", weights_only=True)["state_dict"]
    b = torch.load(accum / "checkpoints" / "epoch_latest.pt", weights_only=True)["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=key)


def test_distill_then_eval_from_the_cli(data, tmp_path, capsys):
    main(stage_argv("distill", data, tmp_path, "--epochs", "1"))
    capsys.readouterr()
    result = main(
        [
            "eval",
            "--checkpoint",
            str(tmp_path / "checkpoints" / "epoch_1.pt"),
            "--zeroshot-data",
            str(data / "gs"),
            "--templates",
            "simple",
            "--output",
            str(tmp_path / "r.jsonl"),
        ]
    )
    assert result["kind"] == "gs" and result["n"] == 24 and result["n_tokens"] == 4
    assert 0 <= result["top1"] <= result["top5"] == 1.0  # 3 classes: top-5 always hits
    assert json.loads(capsys.readouterr().out)["top1"] == result["top1"]
    assert json.loads((tmp_path / "r.jsonl").read_text())["top1"] == result["top1"]
    teacher = main(
        ["eval", "--checkpoint", str(data / "teacher.pt"), "--zeroshot-data", str(data / "rgb")]
    )
    assert teacher["kind"] == "rgb" and teacher["n"] == 24


def test_sample_count_comes_from_sizes_json(data, tmp_path):
    from gscodec.clip.data import count_samples

    shards = tmp_path / "gs"
    shutil.copytree(data / "gs", shards)
    assert count_samples(shards) == 24  # made by hand: counted from the tar headers
    # encode-dataset writes sizes.json; a deliberately different count proves it is read.
    (shards / "sizes.json").write_text(json.dumps({"s-0.tar": 5, "s-1.tar": 7}))
    assert count_samples(shards) == 12
