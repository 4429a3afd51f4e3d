"""The BiLSTM part-of-speech tagger: model, presets and registration."""

import numpy as np

from zoo import registry
from zoo.tagger.model import CharCNN, build_tagger
from zoo.tagger.presets import PRESETS


def example_inputs(config: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Two sentences of 7 words: word ids and character ids (small valid ids)."""
    return {
        "words": rng.integers(1, 3, size=(2, 7)).astype("int32"),
        "chars": rng.integers(1, 3, size=(2, 7, int(config["max_word_length"]))).astype("int32"),
    }


SPEC = registry.ModelSpec(
    name="tagger",
    reference_dataset="ud_english_ewt",
    task="tagging",
    description="BiLSTM part-of-speech tagger with word embeddings and a character CNN (UPOS)",
    builder=build_tagger,
    presets=PRESETS,
    default_preset="default",
    example_inputs=example_inputs,
    example_sizes={"word_vocab_size": 50, "char_vocab_size": 30, "num_tags": 17},
)

__all__ = ["SPEC", "PRESETS", "CharCNN", "build_tagger"]
