"""The gscodec command line: encode / decode / info, outputs, errors."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import gscodec
from gscodec import cli


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, name in enumerate(("a.png", "b.jpg")):
        yy, xx = np.mgrid[0:16, 0:24]
        img = np.stack([xx * 10, yy * 15, 60 + 40 * i + 0 * xx], axis=2)
        img = (img + rng.integers(0, 8, img.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(tmp_path / name)
        paths.append(tmp_path / name)
    return paths


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *fragments: str) -> None:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("gscodec: error:")]
    assert lines, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_encode_one_file_with_output(capsys, images, tmp_path) -> None:
    out = tmp_path / "out.gsi"
    code, _, err = run(capsys, "encode", images[0], "-o", out, "--splats", "30",
                       "--iterations", "40", "--precision", "q8")
    assert code == 0, err
    g = gscodec.open(out)
    assert (g.n_splats, g.size) == (30, (24, 16))
    assert g.precision.startswith("q:x=8,")  # q8: the widths that follow depend on the data (v2)
    assert "[1/1]" in err and "30 splats" in err and "dB" in err


def test_encode_many_into_out_dir_and_force(capsys, images, tmp_path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = ["encode", *images, "--out-dir", out_dir, "--bpp", "6", "--iterations", "30"]
    code, _, err = run(capsys, *args)
    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.gsi", "b.gsi"]
    assert "[1/2]" in err and "[2/2]" in err
    before = (out_dir / "a.gsi").read_bytes()
    code, _, err = run(capsys, *args)
    assert code == 1
    assert_one_line_error(err, "a.gsi", "exists", "--force")
    assert (out_dir / "a.gsi").read_bytes() == before
    code, _, err = run(capsys, *args, "--force", "-q")
    assert code == 0 and err == ""


def test_encode_default_output_next_to_input(capsys, images) -> None:
    code, _, err = run(capsys, "encode", images[1], "--splats", "8", "--iterations", "10")
    assert code == 0, err
    assert images[1].with_suffix(".gsi").exists()


def test_decode_sizes_and_formats(capsys, images, tmp_path) -> None:
    gsi = tmp_path / "x.gsi"
    gscodec.encode(images[0], n_splats=20, iterations=30).save(gsi)
    for i, (args, size) in enumerate(((["--width", "48"], (48, 32)), (["--height", "8"], (12, 8)),
                                      (["--scale", "0.5"], (12, 8)), ([], (24, 16)))):
        out = tmp_path / f"d{i}.png"
        code, _, err = run(capsys, "decode", gsi, "-o", out, *args)
        assert code == 0, err
        with Image.open(out) as im:
            assert im.size == size and im.mode == "RGB"
    code, _, err = run(capsys, "decode", gsi, "-o", tmp_path / "x.webp")
    assert code == 0 and (tmp_path / "x.webp").exists()
    code, _, err = run(capsys, "decode", gsi)
    assert code == 0 and gsi.with_suffix(".png").exists()
    code, _, err = run(capsys, "decode", gsi)
    assert code == 1
    assert_one_line_error(err, "x.png", "exists")


def test_info_text_and_json(capsys, images, tmp_path) -> None:
    gsi = tmp_path / "x.gsi"
    gscodec.encode(images[0], n_splats=20, iterations=30).save(gsi)
    code, out, _ = run(capsys, "info", gsi)
    assert code == 0
    assert "24x16, 20 splats" in out and "bits/splat" in out and "l11" in out
    code, out, _ = run(capsys, "info", gsi, "--json")
    info = json.loads(out)
    assert info["n_splats"] == 20
    assert info["bits_per_splat"] == pytest.approx(gsi.stat().st_size * 8 / 20)


@pytest.mark.parametrize("argv, fragments", [
    (["info", "{tmp}/missing.gsi"], ["missing.gsi"]),
    (["decode", "{tmp}/missing.gsi"], ["missing.gsi"]),
    (["info", "{tmp}/a.png"], ["a.png", "offset 0", "not a .gsi file"]),
    (["encode", "{tmp}/missing.png", "-o", "{tmp}/m.gsi"], ["missing.png", "does not exist"]),
    (["encode", "{tmp}/notes.png", "-o", "{tmp}/n.gsi"], ["notes.png", "cannot read image"]),
    (["encode", "{tmp}/a.png", "--out-dir", "{tmp}/nowhere"], ["nowhere", "does not exist"]),
    (["encode", "{tmp}/a.png", "-o", "{tmp}/nowhere/a.gsi"], ["nowhere", "does not exist"]),
    (["encode", "{tmp}/a.png", "{tmp}/b.jpg", "-o", "{tmp}/x.gsi"], ["one input"]),
    (["encode", "{tmp}/a.png", "--precision", "q99"], ["unknown precision 'q99'"]),
    (["decode", "{tmp}/bad.gsi"], ["bad.gsi", "CRC mismatch"]),
    (["decode", "{tmp}/good.gsi", "-o", "{tmp}/out.xyz"], ["out.xyz", "extension"]),
])
def test_errors_are_one_line(capsys, images, tmp_path, argv, fragments) -> None:
    (tmp_path / "notes.png").write_text("hello")
    good = tmp_path / "good.gsi"
    gscodec.encode(images[0], n_splats=6, iterations=5).save(good)
    data = bytearray(good.read_bytes())
    data[-1] ^= 0xFF  # the CRC
    (tmp_path / "bad.gsi").write_bytes(bytes(data))
    code, out, err = run(capsys, *(a.format(tmp=tmp_path) for a in argv))
    assert code == 1
    assert_one_line_error(err, *fragments)
    leftovers = [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert leftovers == []


def test_usage_errors_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["encode", "x.png", "--splats", "3", "--bpp", "1"])
    assert e.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["decode", "x.gsi", "--scale", "-1"])
    assert cli.main([]) == 2


def test_encode_dataset_is_a_subcommand() -> None:
    args = cli.build_parser().parse_args(["encode-dataset", "in.tar", "-o", "out", "-n", "16"])
    assert args.command == "encode-dataset" and callable(args.func)


def test_console_entry_point_runs_without_traceback(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "gscodec.cli", "info", str(tmp_path / "no.gsi")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith("gscodec: error:") and "Traceback" not in result.stderr


def test_huge_bpp_is_a_one_line_error(capsys, images, tmp_path) -> None:
    code, _, err = run(capsys, "encode", images[0], "-o", tmp_path / "x.gsi", "--bpp", "1e308")
    assert code == 1
    assert_one_line_error(err, "bpp=1e+308 is too high")
    assert not (tmp_path / "x.gsi").exists()


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_force_never_replaces_special_files(capsys, images, tmp_path, kind) -> None:
    gsi = tmp_path / "g.gsi"
    assert run(capsys, "encode", images[0], "-o", gsi, "--splats", "8", "--iterations", "5")[0] == 0
    target = tmp_path / "target.png"
    target.write_bytes(b"keep me")
    out = tmp_path / "out.png"
    if kind == "symlink":
        out.symlink_to(target)
    else:
        os.mkfifo(out)
    code, _, err = run(capsys, "decode", gsi, "-o", out, "--force")
    assert code == 1
    assert_one_line_error(err, "out.png", "not a regular file")
    code, _, err = run(capsys, "encode", images[0], "-o", out, "--splats", "8", "--force")
    assert code == 1  # refused before fitting
    assert_one_line_error(err, "out.png", "not a regular file")
    assert out.is_symlink() if kind == "symlink" else stat.S_ISFIFO(os.lstat(out).st_mode)
    assert target.read_bytes() == b"keep me"


def test_killed_writes_leave_no_output_named_files(capsys, images, tmp_path, monkeypatch) -> None:
    # A write that dies half-way leaves (at most) a temporary that no *.gsi glob matches.
    def die(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", die)
    monkeypatch.setattr(os, "unlink", lambda *a, **k: None)  # as if killed: no clean-up
    for _ in range(2):  # an immediate rerun must not collide with the leftover
        code, _, _ = run(capsys, "encode", images[0], "-o", tmp_path / "k.gsi", "--splats", "8",
                         "--iterations", "5")
        assert code == 130
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".k.gsi")]
    assert len(leftovers) == 2 and all(name.endswith(".tmp") for name in leftovers)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".gsi")]
