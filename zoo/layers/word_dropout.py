"""Word dropout on a decoder's teacher-forced input (Bowman et al. 2016; Iyyer et al. 2015).

During training each input word is replaced by the unknown token with probability `rate`,
so the decoder learns to continue a caption from its image and its state rather than from
the previous word alone, which a small corpus makes it lean on. Padding and the start token
are never replaced. At inference the ids pass unchanged. `keras.ops` and `keras.random`
only: the same layer under TensorFlow, JAX or PyTorch.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="tfzoo")
class WordDropout(layers.Layer):
    """ids [B, T] -> ids with each word, except `kept_ids`, replaced by `unk_id` with
    probability `rate` (training only)."""

    def __init__(
        self,
        rate: float,
        unk_id: int = 1,
        kept_ids: tuple[int, ...] = (0, 2),
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"word dropout rate must be in [0, 1), got {rate}")
        self.rate, self.unk_id, self.kept_ids = float(rate), int(unk_id), tuple(kept_ids)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, ids, training: bool = False):
        if not training or self.rate == 0.0:
            return ids
        ids = ops.cast(ids, "int32")
        drop = keras.random.uniform(ops.shape(ids), seed=self.seed_generator) < self.rate
        for kept in self.kept_ids:
            drop = ops.logical_and(drop, ops.not_equal(ids, kept))
        return ops.where(drop, ops.full_like(ids, self.unk_id), ids)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(rate=self.rate, unk_id=self.unk_id, kept_ids=list(self.kept_ids))
        config.update(seed=self.seed)
        return config
