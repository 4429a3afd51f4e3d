"""Seq2seq translation with attention: BiLSTM encoder, LSTM decoder, greedy/beam decoding."""

from __future__ import annotations

from keras import ops

from zoo import registry
from zoo.seq2seq.decoding import beam_search, greedy_decode
from zoo.seq2seq.model import Seq2SeqTranslator
from zoo.seq2seq.presets import MODEL_KEYS, PRESETS

__all__ = ["Seq2SeqTranslator", "beam_search", "build", "greedy_decode", "PRESETS"]


def build(config: dict) -> Seq2SeqTranslator:
    """A translator from a preset config (only the model keys are used)."""
    missing = [key for key in MODEL_KEYS if key not in config]
    if missing:
        raise KeyError(f"seq2seq config lacks {missing}")
    model = Seq2SeqTranslator(**{key: config[key] for key in MODEL_KEYS})
    # Create the variables now, so weights can be loaded and the optimizer built at once.
    dummy = ops.ones((1, 2), "int32")
    model({"source_ids": dummy, "target_in": dummy})
    return model


registry.register(
    registry.ModelSpec(
        name="seq2seq",
        task="translation",
        description="BiLSTM encoder + LSTM decoder with attention; greedy and beam search",
        builder=build,
        presets=PRESETS,
        default_preset="default",
        dataset="multi30k (../shared/data/multi30k: {train,val}.{en,de,fr}) or any line-aligned pair",
        recipe="training.recipes.seq2seq",
        paper=(
            "Sutskever et al. 2014, Sequence to Sequence Learning with Neural Networks; "
            "Bahdanau et al. 2015; Luong et al. 2015, Effective Approaches to Attention-based NMT"
        ),
    )
)
