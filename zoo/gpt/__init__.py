"""GPT: a decoder-only character language model with KV-cached generation."""

from typing import Any

import numpy as np

from zoo import registry
from zoo.gpt.generation import generate, sample_logits, score
from zoo.gpt.model import GPT, BlockConfig, CausalSelfAttention, TransformerBlock
from zoo.gpt.presets import PRESETS


def build_gpt(config: dict[str, Any]) -> GPT:
    """Build a `GPT` from a preset config; its `vocab_size` (`DATA_DECIDED` in the presets)
    must be filled in."""
    if not config.get("vocab_size"):
        raise ValueError("config['vocab_size'] must be set (the recipe takes it from the data)")
    policy = config.get("dtype_policy", "float32")
    return GPT(
        vocab_size=config["vocab_size"],
        block_size=config["block_size"],
        n_layer=config["n_layer"],
        n_head=config["n_head"],
        n_embd=config["n_embd"],
        dropout=config.get("dropout", 0.0),
        use_bias=config.get("use_bias", True),
        dtype=None if policy == "auto" else policy,
        name="gpt",
    )


def example_inputs(config: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Two rows of 7 token ids."""
    return rng.integers(0, int(config["vocab_size"]), size=(2, 7)).astype("int32")


SPEC = registry.ModelSpec(
    name="gpt",
    reference_dataset="tinyshakespeare",
    task="language_modeling",
    description="GPT-2 style character language model (nanoGPT), KV-cached sampling",
    builder=build_gpt,
    presets=PRESETS,
    default_preset="baby",
    example_inputs=example_inputs,
    example_sizes={"vocab_size": 65},
)

__all__ = [
    "GPT",
    "PRESETS",
    "BlockConfig",
    "SPEC",
    "CausalSelfAttention",
    "TransformerBlock",
    "build_gpt",
    "generate",
    "sample_logits",
    "score",
]
