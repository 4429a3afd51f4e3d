"""The classic Keras CIFAR-10 convnet (keras-team/keras examples/cifar10_cnn.py)."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers


def build_cifar_convnet(config: dict[str, Any]) -> keras.Model:
    """Build the convnet from a config.

    Config keys: `image_size` (int, square input side), `num_classes`, `filters` (two conv
    widths, 32 and 64 in the paper preset), `dense_units` (512), `dropout_conv` (0.25),
    `dropout_dense` (0.5). The model takes float pixels in [0, 255] of shape
    (image_size, image_size, 3) and returns class probabilities (softmax).

    Example:
        >>> model = build_cifar_convnet(PRESETS["tiny"])
        >>> model.output_shape
        (None, 10)
    """
    size = int(config["image_size"])
    f1, f2 = (int(f) for f in config["filters"])
    inputs = keras.Input(shape=(size, size, 3), name="pixels")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for i, filters in enumerate((f1, f2), start=1):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}a")(x)
        x = layers.Conv2D(filters, 3, activation="relu", name=f"conv{i}b")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
        x = layers.Dropout(config["dropout_conv"], name=f"dropout{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(int(config["dense_units"]), activation="relu", name="dense")(x)
    x = layers.Dropout(config["dropout_dense"], name="dropout_dense")(x)
    outputs = layers.Dense(int(config["num_classes"]), activation="softmax", name="probabilities")(
        x
    )
    return keras.Model(inputs, outputs, name="cifar_convnet")
