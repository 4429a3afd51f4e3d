"""Image classification data from a folder `root/[split/]class/image` or from TFDS.

The reader is generic: CIFAR-10 in ../shared/data/cifar10, Imagenette, or a user's own
folder of images for fine-tuning all go through `image_folder_splits`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # TensorFlow: the tf.data side only (`zoo prepare` reads files without it)
    import tensorflow as tf

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif"}
_SPLIT_NAMES = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation", "dev"),
    "test": ("test", "testing"),
}


@dataclass
class LabeledFiles:
    """Image paths with integer labels indexing `class_names`."""

    paths: list[str]
    labels: list[int]
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.paths)


def _list_classes(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _list_files(folder: Path, class_names: list[str]) -> LabeledFiles:
    paths, labels = [], []
    for label, name in enumerate(class_names):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(str(path))
                labels.append(label)
    return LabeledFiles(paths, labels, class_names)


def image_folder_splits(
    root: str | Path, val_fraction: float = 0.1, seed: int = 0
) -> dict[str, LabeledFiles]:
    """Find train / val / test splits under `root`.

    `root/train/<class>/...` (+ optional val/test folders) is used as is; a flat
    `root/<class>/...` becomes the train split with `val_fraction` of each class carved off,
    deterministically, as validation. Class names come from the train folder, sorted.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Image folder not found: {root}")
    found = {}
    for split, aliases in _SPLIT_NAMES.items():
        for alias in aliases:
            if (root / alias).is_dir():
                found[split] = root / alias
                break
    if "train" not in found:
        class_names = _list_classes(root)
        if not class_names:
            raise ValueError(f"No class folders under {root} (expected root/[train/]class/image)")
        return _carve_validation(_list_files(root, class_names), val_fraction, seed)
    class_names = _list_classes(found["train"])
    if not class_names:
        raise ValueError(f"No class folders under {found['train']}")
    splits = {split: _list_files(folder, class_names) for split, folder in found.items()}
    if not len(splits["train"]):
        raise ValueError(
            f"No images under {found['train']} (extensions {sorted(IMAGE_EXTENSIONS)})"
        )
    splits = {split: files for split, files in splits.items() if len(files)}
    if len(splits) == 1:
        return _carve_validation(splits["train"], val_fraction, seed)
    return splits


def linked_subset(
    source: Path,
    target: Path,
    per_class: int,
    splits=("train", "test"),
    classes: list[str] | None = None,
) -> Path:
    """A split/class/image folder at `target` of symlinks to the first `per_class` images
    of each class of `source` (all classes, or `classes`): a slice of a dataset, no copies."""
    for split in splits:
        for class_dir in sorted((source / split).iterdir()):
            if classes and class_dir.name not in classes:
                continue
            out = target / split / class_dir.name
            out.mkdir(parents=True, exist_ok=True)
            for image in sorted(class_dir.iterdir())[:per_class]:
                link = out / image.name
                if not link.is_symlink():
                    link.symlink_to(image.resolve())
    return target


def _carve_validation(everything: LabeledFiles, val_fraction: float, seed: int) -> dict:
    """Split off `val_fraction` of each class, deterministically, as validation."""
    class_names = everything.class_names
    rng = random.Random(seed)
    train, val = LabeledFiles([], [], class_names), LabeledFiles([], [], class_names)
    for label in range(len(class_names)):
        items = [
            p for p, lab in zip(everything.paths, everything.labels, strict=True) if lab == label
        ]
        rng.shuffle(items)
        n_val = int(round(len(items) * val_fraction)) if len(items) > 1 else 0
        for i, path in enumerate(items):
            target = val if i < n_val else train
            target.paths.append(path)
            target.labels.append(label)
    return {"train": train, "val": val} if len(val) else {"train": train}


def decoded_dataset(files: LabeledFiles, image_size: int) -> tf.data.Dataset:
    """(uint8 image, int label) pairs decoded in parallel, not batched, not cached."""
    import tensorflow as tf

    from training.data.images import decode_image

    ds = tf.data.Dataset.from_tensor_slices((files.paths, files.labels))
    return ds.map(
        lambda path, label: (decode_image(tf.io.read_file(path), image_size), label),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def tfds_splits(name: str, data_dir: str | None = None) -> tuple[dict[str, tf.data.Dataset], list]:
    """TFDS (image, label) datasets per split and the class names; clear error when offline."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
        builder.download_and_prepare()
    except Exception as err:  # network errors come in many types
        raise RuntimeError(
            f"TFDS dataset {name!r} is not available ({type(err).__name__}: {err}). "
            "Offline? Pass --data-dir pointing at an image folder (split/class/image), "
            "e.g. ../shared/data/cifar10."
        ) from err
    class_names = builder.info.features["label"].names
    splits = {
        split: builder.as_dataset(split=split, as_supervised=True) for split in builder.info.splits
    }
    return splits, class_names


def batched(
    ds: tf.data.Dataset,
    batch_size: int,
    *,
    shuffle: int = 0,
    augment: Callable[[tf.Tensor], tf.Tensor] | None = None,
    cache: bool = True,
    seed: int | None = None,
) -> tf.data.Dataset:
    """cache -> shuffle -> batch (global batch size) -> augment -> float32 -> prefetch."""
    import tensorflow as tf

    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(shuffle, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    if augment is not None:
        ds = ds.map(lambda x, y: (augment(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
