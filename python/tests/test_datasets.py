"""gscodec.datasets: encode-dataset pipeline (inputs, shards, resume, ranks) and reader."""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import zstandard
from PIL import Image

import gscodec
from gscodec.datasets import (
    GSIShardDataset,
    encode_dataset,
    expand_paths,
    expand_shards,
    iter_samples,
    plan_shards,
    rank_from_env,
)
from gscodec import cli
from gscodec import format as gsi_format
from gscodec.datasets.pipeline import resize_center_crop
from gscodec.datasets.pipeline import ImageBar
from gscodec.errors import GSIError

from conftest import SHARED_DATA

CIFAR_SHARD = SHARED_DATA / "cifar10_train_wds" / "cifar10-train-00000.tar"
#: Tiny, fast settings: 8x8 images, 4 splats, a few iterations.
FAST = dict(splats=4, iterations=5, size=None, progress=False)
#: Manifest fields that record timing, the only ones that differ between runs.
TIMING = ("seconds", "images_per_s")


def image_bytes(seed: int, size: tuple[int, int] = (8, 8), fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def write_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> Path:
    """A webdataset shard: members ``key.ext`` in the order given."""
    with tarfile.open(path, "w") as tar:
        for key, files in samples:
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def make_shards(folder: Path, n_shards: int, per_shard: int, prefix: str = "in") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(n_shards):
        samples = [
            (f"s{s}_{i:03d}", {"png": image_bytes(100 * s + i), "cls": str(i % 3).encode()})
            for i in range(per_shard)
        ]
        paths.append(write_tar(folder / f"{prefix}-{s:05d}.tar", samples))
    return paths


def tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def manifest(path: Path) -> dict:
    return json.loads(path.read_text())


def assert_same_output(a: Path, b: Path) -> None:
    """Same shard bytes and same manifests except for timing."""
    shards_a = sorted(p.name for p in a.glob("*.tar"))
    assert shards_a == sorted(p.name for p in b.glob("*.tar"))
    for name in shards_a:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    for m in a.glob("*.manifest.json"):
        ma, mb = manifest(m), manifest(b / m.name)
        for field in TIMING:
            ma.pop(field), mb.pop(field)
        ma["source"].pop("path"), mb["source"].pop("path")
        assert ma == mb
    assert not list(a.glob("*.partial")) and not list(a.glob(".*.tmp"))


# --------------------------------------------------------------------------- inputs


def test_expand_braces_globs_and_errors(tmp_path):
    paths = make_shards(tmp_path, 4, 1)
    assert expand_paths(str(tmp_path / "in-{00001..00003}.tar")) == [str(p) for p in paths[1:]]
    assert expand_paths(str(tmp_path / "in-{00002,00000}.tar")) == [str(paths[2]), str(paths[0])]
    assert expand_paths(str(tmp_path / "*.tar")) == [str(p) for p in paths]
    # Repeats are dropped, order of first mention kept.
    both = expand_paths([str(paths[3]), str(tmp_path / "*.tar")])
    assert both == [str(paths[3]), str(paths[0]), str(paths[1]), str(paths[2])]
    assert expand_shards(tmp_path) == [str(p) for p in paths]
    with pytest.raises(FileNotFoundError, match="in-00004.tar"):
        expand_paths(str(tmp_path / "in-{00000..00009}.tar"))
    with pytest.raises(FileNotFoundError, match="no files match"):
        expand_paths(str(tmp_path / "*.zip"))
    with pytest.raises(ValueError, match="unbalanced"):
        expand_paths(str(tmp_path / "in-{0..1.tar"))


def test_plan_names_are_deterministic(tmp_path):
    make_shards(tmp_path / "a", 2, 1, prefix="x")
    make_shards(tmp_path / "b", 1, 1, prefix="x")
    plan = plan_shards(str(tmp_path / "a" / "*.tar"), shard_size=10)
    assert [t.name for t in plan.tasks] == ["x-00000", "x-00001"]
    with pytest.raises(ValueError, match="both map to output shard x-00000.tar"):
        plan_shards([str(tmp_path / "a" / "x-00000.tar"), str(tmp_path / "b" / "x-00000.tar")], 10)
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(ValueError, match="notes.txt.*image,caption"):
        plan_shards(str(tmp_path / "notes.txt"), 10)


# --------------------------------------------------------------------------- encode + read back


def test_tar_shard_roundtrip_passes_side_files(tmp_path):
    side = {"cls": b"7", "txt": "a caption ü".encode(), "json": b'{"url": "x"}'}
    samples = [(f"k{i}", {"jpg": image_bytes(i, fmt="JPEG"), **side}) for i in range(5)]
    shard = write_tar(tmp_path / "data-00000.tar", samples)
    (tmp_path / "classes.txt").write_text("a\nb\n")
    out = tmp_path / "out"
    summary = encode_dataset(shard, out, **FAST)

    members = tar_members(out / "data-00000.tar")
    exts = ("gsi", "cls", "txt", "json")
    assert sorted(members) == sorted(f"k{i}.{e}" for i in range(5) for e in exts)
    for i in range(5):
        for ext, data in side.items():
            assert members[f"k{i}.{ext}"] == data
    m = manifest(out / "data-00000.manifest.json")
    assert m["count"] == 5 and m["failures"] == 0
    assert m["bytes"] == (out / "data-00000.tar").stat().st_size
    assert m["settings"] == {"splats": 4, "iterations": 5, "size": "native", "precision": "fp16"}
    assert 0 < m["psnr_min"] <= m["psnr_mean"]
    assert (out / "classes.txt").read_text() == "a\nb\n"
    assert summary["count"] == 5 and summary["shards_complete"] == 1 and not summary["errors"]
    assert manifest(out / "summary.json")["count"] == 5

    got = list(iter_samples(out / "data-00000.tar"))
    assert [s["__key__"] for s in got] == [f"k{i}" for i in range(5)]
    for s in got:
        assert isinstance(s["gsi"], gscodec.Splats) and (s["gsi"].width, s["gsi"].height) == (8, 8)
        assert len(s["gsi"]) <= 4 and s["cls"] == b"7" and s["__shard__"].endswith("data-00000.tar")
    raw = next(iter_samples(out / "data-00000.tar", decode_gsi=False))
    assert raw["gsi"] == members["k0.gsi"]


@pytest.mark.parametrize("precision", ["q7", "auto"])
def test_quantized_files_are_what_encode_writes(tmp_path, precision):
    # A quantized precision gets the encoder's finish, and "auto" the grids
    # `gscodec.encode` picks with no precision: the same bytes as encode's.
    smooth = [np.asarray(Image.open(io.BytesIO(image_bytes(i, (6, 6)))).resize(
        (24, 24), Image.BILINEAR)) for i in range(3)]
    samples = []
    for i, pixels in enumerate(smooth):
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        samples.append((f"k{i}", {"png": buf.getvalue()}))
    shard = write_tar(tmp_path / "data-00000.tar", samples)
    out = tmp_path / "out"
    encode_dataset(shard, out, splats=12, iterations=30, size=None, progress=False,
                   precision=precision)
    members = tar_members(out / "data-00000.tar")
    for i, pixels in enumerate(smooth):
        encoded = gscodec.encode(pixels, n_splats=12, iterations=30,
                                 precision=None if precision == "auto" else precision)
        assert members[f"k{i}.gsi"] == encoded.tobytes()
    assert manifest(out / "data-00000.manifest.json")["settings"]["precision"] == precision


def test_bad_images_are_counted_and_skipped(tmp_path):
    good = image_bytes(1, fmt="JPEG")
    samples = [
        ("good", {"jpg": good, "cls": b"1"}),
        ("garbage", {"jpg": b"this is not an image", "cls": b"1"}),
        ("empty", {"png": b"", "cls": b"1"}),
        ("truncated", {"jpg": good[: len(good) // 2], "cls": b"1"}),
        ("label_only", {"cls": b"1"}),
        ("tiny", {"png": image_bytes(2, size=(1, 1))}),
        ("good", {"png": image_bytes(3)}),  # same key again, later in the shard
        ("good2", {"png": image_bytes(4)}),
    ]
    shard = write_tar(tmp_path / "bad-00000.tar", samples)
    summary = encode_dataset(shard, tmp_path / "out", **FAST)
    m = manifest(tmp_path / "out" / "bad-00000.manifest.json")
    assert m["count"] == 2 and m["failures"] == 6 and summary["failures"] == 6
    reasons = {f["key"]: f["error"] for f in m["failed"]}
    assert set(reasons) == {"garbage", "empty", "truncated", "label_only", "tiny", "good"}
    assert "empty" in reasons["empty"] and "decode" in reasons["garbage"]
    assert "no image" in reasons["label_only"] and "fewer pixels" in reasons["tiny"]
    assert "duplicate" in reasons["good"]
    assert [s["__key__"] for s in iter_samples(tmp_path / "out")] == ["good", "good2"]


def test_unreadable_input_shard_is_reported_not_published(tmp_path, capsys):
    good = make_shards(tmp_path, 1, 2)[0]
    samples = [(f"k{i}", {"png": image_bytes(i)}) for i in range(4)]
    data = write_tar(tmp_path / "cut-00000.tar", samples)
    data.write_bytes(data.read_bytes()[:1300])  # cut inside the second member
    out = tmp_path / "out"
    summary = encode_dataset(str(tmp_path / "*.tar"), out, **FAST)
    assert "cut-00000" in summary["errors"] and summary["shards_incomplete"] == ["cut-00000"]
    assert not (out / "cut-00000.tar").exists() and not list(out.glob("*.partial"))
    assert manifest(out / f"{good.stem}.manifest.json")["count"] == 2
    code = cli.main(["encode-dataset", str(tmp_path / "*.tar"), "-o", str(out), "-n", "4",
                             "--iterations", "5", "--native", "-q"])
    assert code == 1 and "cut-00000: not encoded" in capsys.readouterr().err


def test_resize_center_crop_like_clip():
    image = Image.fromarray(np.arange(40 * 20 * 3, dtype=np.uint8).reshape(20, 40, 3))
    out = resize_center_crop(image, 10)
    assert out.size == (10, 10)
    # torchvision: Resize(10) -> 20x10, CenterCrop(10) -> columns 5..15.
    expect = image.resize((20, 10), Image.Resampling.BICUBIC).crop((5, 0, 15, 10))
    assert np.array_equal(np.asarray(out), np.asarray(expect))


def test_size_option_resizes_before_fitting(tmp_path):
    shard = write_tar(tmp_path / "big-00000.tar", [("a", {"png": image_bytes(0, size=(24, 12))})])
    encode_dataset(shard, tmp_path / "out", **{**FAST, "size": 6})
    splats = next(iter_samples(tmp_path / "out"))["gsi"]
    assert (splats.width, splats.height) == (6, 6)


# --------------------------------------------------------------------------- folders and CSV


def test_image_folder_input(tmp_path):
    root = tmp_path / "pets"
    for cls, n in (("dog", 3), ("cat", 2)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            (root / cls / f"{i:04d}.png").write_bytes(image_bytes(i + 10 * n))
    (root / "dog" / "0001.txt").write_text("a dog")
    (root / "README.md").write_text("not an image")
    out = tmp_path / "out"
    summary = encode_dataset(root, out, shard_size=2, **FAST)
    assert sorted(p.name for p in out.glob("*.tar")) == [f"pets-0000{i}.tar" for i in range(3)]
    assert (out / "classes.txt").read_text() == "cat\ndog\n"
    got = {s["__key__"]: s for s in iter_samples(out / "pets-{00000..00002}.tar")}
    assert sorted(got) == ["cat_0000", "cat_0001", "dog_0000", "dog_0001", "dog_0002"]
    assert got["cat_0001"]["cls"] == b"0" and got["dog_0000"]["cls"] == b"1"
    assert got["dog_0001"]["txt"] == b"a dog" and "txt" not in got["dog_0000"]
    assert summary["count"] == 5

    # A classes.txt shipped with the folder fixes the label order.
    (root / "classes.txt").write_text("dog\ncat\n")
    encode_dataset(root, tmp_path / "out2", shard_size=10, **FAST)
    got = {s["__key__"]: s["cls"] for s in iter_samples(tmp_path / "out2")}
    assert got["dog_0000"] == b"0" and got["cat_0000"] == b"1"


def test_csv_input_groups_captions(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "images" / name).write_bytes(image_bytes(len(name) + ord(name[0]), fmt="JPEG"))
    csv_path = tmp_path / "captions.txt"
    csv_path.write_text(
        "image,caption\n"
        "a.jpg,A red thing .\n"
        'b.jpg,"Blue, with a comma ."\n'
        "a.jpg,Another caption .\n"
        "missing.jpg,Nobody home .\n"
    )
    out = tmp_path / "out"
    summary = encode_dataset(csv_path, out, **FAST)
    got = {s["__key__"]: s for s in iter_samples(out / "captions-00000.tar")}
    assert list(got) == ["a", "b"]
    assert got["a"]["txt"] == "A red thing .\nAnother caption .".encode()
    assert got["b"]["txt"] == b"Blue, with a comma ."
    assert summary["failures"] == 1
    assert manifest(out / "captions-00000.manifest.json")["failed"][0]["key"] == "missing"


# --------------------------------------------------------------------------- reliability


def test_resume_after_crash_matches_a_clean_run(tmp_path, monkeypatch):
    inputs = make_shards(tmp_path / "in", 3, 6)
    pattern = str(tmp_path / "in" / "in-{00000..00002}.tar")
    clean = tmp_path / "clean"
    encode_dataset(pattern, clean, batch_size=4, **FAST)

    out = tmp_path / "out"
    real_fit, calls = gscodec.fit, []

    def dying_fit(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # second batch of the second shard
            raise KeyboardInterrupt
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(gscodec, "fit", dying_fit)
    with pytest.raises(KeyboardInterrupt):
        encode_dataset(pattern, out, batch_size=4, **FAST)
    monkeypatch.setattr(gscodec, "fit", real_fit)
    assert (out / "in-00000.manifest.json").exists() and not (out / "in-00001.tar").exists()
    # What a SIGKILL leaves: a half-written partial file, and a tar renamed without a manifest.
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()  # a writer pid that no longer runs
    partial = f".in-00001.tar.{socket.gethostname()}-{dead.pid}-00000000.partial"
    (out / partial).write_bytes(b"half a tar")
    (out / "in-00002.tar").write_bytes((clean / "in-00002.tar").read_bytes()[:1000])
    first_mtime = (out / "in-00000.tar").stat().st_mtime_ns

    summary = encode_dataset(pattern, out, batch_size=4, **FAST)
    assert summary["run"]["shards_skipped"] == 1 and summary["run"]["shards_encoded"] == 2
    assert (out / "in-00000.tar").stat().st_mtime_ns == first_mtime
    assert_same_output(out, clean)
    assert len(inputs) == summary["shards_complete"] == 3 and summary["count"] == 18


def test_sigkill_mid_run_then_rerun(tmp_path):
    inputs = make_shards(tmp_path / "in", 3, 12)
    # The last input is a named pipe nobody writes to: the run blocks there,
    # after finishing two shards, however fast the machine.
    real = inputs[2].rename(tmp_path / "real.tar")
    os.mkfifo(inputs[2])
    args = [str(tmp_path / "in" / "*.tar"), "-n", "16", "--iterations", "20", "--native",
            "--batch-size", "5", "-q"]
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "gscodec.cli", "encode-dataset", *args, "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not list(out.glob(".in-00002.tar.*.partial")) if out.is_dir() else True:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the run never reached the third shard"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (out / "in-00001.manifest.json").exists() and not (out / "in-00002.tar").exists()
    inputs[2].unlink()
    real.rename(inputs[2])

    assert cli.main(["encode-dataset", *args, "-o", str(out)]) == 0
    clean = tmp_path / "clean"
    assert cli.main(["encode-dataset", *args, "-o", str(clean)]) == 0
    assert_same_output(out, clean)
    keys = [s["__key__"] for s in iter_samples(out, decode_gsi=False)]
    assert len(keys) == len(set(keys)) == 36


def test_rerun_with_other_settings_is_refused(tmp_path):
    shard = make_shards(tmp_path, 1, 2)[0]
    encode_dataset(shard, tmp_path / "out", **FAST)
    with pytest.raises(ValueError, match=r"in-00000.tar was made .*'splats': 4.*'splats': 5"):
        encode_dataset(shard, tmp_path / "out", **{**FAST, "splats": 5})


def test_workers_give_the_same_output(tmp_path):
    make_shards(tmp_path / "in", 3, 4)
    encode_dataset(str(tmp_path / "in" / "*.tar"), tmp_path / "one", **FAST)
    summary = encode_dataset(str(tmp_path / "in" / "*.tar"), tmp_path / "two", workers=2, **FAST)
    assert summary["run"]["workers"] == 2 and summary["count"] == 12
    assert_same_output(tmp_path / "two", tmp_path / "one")


# --------------------------------------------------------------------------- ranks


def test_rank_from_env():
    assert rank_from_env({}) == (0, 1, None)
    assert rank_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (3, 4, 1)
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}
    assert rank_from_env(slurm) == (5, 8, 1)
    both = {"RANK": "1", "WORLD_SIZE": "2", "SLURM_PROCID": "5", "SLURM_NTASKS": "8"}
    assert rank_from_env(both) == (1, 2, None)
    with pytest.raises(ValueError, match="RANK"):
        rank_from_env({"RANK": "x", "WORLD_SIZE": "2"})


@pytest.mark.parametrize("launcher", ["torchrun", "slurm"])
def test_two_ranks_split_shards_without_overlap_or_gap(tmp_path, monkeypatch, launcher):
    make_shards(tmp_path / "in", 5, 2)
    out = tmp_path / "out"
    done = []
    for rank in (0, 1):
        names = (("RANK", "WORLD_SIZE", "LOCAL_RANK") if launcher == "torchrun"
                 else ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"))
        env = dict(zip(names, (str(rank), "2", str(rank))))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        before = set(out.glob("*.tar")) if out.exists() else set()
        summary = encode_dataset(str(tmp_path / "in" / "*.tar"), out, device="cpu", **FAST)
        done.append({p.name for p in set(out.glob("*.tar")) - before})
        assert summary["run"]["rank"] == rank and summary["run"]["world_size"] == 2
    assert done[0] == {"in-00000.tar", "in-00002.tar", "in-00004.tar"}
    assert done[1] == {"in-00001.tar", "in-00003.tar"}
    assert manifest(out / "summary.json")["shards_complete"] == 5

    # The reader splits the same way.
    seen = [[s["__key__"] for s in iter_samples(out, rank=r, world_size=2, decode_gsi=False)]
            for r in (0, 1)]
    assert not set(seen[0]) & set(seen[1]) and len(seen[0]) + len(seen[1]) == 10


# --------------------------------------------------------------------------- dry run, CLI


def test_dry_run_writes_nothing(tmp_path, capsys):
    make_shards(tmp_path / "in", 2, 2)
    out = tmp_path / "out"
    plan = encode_dataset(str(tmp_path / "in" / "*.tar"), out, dry_run=True, **FAST)
    assert not out.exists()
    assert [p["action"] for p in plan["plan"]] == ["encode", "encode"]
    assert "in-00001.tar" in capsys.readouterr().out
    encode_dataset(tmp_path / "in" / "in-00000.tar", out, **FAST)
    plan = encode_dataset(str(tmp_path / "in" / "*.tar"), out, dry_run=True, **FAST)
    assert [p["action"] for p in plan["plan"]] == ["skip", "encode"]
    assert "skip (complete)" in capsys.readouterr().out


def test_cli_register_and_errors(tmp_path, capsys):
    parser = cli.build_parser()
    shard = make_shards(tmp_path, 1, 2)[0]
    args = parser.parse_args(["encode-dataset", str(shard), "-o", str(tmp_path / "out"),
                              "--splats", "4", "--iterations", "5", "--native", "-q"])
    assert args.func(args) == 0
    assert "2 images" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["encode-dataset", str(shard), "-o", "x", "-n", "4", "--native",
                           "--size", "64"])
    args = parser.parse_args(["encode-dataset", str(tmp_path / "nope-*.tar"), "-o", "x", "-n", "4"])
    with pytest.raises(FileNotFoundError, match=r"nope-\*.tar"):
        args.func(args)
    assert cli.main(["encode-dataset", str(shard), "-o", "x", "-n", "4", "--precision", "fp7"]) == 1
    err = capsys.readouterr().err
    assert "precision 'fp7'" in err and "'auto'" in err


# --------------------------------------------------------------------------- dictionary

#: Enough splats that zstd frames (and so the dictionary) pay off on 8x8 images.
DICT_OPTS = {**FAST, "splats": 16}


def gsi_members(out: Path) -> dict[str, bytes]:
    return {name[: -len(".gsi")]: data for shard in sorted(out.glob("*.tar"))
            for name, data in tar_members(shard).items() if name.endswith(".gsi")}


def test_dictionary_round_trip_resume_and_cli(tmp_path, capsys):
    make_shards(tmp_path / "in", 2, 12)
    pattern, out = str(tmp_path / "in" / "*.tar"), tmp_path / "out"
    assert cli.main(["encode-dataset", pattern, "-o", str(out), "-n", "16", "--iterations", "5",
                     "--native", "-q", "--dictionary"]) == 0
    dictionary = zstandard.ZstdCompressionDict((out / "gsi.dict").read_bytes())
    dict_id = dictionary.dict_id()
    summary = manifest(out / "summary.json")
    assert dict_id and summary["settings"]["dictionary_id"] == dict_id
    assert summary["dictionary"] == "gsi.dict" and summary["count"] == 24
    assert manifest(out / "in-00001.manifest.json")["settings"]["dictionary_id"] == dict_id
    files = gsi_members(out)
    ids = [gsi_format.read_header(io.BytesIO(data)).dictionary_id for data in files.values()]
    assert dict_id in ids and set(ids) <= {0, dict_id}  # used where it pays, raw elsewhere
    got = {s["__key__"]: s["gsi"] for s in iter_samples(out)}
    assert got == {key: gsi_format.loads(data, dictionary) for key, data in files.items()}
    assert [s["__key__"] for s in GSIShardDataset(out)] == sorted(files)

    # Resume: a redone shard is written with the same dictionary, byte for byte.
    before = (out / "in-00001.tar").read_bytes()
    (out / "in-00001.manifest.json").unlink()
    summary = encode_dataset(pattern, out, dictionary=True, **DICT_OPTS)
    assert summary["run"]["shards_encoded"] == 1 and summary["run"]["shards_skipped"] == 1
    assert (out / "in-00001.tar").read_bytes() == before
    assert zstandard.ZstdCompressionDict((out / "gsi.dict").read_bytes()).dict_id() == dict_id
    # Shards made with the dictionary are not mixed with shards made without one.
    with pytest.raises(ValueError, match="dictionary_id"):
        encode_dataset(pattern, out, **DICT_OPTS)
    capsys.readouterr()


def test_dictionary_missing_or_wrong_is_a_clear_error(tmp_path):
    make_shards(tmp_path / "in", 1, 12)
    out = tmp_path / "out"
    encode_dataset(tmp_path / "in" / "in-00000.tar", out, dictionary=True, **DICT_OPTS)
    right = (out / "gsi.dict").read_bytes()
    dict_id = zstandard.ZstdCompressionDict(right).dict_id()

    (out / "gsi.dict").unlink()
    with pytest.raises(GSIError, match=f"dictionary with id {dict_id}; none was given"):
        list(iter_samples(out))
    # Without the dictionary, the raw bytes are still readable.
    assert len(list(iter_samples(out, decode_gsi=False))) == 12

    other = gsi_format.train_dictionary(
        gsi_format.dumps(gscodec.Splats.from_array(np.random.default_rng(i).random((8, 8)), 4, 4))
        for i in range(12))
    assert other.dict_id() != dict_id
    (out / "gsi.dict").write_bytes(other.as_bytes())
    with pytest.raises(GSIError, match=f"id {dict_id}, got id {other.dict_id()}"):
        list(iter_samples(out))

    (out / "gsi.dict").write_bytes(b"not a dictionary")
    with pytest.raises(GSIError, match="not a zstd dictionary"):
        list(iter_samples(out))
    # Encoding into a folder whose dictionary is damaged is refused too.
    with pytest.raises(GSIError, match="not a zstd dictionary"):
        encode_dataset(tmp_path / "in" / "in-00000.tar", out, dictionary=True, **DICT_OPTS)

    (out / "gsi.dict").write_bytes(right)
    assert len(list(iter_samples(out))) == 12


def test_dictionary_is_trained_by_rank_0_and_shared(tmp_path, monkeypatch):
    from gscodec.datasets import pipeline

    make_shards(tmp_path / "in", 3, 12)
    pattern, out = str(tmp_path / "in" / "*.tar"), tmp_path / "out"
    opts = dict(dictionary=True, world_size=2, device="cpu", **DICT_OPTS)
    monkeypatch.setattr(pipeline, "DICTIONARY_WAIT_S", 0.0)
    with pytest.raises(TimeoutError, match="rank 0 did not write"):
        encode_dataset(pattern, out, rank=1, **opts)
    assert not list(out.glob("*.tar"))
    encode_dataset(pattern, out, rank=0, **opts)
    summary = encode_dataset(pattern, out, rank=1, **opts)
    dict_id = zstandard.ZstdCompressionDict((out / "gsi.dict").read_bytes()).dict_id()
    assert summary["shards_complete"] == 3 and summary["settings"]["dictionary_id"] == dict_id
    assert {manifest(m)["settings"]["dictionary_id"] for m in out.glob("*.manifest.json")} \
        == {dict_id}
    assert len(list(iter_samples(out))) == 36


def test_dictionary_needs_enough_images(tmp_path):
    shard = make_shards(tmp_path / "in", 1, 3)[0]
    with pytest.raises(ValueError, match="cannot train on shard in-00000"):
        encode_dataset(shard, tmp_path / "out", dictionary=True, **DICT_OPTS)
    assert not (tmp_path / "out" / "gsi.dict").exists()


# --------------------------------------------------------------------------- reader


def test_reader_shuffle_split_and_epochs(tmp_path):
    make_shards(tmp_path, 4, 5)
    ordered = [s["__key__"] for s in iter_samples(tmp_path, decode_gsi=False)]
    assert len(ordered) == 20
    a = [s["__key__"] for s in iter_samples(tmp_path, shuffle=True, seed=1, buffer_size=4)]
    b = [s["__key__"] for s in iter_samples(tmp_path, shuffle=True, seed=1, buffer_size=4)]
    assert a == b and sorted(a) == sorted(ordered) and a != ordered
    dataset = GSIShardDataset(tmp_path, shuffle=True, seed=1, buffer_size=4)
    first = [s["__key__"] for s in dataset]
    dataset.set_epoch(1)
    assert first == a and [s["__key__"] for s in dataset] != first
    with pytest.raises(TypeError):
        GSIShardDataset(tmp_path, shufle=True)
    with pytest.raises(ValueError, match="rank"):
        iter_samples(tmp_path, rank=2, world_size=2)


def test_reader_bad_gsi_raises_or_skips(tmp_path):
    shard = make_shards(tmp_path / "in", 1, 2)[0]
    encode_dataset(shard, tmp_path / "out", **FAST)
    members = tar_members(tmp_path / "out" / "in-00000.tar")
    members["s0_000.gsi"] = b"GSI garbage"
    write_tar(tmp_path / "bad.tar", [(name.split(".")[0], {name.split(".", 1)[1]: data})
                                     for name, data in members.items()])
    with pytest.raises(GSIError, match="s0_000"):
        list(iter_samples(tmp_path / "bad.tar"))
    assert [s["__key__"] for s in iter_samples(tmp_path / "bad.tar", on_error="skip")] == ["s0_001"]


@pytest.mark.skipif(not CIFAR_SHARD.exists(), reason=f"shared data not found at {CIFAR_SHARD}")
def test_cifar10_slice(tmp_path):
    samples = list(itertools.islice(iter_samples(CIFAR_SHARD), 50))
    assert len(samples) == 50
    assert all(set(s) == {"__key__", "__shard__", "jpg", "cls"} for s in samples)
    assert all(int(s["cls"]) in range(10) for s in samples)
    assert samples[0]["__key__"] == "bird_4943" and samples[0]["cls"] == b"2"
    shard = write_tar(tmp_path / "cifar-00000.tar",
                      [(s["__key__"], {"jpg": s["jpg"], "cls": s["cls"]}) for s in samples])
    summary = encode_dataset(shard, tmp_path / "out", splats=16, iterations=20, size=None,
                             progress=False)
    assert summary["count"] == 50 and summary["failures"] == 0 and summary["psnr_mean"] > 15
    back = list(iter_samples(tmp_path / "out"))
    assert [s["__key__"] for s in back] == [s["__key__"] for s in samples]
    assert all(s["gsi"].width == s["gsi"].height == 32 and s["cls"] == o["cls"]
               for s, o in zip(back, samples))


def test_one_gpu_per_rank(tmp_path, monkeypatch):
    make_shards(tmp_path / "in", 2, 1)
    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1",
                        "CUDA_VISIBLE_DEVICES": "4,5"}.items():
        monkeypatch.setenv(name, value)
    plan = encode_dataset(str(tmp_path / "in" / "*.tar"), tmp_path / "out", dry_run=True, **FAST)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    assert [p["shard"] for p in plan["plan"]] == ["in-00001.tar"]
    # A launcher that already pinned one device (SLURM --gpus-per-task=1) is left alone.
    encode_dataset(str(tmp_path / "in" / "*.tar"), tmp_path / "out", dry_run=True, **FAST)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    encode_dataset(str(tmp_path / "in" / "*.tar"), tmp_path / "out", dry_run=True, **FAST)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"


def test_progress_line_and_estimate():
    stream = io.StringIO()
    bar = ImageBar(100, 2, 3, unknown_estimate=50, file=stream, disable=False)
    assert bar.total() == 200
    bar.advance(100)
    bar.shard_done(100, was_unknown=False)
    bar.advance(30)
    bar.shard_done(30, was_unknown=True)
    assert bar.total() == 160  # the finished tar shard replaces the first estimate
    line = str(bar.bar)
    assert "130/160" in line and "img/s" in line and "<" in line and "shards 2/3" in line
    bar.close()
    quiet = io.StringIO()  # not a terminal (a log): tqdm stays quiet
    bar = ImageBar(100, 0, 1, file=quiet)
    bar.advance(100)
    bar.close()
    assert quiet.getvalue() == ""


# --------------------------------------------------------------------------- hostile inputs (issue 9)


def _children(pid: int) -> list[int]:
    """Pids of the pool workers (spawned) whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc to find the workers")
def test_workers_exit_when_the_main_process_is_killed(tmp_path):
    make_shards(tmp_path / "in", 2, 2)
    for tar in (tmp_path / "in").glob("*.tar"):  # FIFOs nobody writes: both workers block
        tar.unlink()
        os.mkfifo(tar)
    proc = subprocess.Popen([sys.executable, "-m", "gscodec.cli", "encode-dataset",
                             str(tmp_path / "in" / "*.tar"), "-o", str(tmp_path / "out"),
                             "-n", "4", "--iterations", "5", "--native", "--workers", "2", "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "no workers started"
            workers = _children(proc.pid)
            time.sleep(0.05)
        time.sleep(0.5)  # let them reach the blocking read
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 20
    try:
        while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_running(pid) for pid in workers), "orphaned workers still run"
    finally:
        for pid in workers:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def test_two_writers_of_one_shard_do_not_collide(tmp_path):
    # Two identical runs (or a rerun right after a kill) once shared NAME.tar.partial.
    from gscodec.datasets.tario import ShardWriter

    path = tmp_path / "s.tar"
    first, second = ShardWriter(path), ShardWriter(path)
    assert first.partial != second.partial and not first.partial.name.endswith(".tar")
    for writer in (first, second):
        writer.add("k", {"cls": b"1"})
    assert first.commit() == second.commit()
    assert [p.name for p in tmp_path.iterdir()] == ["s.tar"]


def test_manifest_errors_are_the_same_every_run(tmp_path):
    shard = write_tar(tmp_path / "bad-00000.tar", [("garbage", {"jpg": b"not an image"})])
    failed = []
    for out in ("a", "b"):
        encode_dataset(shard, tmp_path / out, **FAST)
        failed.append(manifest(tmp_path / out / "bad-00000.manifest.json")["failed"])
    assert failed[0] == failed[1] and "0x" not in json.dumps(failed[0])


def test_unsafe_and_non_data_members_are_counted_not_passed_on(tmp_path):
    shard = tmp_path / "evil-00000.tar"
    png = image_bytes(5)
    with tarfile.open(shard, "w") as tar:
        for name in ("ok.png", "../../escape.png", "/abs/rooted.png", "README"):
            info = tarfile.TarInfo(name)
            info.size = len(png)
            tar.addfile(info, io.BytesIO(png))
        for name, kind in (("sym.png", tarfile.SYMTYPE), ("hard.png", tarfile.LNKTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "ok.png"
            tar.addfile(info)
    encode_dataset(shard, tmp_path / "out", **FAST)
    m = manifest(tmp_path / "out" / "evil-00000.manifest.json")
    reasons = {f["key"]: f["error"] for f in m["failed"]}
    assert m["count"] == 1 and m["failures"] == 5
    assert "unsafe" in reasons["../../escape.png"] and "unsafe" in reasons["/abs/rooted.png"]
    assert "symlink" in reasons["sym.png"] and "hard link" in reasons["hard.png"]
    assert "no extension" in reasons["README"]
    assert list(tar_members(tmp_path / "out" / "evil-00000.tar")) == ["ok.gsi"]
    assert [s["__key__"] for s in iter_samples(shard, decode_gsi=False)] == ["ok"]


def test_native_refuses_images_over_max_pixels_before_decoding(tmp_path):
    # An 8000x8000 PNG header over a 1-pixel body: refused from the header alone.
    small = bytearray(image_bytes(6, size=(1, 1)))
    ihdr = small.index(b"IHDR")
    small[ihdr + 4 : ihdr + 12] = (8000).to_bytes(4, "big") * 2
    small[ihdr + 17 : ihdr + 21] = zlib.crc32(bytes(small[ihdr : ihdr + 17])).to_bytes(4, "big")
    samples = [("huge", {"png": bytes(small)}), ("mid", {"png": image_bytes(7, size=(40, 40))}),
               ("ok", {"png": image_bytes(8)})]
    shard = write_tar(tmp_path / "big-00000.tar", samples)
    encode_dataset(shard, tmp_path / "out", **FAST)
    reasons = {f["key"]: f["error"] for f in
               manifest(tmp_path / "out" / "big-00000.manifest.json")["failed"]}
    assert set(reasons) == {"huge"} and "64000000 pixels, over the limit" in reasons["huge"]
    encode_dataset(shard, tmp_path / "out2", max_pixels=1000, **FAST)
    reasons = {f["key"]: f["error"] for f in
               manifest(tmp_path / "out2" / "big-00000.manifest.json")["failed"]}
    assert set(reasons) == {"huge", "mid"} and "over the limit of 1000" in reasons["mid"]


def test_sizes_json_holds_every_complete_shard(tmp_path):
    make_shards(tmp_path / "in", 2, 3)
    encode_dataset(str(tmp_path / "in" / "*.tar"), tmp_path / "out", **FAST)
    sizes = json.loads((tmp_path / "out" / "sizes.json").read_text())
    assert sizes == {"in-00000.tar": 3, "in-00001.tar": 3}


def test_datasets_never_import_torch(tmp_path):
    make_shards(tmp_path / "in", 1, 2)
    code = ("import sys; from gscodec.datasets import encode_dataset, iter_samples; "
            f"encode_dataset({str(tmp_path / 'in')!r} + '/*.tar', {str(tmp_path / 'out')!r}, "
            "splats=4, iterations=5, size=None, progress=False); "
            f"list(iter_samples({str(tmp_path / 'out')!r})); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_input_sizes_json_counts_tar_shards_up_front(tmp_path, capsys):
    make_shards(tmp_path / "in", 2, 3)
    encode_dataset(str(tmp_path / "in" / "*.tar"), tmp_path / "gs", **FAST)
    capsys.readouterr()
    plan = encode_dataset(str(tmp_path / "gs" / "*.tar"), tmp_path / "again", dry_run=True, **FAST)
    assert [p["images"] for p in plan["plan"]] == [3, 3]  # from gs/sizes.json
    assert "would encode 6 images" in capsys.readouterr().out
