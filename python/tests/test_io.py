"""The shared helpers: one atomic writer, one PSNR, one class-name reader."""

from __future__ import annotations

import os

import numpy as np
import pytest

from gscodec import _io
from gscodec.metrics import PSNR_MAX, psnr


def test_psnr_convention():
    a = np.full((4, 4, 3), 100, np.uint8)
    assert psnr(a, a) == PSNR_MAX == 100.0  # identical: finite, the documented cap
    b = a.copy()
    b[0, 0, 0] += 1  # MSE 1/48
    assert psnr(a, b) == pytest.approx(10 * np.log10(255.0**2 * 48))
    assert psnr(np.zeros((2, 2), np.uint8), np.full((2, 2), 255, np.uint8)) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(a, a[:2])


def test_atomic_write_syncs_file_and_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_mode),
                                                 real_fsync(fd)))
    _io.atomic_write(tmp_path / "x.gsi", b"data")
    assert (tmp_path / "x.gsi").read_bytes() == b"data"
    assert len(synced) == 2 and os.path.stat.S_ISDIR(synced[1])  # the file, then its folder
    assert [p.name for p in tmp_path.iterdir()] == ["x.gsi"]


def test_temporary_names_are_unique_and_never_outputs(tmp_path):
    names = {_io.temporary_name(tmp_path / "a.tar").name for _ in range(50)}
    assert len(names) == 50
    assert all(n.startswith(".a.tar.") and n.endswith(".tmp") for n in names)


def test_atomic_write_refuses_special_files(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(FileExistsError, match="FIFO, not a regular file"):
        _io.atomic_write(fifo, b"x")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _io.atomic_write(tmp_path / "nowhere" / "x.gsi", b"x")


def test_read_class_names(tmp_path):
    (tmp_path / "classes.txt").write_text("cat\n\n  dog \n")
    assert _io.read_class_names(tmp_path / "classes.txt") == ["cat", "dog"]
    assert _io.read_class_names(b"a\r\nb\n") == ["a", "b"]
