"""The Keras CIFAR-10 convnet: model, presets and its spec."""

import numpy as np

from zoo import registry
from zoo.cifar_convnet.model import build_cifar_convnet, cifar_backbone
from zoo.cifar_convnet.presets import PRESETS


def example_pixels(config: dict, rng: np.random.Generator) -> np.ndarray:
    """Two images of float pixels in [0, 255]."""
    size = int(config["image_size"])
    return rng.uniform(0, 255, size=(2, size, size, 3)).astype("float32")


SPEC = registry.ModelSpec(
    name="cifar_convnet",
    reference_dataset="cifar10",
    task="image_classification",
    description="The classic Keras CIFAR-10 convnet (4 conv, 2 dense; ~1.25M parameters)",
    builder=build_cifar_convnet,
    presets=PRESETS,
    default_preset="paper",
    example_inputs=example_pixels,
)

__all__ = ["SPEC", "PRESETS", "build_cifar_convnet", "cifar_backbone", "example_pixels"]
