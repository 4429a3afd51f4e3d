"""GoogLeNet (Inception v1; Szegedy et al., "Going Deeper with Convolutions", 2014).

The paper's network with its LRN stem and two auxiliary classifiers, an Inception-BN style
variant (`normalization: "batch_norm"`), and a width multiplier for tiny test models.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zoo import registry
from zoo.googlenet.backbone import googlenet_backbone
from zoo.googlenet.model import build_googlenet
from zoo.googlenet.presets import PRESETS


def example_inputs(config: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Two random images of the config's size: float32 pixels in [0, 255], [2, s, s, 3]."""
    size = int(config["image_size"])
    return rng.uniform(0.0, 255.0, size=(2, size, size, 3)).astype("float32")


SPEC = registry.ModelSpec(
    name="googlenet",
    reference_dataset="imagenette",
    task="image_classification",
    description="GoogLeNet / Inception v1 (Szegedy et al., 2014; ~7.0M parameters "
    "without the auxiliary heads), LRN or batch-norm variant",
    builder=build_googlenet,
    presets=PRESETS,
    default_preset="imagenette",
    example_inputs=example_inputs,
    example_sizes={},
)

__all__ = ["SPEC", "PRESETS", "build_googlenet", "example_inputs", "googlenet_backbone"]
