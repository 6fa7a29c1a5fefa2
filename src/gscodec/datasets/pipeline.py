"""``encode_dataset``: image shards / folders / CSVs in, ``.gsi`` tar shards out.

One input shard (or a ``shard_size`` slice of a folder or CSV) becomes one
output shard of a deterministic name, so the work splits cleanly:

- across **ranks** (torchrun ``RANK``/``WORLD_SIZE``, SLURM
  ``SLURM_PROCID``/``SLURM_NTASKS``): rank r takes shards r, r+W, r+2W, ...
  of the sorted list, with one GPU per rank (``LOCAL_RANK``/``SLURM_LOCALID``);
- across ``workers`` processes of one rank, each encoding whole shards;
- across **runs**: a shard whose manifest exists and matches its tar is
  skipped, anything else is redone from scratch, so a killed run rerun gives
  the same output.

Inside a shard, images are decoded, optionally resized and centre-cropped
(CLIP preprocessing), fitted in batches by `gscodec.fit`, stored with
`gscodec.format.dumps`, and checked by decoding the stored bytes (the PSNR in
the manifest is that of the ``.gsi`` as any decoder renders it). An image that
cannot be read, decoded or fitted is logged, counted in the manifest and
skipped.

With ``dictionary=True`` every ``.gsi`` is written with one zstd dictionary,
trained on the files of the first images of the first shard and stored once
as ``output/gsi.dict`` (its id in each manifest's settings and the summary);
a rerun reuses it, and readers (`gscodec.datasets.iter_samples`) find it.
"""

from __future__ import annotations

import inspect
import logging
import os
import queue as queue_module
import sys
import tarfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image
import zstandard
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

import gscodec
from gscodec import format as gsi_format
from gscodec._io import atomic_write, open_image, write_json_atomic
from gscodec.limits import MAX_ITERATIONS, MAX_PIXELS, MAX_SIDE, MAX_SPLATS
from gscodec.metrics import psnr

from .shards import DICTIONARY_FILE, SIZES_FILE, manifest_path, read_dictionary, read_manifest
from .sources import ShardTask, TarShardTask, plan_shards
from .split import rank_from_env, split_shards
from .tario import ShardWriter, count_tar_samples, remove_stale_partials

__all__ = ["encode_dataset", "EncodeSettings", "DEFAULT_ITERATIONS", "DEFAULT_MAX_PIXELS"]

logger = logging.getLogger("gscodec.datasets")

#: `gscodec.fit`'s own default, so that the two never disagree.
DEFAULT_ITERATIONS: int = inspect.signature(gscodec.fit).parameters["iterations"].default
SUMMARY_FILE = "summary.json"
#: Largest image fitted at its native size (``--native``); larger ones are
#: refused from their header, before decoding: one huge image must not take
#: minutes and gigabytes (same order as Pillow's ``MAX_IMAGE_PIXELS``).
DEFAULT_MAX_PIXELS = 1 << 24
#: Errors that fail a whole shard (it is not published; a rerun retries it):
#: unreadable or truncated input, or a fit that fails for every image (device).
SHARD_ERRORS = (OSError, EOFError, tarfile.TarError, RuntimeError)
#: Failures printed per shard; the manifest lists all of them.
_MAX_LOGGED_FAILURES = 5
#: Images of the first shard fitted to train the shared dictionary: enough
#: payloads for zstd's trainer at 16 splats, a small cost next to a data set.
DICTIONARY_SAMPLE = 256
#: How long ranks other than 0 wait for rank 0 to write the shared dictionary.
DICTIONARY_WAIT_S = 3600.0
#: The precision that picks each image's grids for q7's quality in the fewest
#: bits, as `gscodec.encode` does with none given.
AUTO_PRECISION = "auto"


@dataclass(frozen=True)
class EncodeSettings:
    """What determines a shard's content; recorded in manifests, checked on resume."""

    splats: int
    iterations: int
    size: int | None  # None: native size
    precision: str
    # A safety limit like the decoder's (images over it are failures, listed
    # in the manifest), not a content setting: not recorded, not checked on resume.
    max_pixels: int = DEFAULT_MAX_PIXELS
    # The shared zstd dictionary's id; None: files without one; 0: one is
    # still to be trained (matches no finished shard).
    dictionary_id: int | None = None

    @property
    def file_precision(self) -> str | None:
        """The precision for `gscodec.ratecontrol.fixed_count_file`: None for
        `AUTO_PRECISION` (chosen per image)."""
        return None if self.precision == AUTO_PRECISION else self.precision

    def as_dict(self) -> dict[str, Any]:
        """JSON form: ``size`` is ``"native"`` when the input size is kept;
        ``dictionary_id`` only when a dictionary is used."""
        out = {
            "splats": self.splats,
            "iterations": self.iterations,
            "size": "native" if self.size is None else self.size,
            "precision": self.precision,
        }
        if self.dictionary_id is not None:
            out["dictionary_id"] = self.dictionary_id
        return out


# --------------------------------------------------------------------------- environment


def _pin_gpu(local_rank: int) -> None:
    """Give this rank one GPU: the ``local_rank``-th visible one.

    Done through ``CUDA_VISIBLE_DEVICES`` (no torch here), which must happen
    before this process first touches CUDA. Left alone when the launcher has
    already pinned one device (e.g. SLURM ``--gpus-per-task=1``).
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(local_rank)
        return
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    if len(ids) > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = ids[local_rank % len(ids)]


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------- images


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """CLIP preprocessing: bicubic resize of the short side to ``size``, centre crop.

    Rounding follows torchvision's ``Resize(size)`` + ``CenterCrop(size)``.
    """
    width, height = image.size
    if (width, height) == (size, size):
        return image
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left = int(round((new_w - size) / 2.0))
    top = int(round((new_h - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def prepare_image(data: bytes, settings: EncodeSettings) -> np.ndarray:
    """Decode image bytes to H x W x 3 uint8 ready for fitting.

    Raises `ValueError` with a short reason when the image is empty,
    undecodable or unusable with these settings.
    """
    native_cap = settings.max_pixels if settings.size is None else None
    image = open_image(data, max_pixels=native_cap)
    if settings.size is not None:
        image = resize_center_crop(image, settings.size)
    width, height = image.size
    if width * height < settings.splats:
        raise ValueError(f"image is {width}x{height}, fewer pixels than {settings.splats} splats")
    if width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
        raise ValueError(f"image is {width}x{height}, larger than gscodec.fit accepts")
    return np.asarray(image)


# --------------------------------------------------------------------------- one shard


@dataclass(frozen=True)
class _Runtime:
    """How (not what) to compute: never changes a shard's content."""

    device: str
    threads: int
    batch_size: int


def _fit_isolating(images: list[np.ndarray], settings: EncodeSettings, rt: _Runtime) -> list[Any]:
    """Fit a batch; if the batch fails, fit images one by one to isolate the bad ones.

    Returns a `Splats` or the exception for each image. If every image of a
    failed batch fails on its own too, the cause is not the data (e.g. a device
    error), so the error is raised and the shard is left to a rerun.
    """
    kwargs = dict(iterations=settings.iterations, threads=rt.threads, device=rt.device)
    try:
        return list(gscodec.fit(images, settings.splats, **kwargs))
    except (ValueError, RuntimeError, MemoryError) as batch_error:
        results: list[Any] = []
        for image in images:
            try:
                results.append(gscodec.fit(image, settings.splats, **kwargs))
            except (ValueError, RuntimeError, MemoryError) as exc:
                results.append(exc)
        if all(isinstance(r, BaseException) for r in results):
            raise batch_error
        return results


def encode_shard(
    task: ShardTask,
    output: Path,
    settings: EncodeSettings,
    rt: _Runtime,
    report: Callable[[int], None] | None = None,
    dictionary: bytes | None = None,
) -> dict[str, Any]:
    """Encode one task into ``output/NAME.tar`` and write its manifest; return the manifest.

    ``report(n)`` is called as images are done. ``dictionary``: the bytes of
    the zstd dictionary (id ``settings.dictionary_id``) to write the files
    with. Errors reading the input itself (a missing or truncated tar)
    propagate: no shard is published.
    """
    zdict = None if dictionary is None else zstandard.ZstdCompressionDict(dictionary)
    start = time.monotonic()
    failed: list[dict[str, str]] = []
    psnrs: list[float] = []
    gsi_bytes = 0
    pending: list[tuple[str, dict[str, bytes], np.ndarray]] = []

    def flush(writer: ShardWriter) -> None:
        nonlocal gsi_bytes
        if not pending:
            return
        fitted = _fit_isolating([img for _, _, img in pending], settings, rt)
        stored: list[tuple[str, dict[str, bytes], np.ndarray, bytes]] = []
        decoded = []
        for (key, files, image), result in zip(pending, fitted):
            if isinstance(result, BaseException):
                failed.append({"key": key, "error": f"fit failed: {result}"})
                continue
            try:
                splats, precision = gscodec.ratecontrol.fixed_count_file(
                    result, image, settings.file_precision, threads=rt.threads)
                data = gsi_format.dumps(splats, precision=precision, dictionary=zdict)
                decoded.append(gsi_format.loads(data, zdict))
            except ValueError as exc:  # GSIError is a ValueError
                failed.append({"key": key, "error": f"storing .gsi failed: {exc}"})
                continue
            stored.append((key, files, image, data))
        renders = gscodec.render_batch(decoded, device=rt.device) if decoded else []
        for (key, files, image, data), render in zip(stored, renders):
            psnrs.append(psnr(image, render))
            gsi_bytes += len(data)
            writer.add(key, {"gsi": data, **{ext: files[ext] for ext in sorted(files)}})
        if report is not None:
            report(len(pending))
        pending.clear()

    def skip(key: str, reason: str) -> None:
        failed.append({"key": key, "error": reason})
        if report is not None:
            report(1)

    shard_path = output / f"{task.name}.tar"
    remove_stale_partials(shard_path)
    seen: set[str] = set()
    with ShardWriter(shard_path) as writer:
        for sample in task.samples():
            if sample.key in seen:
                skip(sample.key, "duplicate key (an earlier sample has it)")
                continue
            seen.add(sample.key)
            if sample.error is not None or sample.image is None:
                skip(sample.key, sample.error or "no image")
                continue
            try:
                image = prepare_image(sample.image, settings)
            except ValueError as exc:
                skip(sample.key, str(exc))
                continue
            pending.append((sample.key, sample.files, image))
            if len(pending) >= rt.batch_size:
                flush(writer)
        flush(writer)
        count = writer.count
        size, sha256 = writer.commit()
    seconds = time.monotonic() - start
    manifest = {
        "shard": shard_path.name,
        "count": count,
        "bytes": size,
        "sha256": sha256,
        "gsi_bytes": gsi_bytes,
        "psnr_mean": float(np.mean(psnrs)) if psnrs else None,
        "psnr_min": float(np.min(psnrs)) if psnrs else None,
        "failures": len(failed),
        "failed": failed,
        "source": task.source,
        "settings": settings.as_dict(),
        "seconds": round(seconds, 3),
        "images_per_s": round((count + len(failed)) / seconds, 2) if seconds > 0 else None,
        "gscodec_version": gscodec.__version__,
    }
    write_json_atomic(manifest_path(shard_path), manifest)
    return manifest


# --------------------------------------------------------------------------- progress


class ImageBar:
    """A tqdm bar over images whose total is estimated while tar shards are uncounted.

    ``unknown_shards`` tar shards (not counted up front) are estimated at the
    mean size of those finished so far, or at ``unknown_estimate`` before any
    has finished. The bar shows on a terminal and stays quiet in logs
    (tqdm's ``disable=None``); ``disable=True`` hides it.
    """

    def __init__(self, known_images: int, unknown_shards: int, total_shards: int, *,
                 unknown_estimate: int | None = None, desc: str = "encode",
                 disable: bool | None = None, file: Any = None) -> None:
        self.known_images = known_images
        self.unknown_shards = unknown_shards
        self.total_shards = total_shards
        self.unknown_estimate = unknown_estimate
        self.done_shards = 0
        self._finished_sizes: list[int] = []
        self.bar = tqdm(total=self.total(), unit="img", desc=desc, disable=disable,
                        file=sys.stderr if file is None else file, dynamic_ncols=True)
        self._show_shards()

    def advance(self, images: int) -> None:
        """Count ``images`` more images encoded (or skipped as failed)."""
        self.bar.update(images)

    def shard_done(self, images: int, was_unknown: bool) -> None:
        """Count a finished shard of ``images`` samples."""
        self.done_shards += 1
        if was_unknown:
            self.unknown_shards -= 1
            self.known_images += images
            self._finished_sizes.append(images)
        self.bar.total = self.total()
        self._show_shards()

    def total(self) -> int | None:
        """Estimated total images (None while unknown shards have no estimate)."""
        if not self.unknown_shards:
            return self.known_images
        if self._finished_sizes:
            mean = sum(self._finished_sizes) / len(self._finished_sizes)
        elif self.unknown_estimate is not None:
            mean = self.unknown_estimate
        else:
            return None
        return self.known_images + round(mean * self.unknown_shards)

    def _show_shards(self) -> None:
        self.bar.set_postfix_str(f"shards {self.done_shards}/{self.total_shards}")

    def close(self) -> None:
        """Finish the bar."""
        self.bar.close()


# --------------------------------------------------------------------------- worker processes

_progress_queue: Any = None


def _worker_init(progress_queue: Any, parent: int) -> None:
    global _progress_queue
    _progress_queue = progress_queue

    def exit_when_orphaned() -> None:
        # A SIGKILLed parent cannot stop its pool: without this the workers
        # finish their shard and then wait forever for the next one. The
        # parent's pid comes from the parent: it may die before this runs.
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=exit_when_orphaned, name="orphan-watch", daemon=True).start()


def _worker_encode(task: ShardTask, output: Path, settings: EncodeSettings, rt: _Runtime,
                   dictionary: bytes | None) -> dict:
    return encode_shard(task, output, settings, rt, report=_progress_queue.put,
                        dictionary=dictionary)


# --------------------------------------------------------------------------- dictionary


def train_shard_dictionary(task: ShardTask, settings: EncodeSettings,
                           rt: _Runtime) -> zstandard.ZstdCompressionDict:
    """A zstd dictionary trained on the ``.gsi`` files (written without one)
    of the first `DICTIONARY_SAMPLE` usable images of ``task``.

    Raises `ValueError` when too few images fit to train on.
    """
    images = []
    for sample in task.samples():
        if len(images) >= DICTIONARY_SAMPLE:
            break
        if sample.error is None and sample.image is not None:
            try:
                images.append(prepare_image(sample.image, settings))
            except ValueError:
                continue  # the shard's own encode reports it
    files = []
    for start in range(0, len(images), rt.batch_size):
        batch = images[start:start + rt.batch_size]
        for image, result in zip(batch, _fit_isolating(batch, settings, rt)):
            if not isinstance(result, BaseException):
                splats, precision = gscodec.ratecontrol.fixed_count_file(
                    result, image, settings.file_precision, threads=rt.threads)
                files.append(gsi_format.dumps(splats, precision=precision))
    try:
        return gsi_format.train_dictionary(files)
    except ValueError as exc:
        raise ValueError(f"dictionary: cannot train on shard {task.name}: {exc}") from None


def _shared_dictionary(task: ShardTask, output: Path, settings: EncodeSettings, rt: _Runtime,
                       rank: int) -> zstandard.ZstdCompressionDict:
    """``output/gsi.dict``: read if there, else trained on ``task`` (rank 0)
    or waited for (other ranks, up to `DICTIONARY_WAIT_S`)."""
    path = output / DICTIONARY_FILE
    dictionary = read_dictionary(output)
    if dictionary is not None:
        return dictionary
    if rank == 0:
        logger.info("training a zstd dictionary on %s (up to %d images)", task.name,
                    DICTIONARY_SAMPLE)
        dictionary = train_shard_dictionary(task, settings, rt)
        atomic_write(path, dictionary.as_bytes())
        return dictionary
    logger.info("waiting for rank 0 to write %s", path)
    deadline = time.monotonic() + DICTIONARY_WAIT_S
    while dictionary is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank 0 did not write {path} within {DICTIONARY_WAIT_S:.0f} s")
        time.sleep(1.0)
        dictionary = read_dictionary(output)
    return dictionary


# --------------------------------------------------------------------------- the run


def shard_state(task: ShardTask, output: Path, settings: EncodeSettings) -> str:
    """``"complete"`` (manifest and tar agree) or ``"todo"`` (missing or partial).

    Raises `ValueError` when a complete shard was made from another input or
    with other settings, since silently mixing the two would corrupt the set.
    """
    shard = output / f"{task.name}.tar"
    manifest = read_manifest(manifest_path(shard))
    if manifest is None:
        return "todo"
    theirs = (manifest.get("source"), manifest.get("settings"))
    ours = (task.source, settings.as_dict())
    if theirs != ours:
        raise ValueError(
            f"{shard} was made from {theirs[0]} with {theirs[1]}; this run would make it "
            f"from {ours[0]} with {ours[1]}. Use another --output, or delete that shard "
            f"and its manifest to redo it."
        )
    return "complete" if _tar_matches(shard, manifest) else "todo"


def _tar_matches(shard: Path, manifest: dict[str, Any]) -> bool:
    try:
        return shard.stat().st_size == manifest.get("bytes")
    except OSError:
        return False


def _count_first(tasks: list[TarShardTask]) -> int | None:
    """Sample count of the first tar shard, or None when it cannot be read."""
    if not tasks:
        return None
    try:
        return count_tar_samples(tasks[0].path)
    except (OSError, EOFError, tarfile.TarError):
        return None  # the shard's own encode reports the problem


def _check_args(splats: Any, iterations: Any, size: Any, batch_size: Any, workers: Any,
                precision: str, device: str, max_pixels: Any) -> None:
    for name, value, lo, hi in (
        ("splats", splats, 1, MAX_SPLATS),
        ("max_pixels", max_pixels, 1, MAX_PIXELS),
        ("iterations", iterations, 0, MAX_ITERATIONS),
        ("batch_size", batch_size, 1, 1 << 20),
        ("workers", workers, 1, 4096),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"{name} must be an int in {lo}..{hi}, got {value!r}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int)
                             or not 1 <= size <= MAX_SIDE):
        raise ValueError(f"size must be an int in 1..{MAX_SIDE} or None (native), got {size!r}")
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    probe = gscodec.Splats.from_array(np.array([[0.5, 0.5, 0.1, 0.0, 0.1, 0.5, 0.5, 0.5]]), 1, 1)
    try:
        if precision != AUTO_PRECISION:
            gsi_format.dumps(probe, precision=precision)
    except (ValueError, TypeError) as exc:  # GSIError is a ValueError
        raise ValueError(f"precision {precision!r}: {exc}, or {AUTO_PRECISION!r}") from None


def _summarize(tasks: Sequence[ShardTask], output: Path, settings: EncodeSettings,
               run: dict[str, Any]) -> dict[str, Any]:
    """The run summary: totals over all complete shards of the whole plan."""
    manifests, incomplete = [], []
    for task in tasks:
        shard = output / f"{task.name}.tar"
        manifest = read_manifest(manifest_path(shard))
        if manifest is not None and _tar_matches(shard, manifest):
            manifests.append(manifest)
        else:
            incomplete.append(task.name)
    count = sum(m["count"] for m in manifests)
    weighted = [(m["psnr_mean"], m["count"]) for m in manifests if m["psnr_mean"] is not None]
    mins = [m["psnr_min"] for m in manifests if m["psnr_min"] is not None]
    return {
        "output": str(output),
        "settings": settings.as_dict(),
        "dictionary": DICTIONARY_FILE if settings.dictionary_id else None,
        "shards": len(tasks),
        "shards_complete": len(manifests),
        "shards_incomplete": incomplete,
        "count": count,
        "failures": sum(m["failures"] for m in manifests),
        "bytes": sum(m["bytes"] for m in manifests),
        "gsi_bytes": sum(m["gsi_bytes"] for m in manifests),
        "psnr_mean": sum(p * n for p, n in weighted) / count if count else None,
        "psnr_min": min(mins) if mins else None,
        "run": run,
        "sizes": {m["shard"]: m["count"] for m in manifests},
    }


def encode_dataset(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    splats: int,
    iterations: int = DEFAULT_ITERATIONS,
    size: int | None = 224,
    precision: str = "fp16",
    device: str = "auto",
    batch_size: int = 128,
    workers: int = 1,
    shard_size: int = 1000,
    rank: int | None = None,
    world_size: int | None = None,
    threads: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    dictionary: bool = False,
    dry_run: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Encode a dataset into webdataset tar shards of ``key.gsi`` + side files.

    ``inputs``: tar shards (paths, globs, ``{00000..00009}`` ranges), image
    folders or ``image,caption`` CSVs (see `gscodec.datasets.sources`).
    ``output`` receives ``NAME.tar`` + ``NAME.manifest.json`` per shard,
    ``classes.txt`` when the input has class names, and ``summary.json``.

    ``size``: resize the short side and centre-crop to ``size`` x ``size``
    (CLIP preprocessing); ``None`` keeps the native size, and then images
    whose header declares more than ``max_pixels`` are refused (counted as
    failures) before they are decoded. ``splats``,
    ``iterations`` go to `gscodec.fit`, ``precision`` to
    `gscodec.format.dumps`: a quantized one after the encoder's finish (as
    `gscodec.encode` writes), ``"auto"`` (`AUTO_PRECISION`) q7's quality
    with each image's grids chosen for the fewest bits (10-15% smaller than
    ``"q7"``'s files at 0.1-0.3 dB lower PSNR, about 50 ms more per 32 x 32
    image; docs/benchmarks.md). ``device``/``threads``/``batch_size``/``workers``
    change speed, never the output. ``shard_size``: images per output shard
    for folder and CSV inputs (tars keep theirs). ``dictionary``: write the
    files with a shared zstd dictionary, ``output/gsi.dict``, trained on the
    first shard (by rank 0; other ranks wait for it) or reused from an earlier
    run; it saves bytes on files of many splats (see docs/benchmarks.md).

    ``rank``/``world_size`` default to the torchrun or SLURM environment
    (`rank_from_env`); each rank encodes a disjoint share of the shards.
    Complete shards are skipped, so rerunning after a crash finishes the job.
    ``dry_run`` prints the plan (stdout), writes nothing and returns it.
    ``progress`` shows images/s and ETA on stderr. With ``workers > 1`` the
    caller's main module must be import-safe (``if __name__ == "__main__"``):
    workers are spawned, not forked, since forking after OpenMP is unsafe.

    Returns the summary (also written to ``output/summary.json``), with
    ``errors`` mapping shards that could not be encoded (unreadable input)
    to the reason; the images that failed are counted in ``failures``.
    """
    _check_args(splats, iterations, size, batch_size, workers, precision, device, max_pixels)
    env_rank, env_world, local_rank = rank_from_env()
    rank = env_rank if rank is None else rank
    world_size = env_world if world_size is None else world_size
    if not (isinstance(world_size, int) and world_size >= 1 and isinstance(rank, int)
            and 0 <= rank < world_size):
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
    if local_rank is not None and world_size > 1 and device != "cpu":
        _pin_gpu(local_rank)

    output = Path(output)
    known_dictionary = read_dictionary(output) if dictionary and output.is_dir() else None
    dictionary_id = None
    if dictionary:
        dictionary_id = known_dictionary.dict_id() if known_dictionary is not None else 0
    settings = EncodeSettings(splats, iterations, size, precision, max_pixels, dictionary_id)
    plan = plan_shards(inputs, shard_size)
    mine = split_shards(plan.tasks, rank, world_size)
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"output {str(output)!r} exists and is not a directory")
    states = {t.name: (shard_state(t, output, settings) if output.is_dir() else "todo")
              for t in mine}
    todo = [t for t in mine if states[t.name] == "todo"]

    if dry_run:
        return _dry_run(plan.tasks, mine, states, output, settings, rank, world_size,
                        workers, device)

    output.mkdir(parents=True, exist_ok=True)
    for name, data in plan.extra_files.items():
        target = output / name
        if not target.is_file() or target.read_bytes() != data:
            atomic_write(target, data)

    shared = None
    if dictionary and todo:
        shared = _shared_dictionary(plan.tasks[0], output, settings,
                                    _Runtime(device, threads or _cpu_count(), batch_size), rank)
        settings = replace(settings, dictionary_id=shared.dict_id())
    dictionary_bytes = None if shared is None else shared.as_bytes()

    workers = min(workers, max(1, len(todo)))
    rt = _Runtime(device, threads or max(1, _cpu_count() // workers), batch_size)
    uncounted = [t for t in todo if isinstance(t, TarShardTask)]
    bar = ImageBar(
        sum(t.expected or 0 for t in todo),
        len(uncounted),
        len(todo),
        # Tar shards are not counted up front; one gives the ETA a first estimate.
        unknown_estimate=_count_first(uncounted) if progress else None,
        desc=f"encode rank {rank}/{world_size}" if world_size > 1 else "encode",
        disable=None if progress else True,
    )
    errors: dict[str, str] = {}
    encoded = failures = 0
    start = time.monotonic()

    def finished(task: ShardTask, manifest: dict[str, Any] | None, error: str | None) -> None:
        nonlocal encoded, failures
        if error is not None:
            errors[task.name] = error
            logger.error("%s: not encoded: %s", task.name, error)
            return
        encoded += manifest["count"]
        failures += manifest["failures"]
        bar.shard_done(manifest["count"] + manifest["failures"], task.expected is None)
        for failure in manifest["failed"][:_MAX_LOGGED_FAILURES]:
            logger.warning("%s: skipped %s: %s", task.name, failure["key"], failure["error"])
        if manifest["failures"] > _MAX_LOGGED_FAILURES:
            logger.warning("%s: ... %d more failures listed in %s", task.name,
                           manifest["failures"] - _MAX_LOGGED_FAILURES,
                           manifest_path(output / manifest["shard"]).name)

    with logging_redirect_tqdm():
        try:
            if workers == 1:
                for task in todo:
                    try:
                        manifest = encode_shard(task, output, settings, rt, report=bar.advance,
                                                dictionary=dictionary_bytes)
                    except SHARD_ERRORS as exc:
                        finished(task, None, f"{type(exc).__name__}: {exc}")
                    else:
                        finished(task, manifest, None)
            else:
                _run_pool(todo, output, settings, rt, workers, bar, finished, dictionary_bytes)
        finally:
            bar.close()

    seconds = time.monotonic() - start
    run = {
        "rank": rank,
        "world_size": world_size,
        "workers": workers,
        "device": device,
        "shards_encoded": len(todo) - len(errors),
        "shards_skipped": len(mine) - len(todo),
        "images_encoded": encoded,
        "images_failed": failures,
        "seconds": round(seconds, 3),
        "images_per_s": round((encoded + failures) / seconds, 2) if todo and seconds > 0 else None,
    }
    summary = _summarize(plan.tasks, output, settings, run)
    write_json_atomic(output / SUMMARY_FILE, summary)
    write_json_atomic(output / SIZES_FILE, summary.pop("sizes"))
    summary["errors"] = errors
    return summary


def _run_pool(todo: list[ShardTask], output: Path, settings: EncodeSettings, rt: _Runtime,
              workers: int, bar: ImageBar,
              finished: Callable[[ShardTask, dict | None, str | None], None],
              dictionary: bytes | None) -> None:
    """Encode ``todo`` on ``workers`` processes, one whole shard per process at a time."""
    # spawn, not fork: the parent may already run OpenMP threads, which fork breaks.
    ctx = get_context("spawn")
    progress_queue = ctx.Queue()

    def drain() -> None:
        while True:
            try:
                bar.advance(progress_queue.get_nowait())
            except queue_module.Empty:
                return

    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(progress_queue, os.getpid())) as pool:
        futures = {pool.submit(_worker_encode, t, output, settings, rt, dictionary): t
                   for t in todo}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                drain()
                for future in done:
                    # A killed worker surfaces as BrokenProcessPool, a RuntimeError.
                    try:
                        manifest = future.result()
                    except SHARD_ERRORS as exc:
                        finished(futures[future], None, f"{type(exc).__name__}: {exc}")
                    else:
                        finished(futures[future], manifest, None)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    drain()


def _dry_run(tasks: list[ShardTask], mine: list[ShardTask], states: dict[str, str], output: Path,
             settings: EncodeSettings, rank: int, world_size: int, workers: int,
             device: str) -> dict[str, Any]:
    """Print (stdout) and return what a run would do; touches nothing."""
    todo = [t for t in mine if states[t.name] == "todo"]
    known = sum(t.expected or 0 for t in todo)
    uncounted = sum(t.expected is None for t in todo)
    print(f"dry run: {len(tasks)} output shard(s) in {output}; rank {rank}/{world_size} "
          f"has {len(mine)}: {len(todo)} to encode, {len(mine) - len(todo)} complete (skipped)")
    print(f"settings: {settings.as_dict()}; device {device}, {workers} worker(s)")
    if settings.dictionary_id == 0:
        print(f"would train a zstd dictionary on {tasks[0].name} into "
              f"{output / DICTIONARY_FILE}")
    for task in mine:
        count = "? images" if task.expected is None else f"{task.expected} images"
        action = "encode" if states[task.name] == "todo" else "skip (complete)"
        where = task.source["path"]
        if "start" in task.source:
            where += f" [{task.source['start']}:{task.source['stop']}]"
        print(f"  {task.name}.tar  <- {where}  ({count})  {action}")
    images = f"{known} images" + (f" + {uncounted} tar shard(s) not counted" if uncounted else "")
    print(f"would encode {images}")
    return {
        "dry_run": True,
        "output": str(output),
        "settings": settings.as_dict(),
        "shards": len(tasks),
        "rank": rank,
        "world_size": world_size,
        "plan": [{"shard": f"{t.name}.tar", "source": t.source, "images": t.expected,
                  "action": "encode" if states[t.name] == "todo" else "skip"} for t in mine],
    }
