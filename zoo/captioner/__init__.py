"""Show, Attend and Tell (Xu et al. 2015): image captioning with soft attention over a zoo
backbone's feature grid; greedy and beam search through `zoo.layers.decoding`."""

from __future__ import annotations

import numpy as np

from zoo import registry
from zoo.captioner.model import ShowAttendTell, encoder_backbone
from zoo.captioner.presets import MODEL_KEYS, PRESETS

__all__ = ["SPEC", "PRESETS", "ShowAttendTell", "build", "encoder_backbone"]


def build(config: dict) -> ShowAttendTell:
    """A captioner from a preset config (only the model keys are used)."""
    missing = [key for key in MODEL_KEYS if key not in config]
    if missing:
        raise KeyError(f"captioner config lacks {missing}")
    # word_dropout is newer than the published runs, whose configs lack it
    # its constructor creates every variable: no call is needed to build it (an eager call
    # cost 5 s of per-op compiles under JAX)
    return ShowAttendTell(
        **{key: config[key] for key in MODEL_KEYS}, word_dropout=config.get("word_dropout", 0.0)
    )


def example_inputs(config: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Two images of the config's size and caption prefixes of 5 ids."""
    size = int(config["image_size"])
    return {
        "pixels": rng.uniform(0.0, 255.0, size=(2, size, size, 3)).astype("float32"),
        "target_in": rng.integers(4, 9, size=(2, 5)).astype("int32"),
    }


SPEC = registry.ModelSpec(
    name="captioner",
    reference_dataset="flickr8k",
    task="captioning",
    description="Show, Attend and Tell: LSTM with soft attention over GoogLeNet's feature grid",
    builder=build,
    presets=PRESETS,
    default_preset="default",
    example_inputs=example_inputs,
    example_sizes={"target_vocab_size": 40},
)
