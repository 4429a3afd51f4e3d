"""The Keras CIFAR-10 convnet: model, presets and registration."""

from zoo import registry
from zoo.cifar_convnet.model import build_cifar_convnet
from zoo.cifar_convnet.presets import PRESETS

SPEC = registry.register(
    registry.ModelSpec(
        name="cifar_convnet",
        task="image_classification",
        description="The classic Keras CIFAR-10 convnet (4 conv, 2 dense; ~1.25M parameters)",
        builder=build_cifar_convnet,
        presets=PRESETS,
        default_preset="paper",
        dataset="TFDS cifar10, or an image folder split/class/image (e.g. ../shared/data/cifar10)",
        recipe="training.recipes.cifar_convnet",
        paper="keras-team/keras examples/cifar10_cnn.py (Chollet, 2015)",
    )
)

__all__ = ["SPEC", "PRESETS", "build_cifar_convnet"]
