"""Seq2seq translation with attention: BiLSTM encoder, LSTM decoder, greedy/beam decoding."""

from __future__ import annotations

import numpy as np

from zoo import registry
from zoo.seq2seq.model import Seq2SeqTranslator
from zoo.seq2seq.presets import MODEL_KEYS, PRESETS

__all__ = ["SPEC", "Seq2SeqTranslator", "build", "PRESETS"]


def build(config: dict) -> Seq2SeqTranslator:
    """A translator from a preset config (only the model keys are used)."""
    missing = [key for key in MODEL_KEYS if key not in config]
    if missing:
        raise KeyError(f"seq2seq config lacks {missing}")
    return Seq2SeqTranslator(**{key: config[key] for key in MODEL_KEYS})


def example_inputs(config: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Two source sentences of 7 ids and target prefixes of 5 ids."""
    return {
        "source_ids": rng.integers(4, 9, size=(2, 7)).astype("int32"),
        "target_in": rng.integers(4, 9, size=(2, 5)).astype("int32"),
    }


SPEC = registry.ModelSpec(
    name="seq2seq",
    reference_dataset="multi30k",
    task="translation",
    description="BiLSTM encoder + LSTM decoder with attention; greedy and beam search",
    builder=build,
    presets=PRESETS,
    default_preset="default",
    example_inputs=example_inputs,
    example_sizes={"source_vocab_size": 65, "target_vocab_size": 65},
)
