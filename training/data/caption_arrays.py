"""The captioner's prepared arrays as batches (any Keras backend, no TensorFlow): encoder
features of a pixel table, and teacher-forced caption batches over a prepared split."""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import numpy as np

from training.array_datasets import ShuffledBatches
from training.tasks.sequence_generation import teacher_forcing

if TYPE_CHECKING:
    from training.prepared import ShardedArray


def encoded(encoder: keras.Model, pixels: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """float16 [N, h, w, D]: a (frozen) encoder's feature maps of a pixel table, computed
    with Keras on any backend (`captions.feature_table`'s, in TensorFlow)."""
    out = [
        keras.ops.convert_to_numpy(
            encoder.predict_on_batch(pixels[i : i + batch_size].astype(np.float32))
        ).astype(np.float16)
        for i in range(0, len(pixels), batch_size)
    ]
    return np.concatenate(out)


def caption_batches(
    examples: dict[str, ShardedArray | np.ndarray],
    key: str,
    table: ShardedArray | np.ndarray,
    batch_size: int,
    bos_id: int,
    eos_id: int,
    shuffle: bool,
    seed: int | None = 0,
) -> ShuffledBatches:
    """Batches of ({key: table[image] as float32, "target_in"}, target_out, weights) of a
    prepared split, as `captions.caption_dataset` makes them, the targets padded to the
    split's longest caption."""
    width = int(examples["target"].shape[1]) + 1

    def make_batch(rows: dict[str, np.ndarray]):
        images = np.asarray(table[rows["image"]], np.float32)
        target_in, target_out, weights = teacher_forcing(
            rows["target"], rows["target_lengths"], width, bos_id, eos_id
        )
        return {key: images, "target_in": target_in}, target_out, weights

    arrays = {name: examples[name] for name in ("image", "target", "target_lengths")}
    return ShuffledBatches(
        arrays, batch_size, make_batch, shuffle=shuffle, drop_remainder=False, seed=seed
    )
