"""Zero-shot evaluation on toy problems whose answers are known."""

import io
import tarfile

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="gscodec.clip needs the clip extra (torch)")
pytest.importorskip("open_clip", reason="gscodec.clip needs the clip extra (open_clip_torch)")

import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision.transforms import ToTensor  # noqa: E402

from gscodec.clip.zeroshot import classification_metrics, evaluate, retrieval_metrics  # noqa: E402

COLOURS = ["red", "green", "blue"]


class ColourCLIP(torch.nn.Module):
    """A CLIP whose answer is known: image = mean colour, text = one-hot of its colour word."""

    def __init__(self):
        super().__init__()
        self.visual = torch.nn.Identity()
        self.visual.output_dim = 3

    def encode_image(self, images, normalize=False):
        f = images.mean((2, 3))
        return F.normalize(f, dim=-1) if normalize else f

    def encode_text(self, tokens, normalize=False):
        f = F.one_hot(tokens, 3).float()
        return F.normalize(f, dim=-1) if normalize else f


def colour_tokenizer(texts):
    return torch.tensor([next(i for i, c in enumerate(COLOURS) if c in t) for t in texts])


def colour_image(label: int, rng) -> bytes:
    pixels = rng.integers(0, 60, (8, 8, 3), dtype=np.uint8)
    pixels[..., label] = 200
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_classification_on_shards_is_perfect(tmp_path):
    rng = np.random.default_rng(0)
    with tarfile.open(tmp_path / "toy-0.tar", "w") as tar:
        for i in range(12):
            for ext, data in (("png", colour_image(i % 3, rng)), ("cls", str(i % 3).encode())):
                info = tarfile.TarInfo(f"{i:03d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    (tmp_path / "classes.txt").write_text("\n".join(COLOURS))
    result = evaluate(
        ColourCLIP(),
        colour_tokenizer,
        tmp_path,
        preprocess=ToTensor(),
        templates=["a photo of something {}."],
    )
    assert result == {"n": 12, "acc1": 1.0, "acc5": 1.0, "mean_per_class_recall": 1.0}
    # with the class names in the wrong order, every answer is wrong
    wrong = evaluate(
        ColourCLIP(),
        colour_tokenizer,
        tmp_path,
        preprocess=ToTensor(),
        class_names=COLOURS[1:] + COLOURS[:1],
        templates=["{}"],
    )
    assert wrong["acc1"] == wrong["mean_per_class_recall"] == 0.0


def test_class_folder_and_caption_csv(tmp_path):
    rng = np.random.default_rng(1)
    for label, colour in enumerate(COLOURS):
        (tmp_path / "folder" / colour).mkdir(parents=True)
        (tmp_path / "folder" / colour / "a.png").write_bytes(colour_image(label, rng))
        (tmp_path / "csv" / "images").mkdir(parents=True, exist_ok=True)
        (tmp_path / "csv" / "images" / f"{colour}.png").write_bytes(colour_image(label, rng))
    assert (
        evaluate(
            ColourCLIP(),
            colour_tokenizer,
            tmp_path / "folder",
            preprocess=ToTensor(),
            templates=["{}"],
        )["acc1"]
        == 1.0
    )
    rows = (
        ["image,caption"]
        + [f"{c}.png,a {c} square" for c in COLOURS]
        + [f"{c}.png,{c} again" for c in COLOURS]
    )
    (tmp_path / "csv" / "captions.csv").write_text("\n".join(rows) + "\n")
    result = evaluate(
        ColourCLIP(), colour_tokenizer, tmp_path / "csv" / "captions.csv", preprocess=ToTensor()
    )
    assert result["n"] == 3
    assert all(
        result[f"{d}_retrieval_recall@{k}"] == 1.0 for d in ("image", "text") for k in (1, 5, 10)
    )


def test_metrics_known_values():
    logits = torch.tensor([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    m = classification_metrics(logits, torch.tensor([0, 1, 0]), topk=(1, 2))
    # class 0: 1 of 2 right, class 1: 0 of 1 right
    assert m == {
        "acc1": pytest.approx(1 / 3),
        "acc2": pytest.approx(2 / 3),
        "mean_per_class_recall": pytest.approx(0.25),
    }
    images = torch.eye(2)
    texts = F.normalize(
        torch.tensor([[1.0, 0.0], [0.9, 0.1]]), dim=-1
    )  # caption 1 looks like image 0
    r = retrieval_metrics(images, texts, torch.tensor([0, 1]), ks=(1, 5))
    assert r == {
        "image_retrieval_recall@1": 0.5,
        "text_retrieval_recall@1": 1.0,
        "image_retrieval_recall@5": 1.0,
        "text_retrieval_recall@5": 1.0,
    }


def test_mean_per_class_recall_weighs_classes_equally():
    """Known answer: 3 samples of class 0 (1 right), 1 of class 1 (right); class 2 only predicted.

    acc1 = 2/4, but the mean per-class recall is (1/3 + 1) / 2 = 2/3: the rare class counts as
    much as the common one, and a class absent from the labels does not count (as sklearn's
    balanced_accuracy_score, which CLIP_benchmark uses).
    """
    logits = torch.tensor(
        [[5.0, 0.0, 1.0], [0.0, 5.0, 1.0], [0.0, 1.0, 5.0], [0.0, 5.0, 1.0]]
    )  # predictions 0, 1, 2, 1
    m = classification_metrics(logits, torch.tensor([0, 0, 0, 1]), topk=(1,))
    assert m["acc1"] == pytest.approx(0.5)
    assert m["mean_per_class_recall"] == pytest.approx(2 / 3)
