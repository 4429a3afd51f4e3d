"""The classic Keras CIFAR-10 convnet (keras-team/keras examples/cifar10_cnn.py), as an image
classifier: a backbone of two conv blocks and the example's dense head."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from zoo.tasks.image_classifier import PROBABILITIES, Head, build_image_classifier

#: The backbone output the classification head reads.
HEAD_FEATURE = "block2"


def cifar_backbone(config: dict[str, Any]) -> keras.Model:
    """The convnet's feature extractor: two blocks of conv 3x3 ("same"), conv 3x3
    ("valid"), max pool 2x2 and dropout.

    Config keys: `image_size` (int, square input side), `filters` (the two blocks' widths,
    32 and 64 in the paper preset), `dropout_conv` (0.25). Takes float pixels in [0, 255]
    of shape (image_size, image_size, 3) and returns {"block1": ..., "block2": ...}, each
    block's output (15x15x32 and 6x6x64 at 32 px in the paper preset).
    """
    size = int(config["image_size"])
    inputs = keras.Input(shape=(size, size, 3), name="pixels")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    features = {}
    for i, filters in enumerate((int(f) for f in config["filters"]), start=1):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}a")(x)
        x = layers.Conv2D(filters, 3, activation="relu", name=f"conv{i}b")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
        x = layers.Dropout(config["dropout_conv"], name=f"dropout{i}")(x)
        features[f"block{i}"] = x
    return keras.Model(inputs, features, name="cifar_backbone")


def classification_head(config: dict[str, Any]) -> Head:
    """The example's head: flatten, dense `dense_units` (512) + ReLU, dropout
    `dropout_dense` (0.5), dense `num_classes` + softmax (the layer "probabilities")."""

    def head(features: keras.KerasTensor) -> keras.KerasTensor:
        x = layers.Flatten(name="flatten")(features)
        x = layers.Dense(int(config["dense_units"]), activation="relu", name="dense")(x)
        x = layers.Dropout(config["dropout_dense"], name="dropout_dense")(x)
        return layers.Dense(int(config["num_classes"]), activation="softmax", name=PROBABILITIES)(x)

    return head


def build_cifar_convnet(config: dict[str, Any]) -> keras.Model:
    """Build the convnet from a config: `cifar_backbone` + `classification_head`.

    Config keys: those of the two parts (`image_size`, `filters`, `dropout_conv`,
    `dense_units`, `dropout_dense`, `num_classes`). The model takes float pixels in
    [0, 255] of shape (image_size, image_size, 3) and returns class probabilities.

    Example:
        >>> model = build_cifar_convnet(PRESETS["tiny"])
        >>> model.output_shape
        (None, 10)
    """
    return build_image_classifier(
        cifar_backbone(config), classification_head(config), HEAD_FEATURE, name="cifar_convnet"
    )
