"""gscodec-train: every stage learns, resume is exact, accumulation is exact, eval runs,
open_clip's run-folder conventions hold, and the console script's exit status is right."""

import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="gscodec.clip needs the clip extra (torch)")
open_clip = pytest.importorskip(
    "open_clip", reason="gscodec.clip needs the clip extra (open_clip_torch)"
)

from PIL import Image  # noqa: E402

import gscodec  # noqa: E402
from gscodec import format as gsi_format  # noqa: E402
from gscodec.clip.train import (  # noqa: E402
    accumulate_gradients,
    build_parser,
    build_stage,
    main,
)

TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 32, "layers": 3, "head_width": 16},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
CLASSES = ["red", "green", "blue"]
# The resampler stem (the mechanics under test are the stages'); the raster
# stem, distill's default, has its own tests below.
STEM = [
    "--stem",
    "resampler",
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


def without_stem_flags(argv: list[str]) -> list[str]:
    """``argv`` without the `STEM` flags: the trainer's default stem."""
    start = argv.index("--stem")
    assert argv[start : start + len(STEM)] == STEM
    return argv[:start] + argv[start + len(STEM) :]


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
    """argv of a tiny run of ``command`` in the run folder ``out`` (``--logs`` + ``--name``)."""
    common = [
        "--logs",
        str(out.parent),
        "--name",
        out.name,
        "--batch-size",
        "8",
        "--workers",
        "0",
        "--warmup",
        "1",
        "--log-every-n-steps",
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


AUGMENT = ("--aug-flip", "0.5", "--aug-min-crop", "0.7", "--aug-jitter", "0.2", "--aug-dropout", "0.2")


@pytest.mark.parametrize(
    "command,extra",
    [
        ("rgb", ()),
        ("distill", ()),
        ("distill", ("--distill-tokens", "pooled")),
        ("distill", ("--distill-tokens", "grid", "--distill-tokens-layer", "3")),
        ("distill", AUGMENT),
        ("align", ()),
        ("align", AUGMENT),
        ("align", ("--from-scratch",)),
    ],
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
        loss = stage.batch_loss(stage.model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


def test_new_students_get_the_raster_stem_and_gs_checkpoints_keep_theirs(data, tmp_path):
    from gscodec.clip.raster import RasterStem
    from gscodec.clip.stem import GSStem

    argv = without_stem_flags(stage_argv("distill", data, tmp_path / "raster"))
    stage = build_stage(build_parser().parse_args(argv))
    assert isinstance(stage.model.visual.stem, RasterStem)
    resampler = build_stage(build_parser().parse_args(stage_argv("distill", data, tmp_path / "r")))
    assert isinstance(resampler.model.visual.stem, GSStem)
    path = tmp_path / "gs.pt"
    model = resampler.model
    checkpoint = {"state_dict": model.state_dict(), "gs_cfg": model.gs_cfg.as_dict()}
    torch.save({**checkpoint, "model_cfg": TINY_CFG}, path)
    align = without_stem_flags(stage_argv("align", data, tmp_path / "a", "--pretrained", str(path)))
    assert isinstance(build_stage(build_parser().parse_args(align)).model.visual.stem, GSStem)


def test_resampler_settings_with_a_raster_stem_are_an_error(data, tmp_path):
    argv = without_stem_flags(stage_argv("distill", data, tmp_path / "x"))
    for extra in (["--stem-dim", "16"], ["--stem", "raster", "--n-tokens", "4", "--query-grid"]):
        with pytest.raises(ValueError, match="resampler settings, but the stem is raster"):
            build_stage(build_parser().parse_args(argv + extra))


def test_raster_student_starts_where_the_teacher_reads_the_rendering(data, tmp_path):
    # The RGB shards are JPEGs of the splats' renders, so a raster student starts
    # (almost) as its teacher: the distillation loss 2 - 2 cos is near 0 at step 0,
    # where the resampler stem starts far away.
    def first_loss(argv: list[str]) -> float:
        args = build_parser().parse_args(argv)
        stage = build_stage(args)
        loader = torch.utils.data.DataLoader(stage.dataset, batch_size=8, collate_fn=stage.collate)
        with torch.no_grad():
            return stage.batch_loss(stage.model, next(iter(loader))).item()

    argv = stage_argv("distill", data, tmp_path / "x")
    raster, resampler = first_loss(without_stem_flags(argv)), first_loss(argv)
    assert raster < 0.01 and resampler > 10 * raster, (raster, resampler)


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
    assert main(stage_argv("align", data, straight, "--epochs", "2")) == 0
    # A run of the same length that stopped after epoch 1, then resumed.
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(straight / "checkpoints" / "epoch_1.pt", resumed / "checkpoints" / "epoch_1.pt")
    assert main(stage_argv("align", data, resumed, "--epochs", "2", "--resume", "latest")) == 0
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
    assert main(stage_argv("distill", data, whole, "--batch-size", "8")) == 0
    assert main(stage_argv("distill", data, accum, "--batch-size", "4", "--accum-freq", "2")) == 0
    a = torch.load(whole / "checkpoints" / "epoch_1.pt", weights_only=True)["state_dict"]
    b = torch.load(accum / "checkpoints" / "epoch_1.pt", weights_only=True)["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=key)


def test_contrastive_accumulation_is_one_big_batch(data, tmp_path):
    """--accum-freq 2 x 4: the loss and gradients of a batch of 8 (open_clip's feature cache)."""
    args = build_parser().parse_args(stage_argv("align", data, tmp_path))
    stage = build_stage(args)
    batch = next(
        iter(torch.utils.data.DataLoader(stage.dataset, batch_size=8, collate_fn=stage.collate))
    )
    halves = [[part[:4] for part in batch], [part[4:] for part in batch]]
    params = [p for g in stage.groups for p in g["params"]]

    def grads_and_loss(micro_batches):
        stage.model.zero_grad(set_to_none=True)
        loss = accumulate_gradients(stage, stage.model, micro_batches)
        return loss, [p.grad.clone() for p in params]

    whole_loss, whole = grads_and_loss([batch])
    accum_loss, accum = grads_and_loss(halves)
    assert accum_loss == pytest.approx(whole_loss, rel=1e-5)
    for a, b in zip(whole, accum):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-4)
    # the naive way (average of the halves' own losses) is measurably different
    stage.model.zero_grad(set_to_none=True)
    naive = sum(stage.batch_loss(stage.model, half) for half in halves) / 2
    naive.backward()
    assert abs(naive.item() - whole_loss) > 1e-3


def test_contrastive_accumulation_end_to_end(data, tmp_path):
    whole, accum = tmp_path / "whole", tmp_path / "accum"
    assert main(stage_argv("align", data, whole, "--batch-size", "8")) == 0
    assert main(stage_argv("align", data, accum, "--batch-size", "4", "--accum-freq", "2")) == 0
    a = torch.load(whole / "checkpoints" / "epoch_1.pt", weights_only=True)["state_dict"]
    b = torch.load(accum / "checkpoints" / "epoch_1.pt", weights_only=True)["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4, msg=key)
    losses = lambda out: [r["loss"] for r in _log(out)]  # noqa: E731
    assert losses(accum) == pytest.approx(losses(whole), rel=1e-4)


def test_open_clip_run_folder(data, tmp_path):
    """--logs/--name layout, params.txt, out.log, --save-frequency, --save-most-recent,
    --zeroshot-frequency, '::'-joined sources with brace ranges, --resume latest."""
    run = tmp_path / "logs" / "my-run"
    sources = f"{data / 'gs' / 's-{0..0}.tar'}::{data / 'gs' / 's-1.tar'}"
    argv = stage_argv("align", data, run, "--epochs", "3")
    argv[argv.index("--train-data") + 1] = sources
    extra = ["--save-frequency", "2", "--save-most-recent"]
    extra += ["--zeroshot-data", str(data / "gs"), "--zeroshot-frequency", "2"]
    assert main([*argv, *extra]) == 0
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["epoch_2.pt", "epoch_3.pt", "epoch_latest.pt"]
    assert "train_data: ['" in (run / "params.txt").read_text()
    assert "Train Epoch: 2" in (run / "out.log").read_text()
    assert _log(run, "start")[0]["samples"] == 24  # both sources
    evaluated = [r["epoch"] for r in _log(run, "epoch") if "zeroshot_acc1" in r]
    assert evaluated == [2, 3]
    # the same name again is refused, unless resuming; --resume latest continues from epoch 3
    assert main([*argv, *extra]) == 1
    assert main([*argv, "--epochs", "4", "--resume", "latest"]) == 0
    assert _log(run, "start")[-1]["start_epoch"] == 3
    assert (run / "checkpoints" / "epoch_4.pt").is_file()


def test_resume_latest_without_checkpoint_starts_afresh(data, tmp_path):
    assert main(stage_argv("distill", data, tmp_path / "run", "--resume", "latest")) == 0
    assert _log(tmp_path / "run", "start")[0]["start_epoch"] == 0


def test_tensorboard_report(data, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    run = tmp_path / "run"
    assert main(stage_argv("distill", data, run, "--report-to", "tensorboard")) == 0
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def test_tensorboard_missing_is_a_clear_error(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    assert main(stage_argv("distill", data, tmp_path / "run", "--report-to", "tensorboard")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("gscodec-train distill: error: --report-to tensorboard needs")


def test_distill_then_eval_from_the_cli(data, tmp_path, capsys):
    assert main(stage_argv("distill", data, tmp_path, "--epochs", "1")) == 0
    capsys.readouterr()
    result_file = tmp_path / "results" / "gs.json"
    argv = ["eval", "--checkpoint", str(tmp_path / "checkpoints" / "epoch_1.pt")]
    argv += ["--zeroshot-data", str(data / "gs"), "--templates", "simple"]
    argv += ["--dataset", "colours", "--output", str(result_file)]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert json.loads(result_file.read_text()) == result
    assert result["dataset"] == "colours" and result["task"] == "zeroshot_classification"
    assert result["pretrained"] == str(tmp_path / "checkpoints" / "epoch_1.pt")
    assert result["model"] == "custom"  # distilled from the teacher's config, no --model given
    assert result["kind"] == "gs" and result["n_images"] == 24 and result["n_tokens"] == 4
    metrics = result["metrics"]
    assert set(metrics) == {"acc1", "acc5", "mean_per_class_recall"}
    assert 0 <= metrics["acc1"] <= metrics["acc5"] == 1.0  # 3 classes: top-5 always hits
    argv = ["eval", "--checkpoint", str(data / "teacher.pt"), "--zeroshot-data", str(data / "rgb")]
    assert main(argv) == 0
    teacher = json.loads(capsys.readouterr().out)
    assert teacher["kind"] == "rgb" and teacher["n_images"] == 24
    # no captions: retrieval cannot be evaluated
    assert main([*argv, "--task", "zeroshot_retrieval"]) == 1
    assert "no .txt captions" in capsys.readouterr().err


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1]


def test_bad_input_is_one_line_and_status_1(data, tmp_path, capsys):
    # missing shards
    argv = stage_argv("distill", data, tmp_path / "a")
    argv[argv.index("--train-data") + 1] = str(tmp_path / "nowhere-{0..3}.tar")
    assert main(argv) == 1
    assert "nowhere-0.tar" in _one_error_line(capsys)
    # empty data: a shard without samples
    empty = tmp_path / "empty"
    empty.mkdir()
    tarfile.open(empty / "e-0.tar", "w").close()
    argv = stage_argv("align", data, tmp_path / "b")
    argv[argv.index("--train-data") + 1] = str(empty)
    assert main(argv) == 1
    assert "0 samples do not fill one step" in _one_error_line(capsys)
    # teacher and student disagree: the teacher is not the --model config
    other = dict(TINY_CFG, embed_dim=8)
    (tmp_path / "other.json").write_text(json.dumps(other))
    argv = stage_argv("distill", data, tmp_path / "c", "--model", str(tmp_path / "other.json"))
    assert main(argv) == 1
    assert "does not match the model config" in _one_error_line(capsys)
    # GS samples whose RGB originals are missing
    argv = stage_argv("distill", data, tmp_path / "d")
    argv[argv.index("--rgb-data") + 1] = str(data / "rgb" / "s-0.tar")  # half of the keys
    assert main([*argv, "--epochs", "2"]) == 1
    assert "is not in the indexed shards" in _one_error_line(capsys)


def test_console_script_exit_status(data, tmp_path):
    """The installed ``gscodec-train`` exits 0 after a run, 1 with one line on bad input."""
    script = Path(sys.executable).with_name("gscodec-train")
    assert script.is_file(), "gscodec is not installed with its console script"
    ok = subprocess.run(
        [str(script), *stage_argv("distill", data, tmp_path / "ok")], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "ok" / "checkpoints" / "epoch_1.pt").is_file()
    argv = stage_argv("distill", data, tmp_path / "bad")
    argv[argv.index("--teacher") + 1] = str(tmp_path / "no-teacher.pt")
    bad = subprocess.run([str(script), *argv], capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1] == (
        "gscodec-train distill: error: pretrained must be an existing local checkpoint file, "
        f"got {str(tmp_path / 'no-teacher.pt')!r}"
    )
    assert "Traceback" not in bad.stderr


def test_sample_count_comes_from_sizes_json(data, tmp_path):
    from gscodec.clip.data import count_samples

    shards = tmp_path / "gs"
    shutil.copytree(data / "gs", shards)
    assert count_samples(shards) == 24  # made by hand: counted from the tar headers
    # encode-dataset writes sizes.json; a deliberately different count proves it is read.
    (shards / "sizes.json").write_text(json.dumps({"s-0.tar": 5, "s-1.tar": 7}))
    assert count_samples(shards) == 12


def test_shard_stream_uses_the_dataset_dictionary(tmp_path):
    """GS shards written with a shared dictionary (as ``encode-dataset --dictionary``
    leaves them: ``gsi.dict`` beside the shards) load through ShardStream."""
    from gscodec.clip.data import ShardStream, iter_eval_samples
    from gscodec.errors import GSIError

    rng = np.random.default_rng(1)
    splats = [gscodec.Splats.from_array(rng.random((64, 8)).astype(np.float32), 16, 16)
              for _ in range(12)]
    dictionary = gsi_format.train_dictionary(gsi_format.dumps(s) for s in splats)
    files = [gsi_format.dumps(s, dictionary=dictionary) for s in splats]
    assert gsi_format.read_header(io.BytesIO(files[0])).dictionary_id == dictionary.dict_id()
    with tarfile.open(tmp_path / "s-0.tar", "w") as tar:
        for i, data in enumerate(files):
            _add(tar, f"k{i:02d}.gsi", data)
    (tmp_path / "gsi.dict").write_bytes(dictionary.as_bytes())
    expected = [gsi_format.loads(data, dictionary) for data in files]
    stream = ShardStream(tmp_path, lambda sample, _: sample["gsi"], shuffle=False, repeat=False)
    assert list(stream) == expected
    assert [s["gsi"] for s in iter_eval_samples(tmp_path)[0]] == expected
    (tmp_path / "gsi.dict").unlink()
    with pytest.raises(GSIError, match="dictionary with id"):
        list(stream)


def _first_batch(stage):
    loader = torch.utils.data.DataLoader(stage.dataset, batch_size=8, collate_fn=stage.collate)
    return next(iter(loader))


def test_augmented_distill_shows_the_teacher_the_same_view(data, tmp_path):
    """--aug-flip 1: the splats and the teacher's image are both mirrored."""
    from gscodec.clip.augment import View, augment_image
    from gscodec.clip.data import TarIndex, decode_image
    from gscodec.datasets import iter_samples

    only_flip = ("--aug-flip", "1", "--aug-min-crop", "1", "--aug-jitter", "0", "--aug-dropout", "0")
    args = build_parser().parse_args(stage_argv("distill", data, tmp_path, *only_flip))
    stage = build_stage(args)
    stage.dataset.shuffle = False
    splats, image = next(iter(stage.dataset))
    sample = next(iter(iter_samples(data / "gs")))
    original = sample["gsi"].to_array()
    np.testing.assert_allclose(splats[:, 0], 1 - original[:, 0])
    np.testing.assert_allclose(splats[:, 3], -original[:, 3])
    preprocess = open_clip.image_transform(16, is_train=False)
    rgb = decode_image(TarIndex(data / "rgb")[sample["__key__"]])
    torch.testing.assert_close(image, preprocess(augment_image(rgb, View(flip=True))))
    assert not torch.allclose(image, preprocess(rgb))


def test_token_distillation_matches_hidden_tokens(data, tmp_path):
    """The student's captured tokens come from the layer asked for, the teacher's likewise;
    an RGB-initialized student whose stem reproduced the patch tokens would score 0."""
    from gscodec.clip.model import capture_tokens, create_rgb_model

    argv = stage_argv("distill", data, tmp_path, "--distill-tokens", "grid")
    stage = build_stage(build_parser().parse_args(argv))
    features = stage.forward(stage.model, _first_batch(stage))
    assert features["student_tokens"].shape == (8, 5, 32)  # class + 4 resampler tokens
    assert features["teacher_tokens"].shape == (8, 5, 32)  # class + 2x2 patches
    teacher = create_rgb_model(TINY_CFG, data / "teacher.pt")
    images = torch.zeros(2, 3, 16, 16)
    with capture_tokens(teacher.visual, 3) as last:
        teacher.visual(images)
    with capture_tokens(teacher.visual, 2) as second:
        teacher.visual(images)
    assert not torch.allclose(last[0], second[0])
    with pytest.raises(ValueError, match="token layer must be in 0..3"):
        with capture_tokens(teacher.visual, 4):
            pass


def test_embed_then_distill_without_rgb(data, tmp_path):
    """Stored targets equal the live teacher's; distill on them needs no --rgb-data."""
    out = tmp_path / "emb"
    argv = ["embed", "--train-data", str(data / "rgb"), "--teacher", str(data / "teacher.pt")]
    argv += ["--output", str(out), "--batch-size", "5"]  # a partial last batch too
    assert main(argv) == 0
    assert sorted(p.name for p in out.glob("*.tar")) == ["s-0.tar", "s-1.tar"]
    meta = json.loads((out / "teacher_embeddings.json").read_text())
    assert meta["views"] == 1 and meta["embed_dim"] == 16 and meta["token_layer"] is None

    none = ("--aug-flip", "0", "--aug-min-crop", "1", "--aug-jitter", "0", "--aug-dropout", "0")
    live = build_stage(build_parser().parse_args(stage_argv("distill", data, tmp_path / "a", *none)))
    argv = stage_argv("distill", data, tmp_path / "b", "--teacher-embeddings", str(out),
                      "--aug-dropout", "0")
    del argv[argv.index("--rgb-data") : argv.index("--rgb-data") + 2]
    stored = build_stage(build_parser().parse_args(argv))
    assert stored.helpers == []  # no teacher model at all
    a, b = _first_batch(live), _first_batch(stored)
    torch.testing.assert_close(a[0], b[0])  # same splats, same order
    fa, fb = live.forward(live.model, a), stored.forward(stored.model, b)
    torch.testing.assert_close(fa["teacher"], fb["teacher"], atol=1e-5, rtol=1e-4)
    assert main(argv) == 0
    assert (tmp_path / "b" / "checkpoints" / "epoch_1.pt").is_file()


def test_embed_augmented_views_and_tokens(data, tmp_path):
    from gscodec.clip.augment import augment_image
    from gscodec.clip.data import TarIndex, decode_image
    from gscodec.clip.embed import TeacherEmbeddings
    from gscodec.clip.model import create_rgb_model

    out = tmp_path / "emb"
    argv = ["embed", "--train-data", str(data / "rgb"), "--teacher", str(data / "teacher.pt")]
    argv += ["--output", str(out), "--views", "3", "--aug-flip", "0.5", "--aug-min-crop", "0.6"]
    argv += ["--aug-jitter", "0.3", "--token-layer", "2", "--seed", "4"]
    assert main(argv) == 0
    stored = TeacherEmbeddings(out)
    embedding, views, tokens = stored["0_000"]
    assert embedding.shape == (3, 16) and tokens.shape == (3, 5, 32) and len(views) == 3
    assert views[0].side == 1 and not views[0].flip and views[1] != views[2]
    teacher = create_rgb_model(TINY_CFG, data / "teacher.pt").eval()
    preprocess = open_clip.image_transform(16, is_train=False)
    image = decode_image(TarIndex(data / "rgb")["0_000"])
    with torch.no_grad():
        expected = teacher.encode_image(
            torch.stack([preprocess(augment_image(image, v)) for v in views])
        )
    np.testing.assert_allclose(embedding, expected.numpy(), atol=1e-5, rtol=1e-4)
    # rerunning with the same seed gives the same views
    assert main([*argv[:6], str(tmp_path / "again"), *argv[7:]]) == 0
    assert TeacherEmbeddings(tmp_path / "again")["0_000"][1] == views

    base = stage_argv("distill", data, tmp_path / "run", "--teacher-embeddings", str(out))
    del base[base.index("--rgb-data") : base.index("--rgb-data") + 2]
    assert main([*base, "--distill-tokens", "pooled", "--distill-tokens-layer", "2"]) == 0
    with pytest.raises(ValueError, match="tokens after block 3"):
        build_stage(build_parser().parse_args([*base, "--distill-tokens", "grid",
                                               "--distill-tokens-layer", "3"]))
    with pytest.raises(ValueError, match="only --aug-dropout"):
        build_stage(build_parser().parse_args([*base, "--aug-flip", "0.5"]))
    no_targets = stage_argv("distill", data, tmp_path / "none")
    del no_targets[no_targets.index("--rgb-data") : no_targets.index("--rgb-data") + 2]
    with pytest.raises(ValueError, match="--rgb-data .* or --teacher-embeddings"):
        build_stage(build_parser().parse_args(no_targets))


def test_paper_v2_recipe_runs_both_stages(data, tmp_path):
    """Stage 1 trains only the stem (in NAME-distill), stage 2 aligns from it (in NAME)."""
    out = tmp_path / "v2"
    assert main(stage_argv("distill", data, out, "--recipe", "paper-v2", "--epochs", "1",
                           "--align-epochs", "1")) == 0
    first = torch.load(tmp_path / "v2-distill" / "checkpoints" / "epoch_1.pt", weights_only=True)
    final = torch.load(out / "checkpoints" / "epoch_1.pt", weights_only=True)
    assert first["stage"] == "distill" and final["stage"] == "align"
    teacher = torch.load(data / "teacher.pt", weights_only=True)["state_dict"]
    for key in ("visual.transformer.resblocks.0.attn.in_proj_weight", "visual.proj"):
        torch.testing.assert_close(first["state_dict"][key], teacher[key])  # frozen in stage 1
    assert not torch.equal(final["state_dict"]["visual.proj"], teacher["visual.proj"])
    stem = "visual.stem.proj.weight"
    assert not torch.equal(first["state_dict"][stem], final["state_dict"][stem])
    assert final["args"]["pretrained"].endswith("v2-distill/checkpoints/epoch_1.pt")


def test_augmentation_defaults(data, tmp_path):
    """No stage augments unless asked (the second ablation pass); a flag sets only its own field."""
    from gscodec.clip.augment import SplatAugment
    from gscodec.clip.train import _augment

    distill = build_parser().parse_args(stage_argv("distill", data, tmp_path))
    assert _augment(distill) == SplatAugment() and not SplatAugment().enabled
    changed = build_parser().parse_args(stage_argv("distill", data, tmp_path, "--aug-flip", "0.5"))
    assert _augment(changed) == SplatAugment(flip=0.5)
    align = build_parser().parse_args(stage_argv("align", data, tmp_path))
    assert _augment(align) == SplatAugment()
