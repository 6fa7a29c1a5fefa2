"""Zero-shot evaluation: classification from class names + templates, image<->text retrieval.

Works for RGB open_clip models (images) and `GSCLIP` models (splats) alike;
the text side is open_clip's ``build_zero_shot_classifier``.
"""

from __future__ import annotations

from itertools import islice
from typing import Any, Callable, Iterable, Iterator, Sequence

import open_clip
import torch
import torch.nn.functional as F

from .data import collate_splats, decode_image, iter_eval_samples
from .model import GSCLIP

__all__ = [
    "CIFAR10_TEMPLATES",
    "TEMPLATES",
    "build_classifier",
    "classification_metrics",
    "retrieval_metrics",
    "embed_samples",
    "evaluate",
]

#: The prompts OpenAI's CLIP uses for CIFAR-10 (and CIFAR-100).
CIFAR10_TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a photo of the {}.",
    "a blurry photo of the {}.",
    "a black and white photo of the {}.",
    "a low contrast photo of the {}.",
    "a high contrast photo of the {}.",
    "a bad photo of the {}.",
    "a good photo of the {}.",
    "a photo of the small {}.",
    "a photo of the big {}.",
)

#: Template sets by name (``--templates``).
TEMPLATES: dict[str, Sequence[str]] = {
    "cifar10": CIFAR10_TEMPLATES,
    "imagenet": open_clip.OPENAI_IMAGENET_TEMPLATES,
    "simple": open_clip.SIMPLE_IMAGENET_TEMPLATES,
}


def build_classifier(
    model: Any,
    tokenizer: Callable,
    class_names: Sequence[str],
    templates: Sequence[str | Callable],
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """[embed_dim, n_classes] zero-shot weights: mean normalized text embedding per class."""
    return open_clip.build_zero_shot_classifier(
        model, tokenizer, class_names, templates, device=device
    )


def classification_metrics(
    logits: torch.Tensor, labels: torch.Tensor, topk: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """CLIP_benchmark's classification metrics of ``logits`` [N, classes] against ``labels`` [N].

    ``acc{k}``: fraction of rows whose label is among the k best logits.
    ``mean_per_class_recall``: top-1 recall averaged over the classes present
    in ``labels`` (balanced accuracy), so a frequent class does not dominate.
    """
    k_max = min(max(topk), logits.shape[1])
    pred = logits.topk(k_max, dim=1).indices
    hit = pred == labels.unsqueeze(1)
    out = {f"acc{k}": hit[:, : min(k, k_max)].any(1).float().mean().item() for k in topk}
    top1_hit = hit[:, 0].float()
    classes = labels.unique()
    recalls = [top1_hit[labels == c].mean() for c in classes]
    out["mean_per_class_recall"] = torch.stack(recalls).mean().item() if recalls else 0.0
    return out


def retrieval_metrics(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@k both ways, named as CLIP_benchmark names them.

    ``text_to_image[j]`` is the image caption j belongs to.
    ``image_retrieval_recall@k``: fraction of captions whose image ranks in
    their top k images; ``text_retrieval_recall@k``: fraction of images with
    any of their captions in their top k captions.
    """
    sim = (
        F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T
    )  # [images, texts]
    out = {}
    n_images = image_features.shape[0]
    for k in ks:
        top_images = sim.T.topk(min(k, n_images), dim=1).indices  # [texts, k]
        out[f"image_retrieval_recall@{k}"] = (
            (top_images == text_to_image.unsqueeze(1)).any(1).float().mean().item()
        )
        top_texts = sim.topk(min(k, sim.shape[1]), dim=1).indices  # [images, k]
        hits = text_to_image[top_texts] == torch.arange(n_images).unsqueeze(1)
        out[f"text_retrieval_recall@{k}"] = hits.any(1).float().mean().item()
    return out


def _batches(iterable: Iterable[Any], n: int) -> Iterator[list[Any]]:
    it = iter(iterable)
    while batch := list(islice(it, n)):
        yield batch


@torch.no_grad()
def embed_samples(
    model: Any,
    samples: Iterable[dict[str, Any]],
    *,
    preprocess: Callable | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, list[dict]]:
    """Normalized image embeddings [N, D] of samples, and the samples without their image data.

    A `GSCLIP` reads each sample's ``"gsi"`` splats; an RGB model its image
    member through ``preprocess``.
    """
    is_gs = isinstance(model, GSCLIP)
    if not is_gs and preprocess is None:
        raise ValueError("an RGB model needs preprocess")
    features, metas = [], []
    for batch in _batches(samples, batch_size):
        if is_gs:
            if any("gsi" not in s for s in batch):
                raise KeyError("a GS model needs samples with .gsi splats (pass GS shards)")
            splats, mask = collate_splats([s["gsi"] for s in batch])
            emb = model.encode_image(splats.to(device), mask.to(device), normalize=True)
        else:
            images = torch.stack([preprocess(decode_image(s)) for s in batch]).to(device)
            emb = model.encode_image(images, normalize=True)
        features.append(emb.float().cpu())
        metas += [{k: v for k, v in s.items() if k in ("__key__", "cls", "txt")} for s in batch]
    dim = model.visual.output_dim
    return (torch.cat(features) if features else torch.empty(0, dim)), metas


@torch.no_grad()
def evaluate(
    model: Any,
    tokenizer: Callable,
    paths: Any,
    *,
    preprocess: Callable | None = None,
    class_names: Sequence[str] | None = None,
    templates: Sequence[str] = CIFAR10_TEMPLATES,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Zero-shot metrics of ``model`` on a dataset (tar shards, image folder or caption CSV).

    Classification (`classification_metrics`: ``acc1``, ``acc5``,
    ``mean_per_class_recall``) when samples carry ``.cls`` and class names
    are known (given, or the data's ``classes.txt``); retrieval
    (`retrieval_metrics`: ``image_retrieval_recall@k``,
    ``text_retrieval_recall@k``) when they carry ``.txt`` captions (one per
    line). Also returns ``n`` (images evaluated).
    """
    model.eval()
    samples, found_names = iter_eval_samples(paths)
    class_names = list(class_names or found_names or [])
    features, metas = embed_samples(
        model, samples, preprocess=preprocess, batch_size=batch_size, device=device
    )
    result: dict[str, Any] = {"n": len(metas)}
    labelled = [i for i, m in enumerate(metas) if "cls" in m]
    if labelled and class_names:
        weights = (
            build_classifier(model, tokenizer, class_names, templates, device=device).float().cpu()
        )
        labels = torch.tensor([int(metas[i]["cls"]) for i in labelled])
        result.update(classification_metrics(features[labelled] @ weights, labels))
    captions, owner = [], []
    for i, m in enumerate(metas):
        for line in m.get("txt", b"").decode("utf-8").splitlines():
            if line.strip():
                captions.append(line.strip())
                owner.append(i)
    if captions:
        text = torch.cat(
            [
                model.encode_text(tokenizer(chunk).to(device), normalize=True).float().cpu()
                for chunk in _batches(captions, batch_size)
            ]
        )
        result.update(retrieval_metrics(features, text, torch.tensor(owner)))
    return result
