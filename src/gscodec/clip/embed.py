"""Precomputed teacher targets: ``gscodec-train embed`` writes them, ``distill`` reads them.

For each sample of RGB shards, the teacher's image embedding of K views
(view 0 the image itself, views 1..K-1 drawn by `gscodec.clip.augment` from
``seed`` and the sample key, so reruns give the same views) is stored, with
the views, as one member ``KEY.teacher.npz`` in a shard named like its input
shard, in an output folder beside the ``.gsi`` shards. With
``--teacher-embeddings``, stage 1 then needs neither the RGB images nor a
teacher forward pass: each step picks one stored view per sample and applies
that view to the splats.

``KEY.teacher.npz`` holds ``embedding`` [K, D] float32 (not normalized),
``views`` [K, 7] float32 (`View` fields in order) and, when written with a
token layer, ``tokens`` [K, 1 + P, W] float16 (the teacher's hidden tokens
after that block). ``teacher_embeddings.json`` beside the shards records
the teacher, D, K, the token layer and the augmentation.
"""

from __future__ import annotations

import dataclasses
import io
import json
import random
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from gscodec.datasets import expand_shards, iter_samples
from gscodec.datasets.tario import ShardWriter

from .augment import SplatAugment, View, augment_image, draw_view
from .data import TarIndex, decode_image
from .model import capture_tokens

__all__ = [
    "MEMBER",
    "METADATA_FILE",
    "write_teacher_embeddings",
    "TeacherEmbeddings",
    "sample_views",
    "pick",
]

#: Member extension of a sample's targets in the embedding shards.
MEMBER = "teacher.npz"
#: Metadata file beside the embedding shards.
METADATA_FILE = "teacher_embeddings.json"

_VIEW_FIELDS = [f.name for f in dataclasses.fields(View)]


def sample_views(key: str, n_views: int, augment: SplatAugment, seed: int) -> list[View]:
    """The ``n_views`` views of sample ``key``: the identity, then views drawn from (seed, key)."""
    rng = random.Random(f"{seed}:{key}")
    return [View()] + [draw_view(augment, rng) for _ in range(n_views - 1)]


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@torch.no_grad()
def write_teacher_embeddings(
    teacher: Any,
    preprocess: Any,
    rgb_shards: Any,
    output: str | Path,
    *,
    n_views: int = 1,
    augment: SplatAugment = SplatAugment(),
    seed: int = 0,
    token_layer: int | None = None,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the teacher's targets for every sample of ``rgb_shards`` into ``output``.

    One output shard per input shard (same file name); shards already there
    are kept, so an interrupted run continues. Returns the metadata written
    to ``output/teacher_embeddings.json``.
    """
    if n_views < 1:
        raise ValueError(f"--views must be >= 1, got {n_views}")
    if n_views > 1 and not (augment.flip or augment.min_crop < 1 or augment.jitter):
        raise ValueError("--views > 1 needs --aug-flip, --aug-min-crop or --aug-jitter: "
                         "without augmentation every view is the same image")
    if augment.dropout:
        raise ValueError("--aug-dropout applies to the splats at training time, not to embed")
    shards = expand_shards(rgb_shards)
    names = [Path(s).name for s in shards]
    if len(set(names)) != len(names):
        raise ValueError("embed: input shards must have distinct file names")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    teacher = teacher.eval().to(device)
    per_batch = max(1, batch_size // n_views)

    def flush(writer: ShardWriter, keys: list[str], images: list[torch.Tensor],
              views: list[list[View]]) -> None:
        with capture_tokens(teacher.visual, token_layer) if token_layer is not None \
                else nullcontext([]) as captured:  # fmt: skip
            embedding = teacher.encode_image(torch.stack(images).to(device)).float().cpu()
        embedding = embedding.view(len(keys), n_views, -1).numpy()
        tokens = captured[0].float().cpu() if captured else None
        for i, key in enumerate(keys):
            arrays = {
                "embedding": embedding[i],
                "views": np.array([[getattr(v, f) for f in _VIEW_FIELDS] for v in views[i]],
                                  dtype=np.float32),
            }
            if tokens is not None:
                arrays["tokens"] = tokens[i * n_views:(i + 1) * n_views].numpy().astype(np.float16)
            writer.add(key, {MEMBER: _npz(arrays)})

    count = 0
    for shard, name in zip(tqdm(shards, desc="embed", disable=None), names):
        if (out / name).is_file():
            continue
        with ShardWriter(out / name) as writer:
            keys, images, views = [], [], []
            for sample in iter_samples([shard], decode_gsi=False):
                key = sample["__key__"]
                image = decode_image(sample)
                sample_view_list = sample_views(key, n_views, augment, seed)
                keys.append(key)
                views.append(sample_view_list)
                images += [preprocess(augment_image(image, v)) for v in sample_view_list]
                if len(keys) == per_batch:
                    flush(writer, keys, images, views)
                    keys, images, views = [], [], []
            if keys:
                flush(writer, keys, images, views)
            count += writer.count
            writer.commit()
    record = {
        **(metadata or {}),
        "embed_dim": int(teacher.visual.output_dim),
        "views": n_views,
        "token_layer": token_layer,
        "augment": dataclasses.asdict(augment),
        "seed": seed,
        "shards": names,
    }
    (out / METADATA_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


class TeacherEmbeddings:
    """Random access, by sample key, to the targets `write_teacher_embeddings` wrote."""

    def __init__(self, paths: Any):
        self.shards = expand_shards(paths)
        meta_file = Path(self.shards[0]).parent / METADATA_FILE
        if not meta_file.is_file():
            raise FileNotFoundError(
                f"--teacher-embeddings: no {METADATA_FILE} beside {self.shards[0]} "
                "(write the shards with gscodec-train embed)"
            )
        self.metadata: dict[str, Any] = json.loads(meta_file.read_text(encoding="utf-8"))
        self.index = TarIndex(self.shards, extensions=(MEMBER,))

    @property
    def embed_dim(self) -> int:
        """Width of the stored embeddings."""
        return int(self.metadata["embed_dim"])

    @property
    def token_layer(self) -> int | None:
        """The block after which hidden tokens were stored (None: no tokens)."""
        return self.metadata.get("token_layer")

    def __getitem__(self, key: str) -> tuple[np.ndarray, list[View], np.ndarray | None]:
        """``(embedding [K, D], views, tokens [K, 1 + P, W] or None)`` of sample ``key``."""
        with np.load(io.BytesIO(self.index[key][MEMBER])) as arrays:
            views = [View(**dict(zip(_VIEW_FIELDS, map(float, row)))) for row in arrays["views"]]
            views = [dataclasses.replace(v, flip=bool(v.flip)) for v in views]
            tokens = arrays["tokens"] if "tokens" in arrays else None
            return arrays["embedding"], views, tokens


def pick(targets: tuple[np.ndarray, list[View], np.ndarray | None], rng: random.Random
         ) -> tuple[View, torch.Tensor, torch.Tensor | None]:
    """One stored view of a sample, uniformly: ``(view, embedding [D], tokens or None)``."""
    embedding, views, tokens = targets
    i = rng.randrange(len(views))
    token = torch.from_numpy(tokens[i].astype(np.float32)) if tokens is not None else None
    return views[i], torch.from_numpy(np.ascontiguousarray(embedding[i])), token
