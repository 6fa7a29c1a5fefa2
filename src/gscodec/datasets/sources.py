"""Dataset inputs: path expansion, and what each output shard is made from.

Three kinds of input, each turned into a list of `ShardTask` (one task = one
output shard, so that a rerun maps the same inputs to the same shard names):

- a **tar shard** (webdataset layout, ``key.jpg`` + ``key.cls`` / ``.txt`` /
  ``.json``): one input tar -> one output tar of the same name;
- an **image folder**: ``class/xxx.jpg`` gives key ``class_xxx`` with a ``.cls``
  label (the class index) and a ``classes.txt`` of class names; images not
  all in class folders are read without labels; ``xxx.txt`` / ``xxx.json`` next
  to an image are passed through; cut into shards of ``shard_size`` images;
- a **CSV** with an ``image,caption`` header: one sample per distinct image
  (in order of first appearance), its captions one per line in ``.txt``;
  image paths are relative to the CSV's folder (or its ``images/`` folder).
"""

from __future__ import annotations

import csv
import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from braceexpand import braceexpand

from .._io import read_class_names
from .shards import read_sizes
from .tario import iter_tar_samples

__all__ = [
    "IMAGE_EXTENSIONS",
    "Plan",
    "Sample",
    "ShardTask",
    "TarShardTask",
    "FileShardTask",
    "expand_paths",
    "plan_shards",
]

#: Member extensions read as images, in order of preference when a key has several.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm")
#: Side files of an image folder that are passed through next to the .gsi.
FOLDER_SIDE_EXTENSIONS = ("txt", "json", "cls")
#: Name of the class-names file (one name per line, line i = label i).
CLASSES_FILE = "classes.txt"

_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


# --------------------------------------------------------------------------- paths


def expand_paths(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Expand paths, ``*`` globs and ``{00000..00009}`` / ``{a,b}`` braces.

    Braces expand as webdataset's do (the ``braceexpand`` package). Order is
    kept (each glob's matches sorted) and repeats are dropped. Raises
    `FileNotFoundError` naming the input when a path does not exist or a glob
    matches nothing, `ValueError` for unbalanced braces.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out: list[str] = []
    seen: set[str] = set()
    for raw in inputs:
        if os.fspath(raw).count("{") != os.fspath(raw).count("}"):
            raise ValueError(f"input {os.fspath(raw)!r}: unbalanced braces")
        for pattern in braceexpand(os.fspath(raw)):
            if glob.has_magic(pattern):
                matches = sorted(glob.glob(pattern))
                if not matches:
                    raise FileNotFoundError(f"input {pattern!r}: no files match")
            elif os.path.exists(pattern):
                matches = [pattern]
            else:
                raise FileNotFoundError(f"input {pattern!r}: no such file or directory")
            for path in matches:
                real = os.path.realpath(path)
                if real not in seen:
                    seen.add(real)
                    out.append(path)
    return out


def _safe_key(relative: str) -> str:
    """A tar key from a relative path: no directories, no dots (webdataset keys)."""
    stem = relative.rsplit(".", 1)[0] if "." in os.path.basename(relative) else relative
    return re.sub(r"[/\\.\s]", "_", stem)


# --------------------------------------------------------------------------- samples and tasks


@dataclass
class Sample:
    """One input sample: its image bytes and the side files to pass through.

    ``error`` is set (and ``image`` None) when the sample cannot be read;
    the pipeline counts and skips it.
    """

    key: str
    image: bytes | None
    files: dict[str, bytes] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class ShardTask:
    """What one output shard ``name + ".tar"`` is made from.

    ``source`` identifies the input (recorded in the shard manifest, checked
    on resume); ``expected`` is the sample count when known without reading.
    """

    name: str
    source: dict
    expected: int | None

    def samples(self) -> Iterator[Sample]:
        """Yield the shard's samples in a fixed order."""
        raise NotImplementedError


@dataclass(frozen=True)
class TarShardTask(ShardTask):
    """An input tar shard, re-encoded member by member."""

    path: str = ""

    def samples(self) -> Iterator[Sample]:
        problems: list[tuple[str, str]] = []
        for files in iter_tar_samples(self.path, problems):
            yield from _problem_samples(problems)
            key = files.pop("__key__")
            del files["__shard__"]
            image_ext = next((e for e in IMAGE_EXTENSIONS if e in files), None)
            side = {
                ext: data
                for ext, data in files.items()
                if ext not in IMAGE_EXTENSIONS and ext != "gsi"
            }
            if image_ext is None:
                yield Sample(key, None, side, error=f"no image member (has {sorted(files)})")
            else:
                yield Sample(key, files[image_ext], side)
        yield from _problem_samples(problems)


def _problem_samples(problems: list[tuple[str, str]]) -> Iterator[Sample]:
    """Members that are no sample data, as failed samples named after the member."""
    while problems:
        name, reason = problems.pop(0)
        yield Sample(name, None, error=reason)


@dataclass(frozen=True)
class FileItem:
    """One image file plus side data: inline bytes and files to read."""

    key: str
    image_path: str
    inline: tuple[tuple[str, bytes], ...] = ()
    side_paths: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class FileShardTask(ShardTask):
    """A slice of an image folder or CSV: a list of image files."""

    items: tuple[FileItem, ...] = ()

    def samples(self) -> Iterator[Sample]:
        for item in self.items:
            files = dict(item.inline)
            try:
                for ext, path in item.side_paths:
                    files[ext] = Path(path).read_bytes()
                image = Path(item.image_path).read_bytes()
            except OSError as exc:
                yield Sample(item.key, None, files, error=f"cannot read: {exc}")
                continue
            yield Sample(item.key, image, files)


@dataclass
class Plan:
    """All output shards of a run (sorted by name) and run-level files to write."""

    tasks: list[ShardTask]
    extra_files: dict[str, bytes]


# --------------------------------------------------------------------------- planning


def _is_tar(path: str) -> bool:
    return path.lower().endswith(_TAR_SUFFIXES)


def _tar_stem(path: str) -> str:
    name = os.path.basename(path)
    for suffix in _TAR_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _chunk(name: str, source: dict, items: list[FileItem], shard_size: int) -> list[ShardTask]:
    tasks: list[ShardTask] = []
    for index, start in enumerate(range(0, len(items), shard_size)):
        chunk = tuple(items[start : start + shard_size])
        src = dict(source, start=start, stop=start + len(chunk))
        tasks.append(FileShardTask(f"{name}-{index:05d}", src, len(chunk), items=chunk))
    return tasks


def _check_keys(items: list[FileItem], where: str) -> None:
    seen: dict[str, str] = {}
    for item in items:
        if item.key in seen:
            raise ValueError(
                f"input {where!r}: {seen[item.key]!r} and {item.image_path!r} "
                f"both map to sample key {item.key!r}"
            )
        seen[item.key] = item.image_path


def _plan_folder(root: str, shard_size: int) -> tuple[list[ShardTask], bytes | None]:
    """Image folder -> tasks (+ classes.txt content when images sit in class folders)."""
    base = Path(root)
    images: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fname in sorted(filenames):
            ext = fname.rsplit(".", 1)[-1].lower() if "." in fname else ""
            if ext in IMAGE_EXTENSIONS and not fname.startswith("."):
                images.append(Path(dirpath) / fname)
    if not images:
        raise ValueError(f"input {root!r}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    rels = [p.relative_to(base).as_posix() for p in images]
    labelled = all("/" in rel for rel in rels)
    labels: dict[str, int] = {}
    classes_bytes = None
    if labelled:
        folders = sorted({rel.split("/", 1)[0] for rel in rels})
        names_file = base / CLASSES_FILE
        if names_file.is_file():
            # A classes.txt shipped with the data fixes the label order.
            names = read_class_names(names_file)
            missing = [f for f in folders if f not in names]
            if missing:
                raise ValueError(f"{names_file}: does not list class folder(s) {missing}")
        else:
            names = folders
        labels = {name: i for i, name in enumerate(names)}
        classes_bytes = "".join(n + "\n" for n in names).encode()
    items = []
    for path, rel in zip(images, rels):
        inline = ((("cls", str(labels[rel.split("/", 1)[0]]).encode()),) if labelled else ())
        side = tuple(
            (ext, str(path.with_suffix("." + ext)))
            for ext in FOLDER_SIDE_EXTENSIONS
            if path.with_suffix("." + ext).is_file() and not (labelled and ext == "cls")
        )
        items.append(FileItem(_safe_key(rel), str(path), inline, side))
    _check_keys(items, root)
    source = {"kind": "folder", "path": os.path.abspath(root)}
    return _chunk(base.resolve().name, source, items, shard_size), classes_bytes


def _plan_csv(path: str, shard_size: int) -> list[ShardTask]:
    """CSV ``image,caption`` -> tasks, one sample per distinct image."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = [f.strip().lower() for f in reader.fieldnames or []]
            if "image" not in fields or "caption" not in fields:
                raise ValueError(
                    f"input {path!r}: not a tar shard, an image folder or a CSV with an "
                    f"'image,caption' header (header is {reader.fieldnames})"
                )
            reader.fieldnames = fields
            captions: dict[str, list[str]] = {}
            for row in reader:
                image = (row.get("image") or "").strip()
                if image:
                    captions.setdefault(image, []).append((row.get("caption") or "").strip())
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"input {path!r}: not a tar shard, an image folder or a "
                         f"UTF-8 CSV ({exc})") from None
    if not captions:
        raise ValueError(f"input {path!r}: CSV has no rows")
    folder = Path(path).parent
    items = []
    for image, texts in captions.items():
        image_path = folder / image
        if not image_path.exists() and (folder / "images" / image).exists():
            image_path = folder / "images" / image
        text = "\n".join(texts).encode("utf-8")
        items.append(FileItem(_safe_key(image), str(image_path), (("txt", text),)))
    _check_keys(items, path)
    source = {"kind": "csv", "path": os.path.abspath(path)}
    return _chunk(Path(path).stem, source, items, shard_size)


def plan_shards(inputs: str | os.PathLike | Sequence[str | os.PathLike], shard_size: int) -> Plan:
    """Turn inputs into the sorted list of output shards (see the module docstring).

    ``shard_size`` (images per output shard) applies to folder and CSV inputs;
    tar inputs keep their own sharding. A ``classes.txt`` next to input tars
    (or made for an image folder) becomes a run-level file of the output.
    Raises `ValueError` / `FileNotFoundError` naming the offending input.
    """
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive int, got {shard_size!r}")
    tasks: list[ShardTask] = []
    extra: dict[str, bytes] = {}
    extra_from: dict[str, str] = {}

    def add_extra(name: str, data: bytes, where: str) -> None:
        if name in extra and extra[name] != data:
            raise ValueError(f"inputs {extra_from[name]!r} and {where!r} have different {name}")
        extra[name], extra_from[name] = data, where

    for path in expand_paths(inputs):
        if os.path.isdir(path):
            folder_tasks, classes = _plan_folder(path, shard_size)
            tasks += folder_tasks
            if classes is not None:
                add_extra(CLASSES_FILE, classes, path)
        elif _is_tar(path):
            source = {"kind": "tar", "path": os.path.abspath(path)}
            # Counted up front only when a sizes.json says so (reading tars to count is slow).
            expected = (read_sizes([path]) or {}).get(path)
            tasks.append(TarShardTask(_tar_stem(path), source, expected, path=path))
            names_file = Path(path).parent / CLASSES_FILE
            if names_file.is_file():
                add_extra(CLASSES_FILE, names_file.read_bytes(), str(names_file))
        else:
            tasks += _plan_csv(path, shard_size)
    names: dict[str, ShardTask] = {}
    for task in tasks:
        if task.name in names:
            raise ValueError(
                f"inputs {names[task.name].source['path']!r} and {task.source['path']!r} "
                f"both map to output shard {task.name}.tar; rename one of them"
            )
        names[task.name] = task
    return Plan(sorted(tasks, key=lambda t: t.name), extra)
