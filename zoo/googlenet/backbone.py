"""The GoogLeNet (Inception v1) backbone: pixels -> named feature maps.

Szegedy et al., "Going Deeper with Convolutions" (2014), Table 1. All convolutions and
poolings are "same"-padded, so at 224 px the maps are 112 -> 56 -> 28 -> 14 -> 7 (the
paper's sizes; Caffe's bvlc_googlenet gets the same sizes from ceil-mode pooling).

| stage (output key) | layers                                   | output at 224 px |
|--------------------|------------------------------------------|------------------|
| conv1              | conv 7x7/2, 64                           | 112x112x64       |
| pool1              | max pool 3x3/2, LRN                      | 56x56x64         |
| conv2              | conv 1x1 64, conv 3x3 192, LRN           | 56x56x192        |
| pool2              | max pool 3x3/2                           | 28x28x192        |
| inception_3a / 3b  | Inception modules                        | 28x28x256 / 480  |
| pool3              | max pool 3x3/2                           | 14x14x480        |
| inception_4a .. 4e | Inception modules                        | 14x14x512 .. 832 |
| pool4              | max pool 3x3/2                           | 7x7x832          |
| inception_5a / 5b  | Inception modules                        | 7x7x832 / 1024   |

With `normalization: "batch_norm"` every convolution is Conv -> BN -> ReLU and the two LRN
layers are dropped. A width multiplier scales every convolution (the `tiny` preset).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from zoo.layers.inception import InceptionWidths, conv_block, inception_module, scale_width
from zoo.layers.normalization import LocalResponseNormalization

#: Table 1 of Szegedy et al. (2014): #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
INCEPTION_WIDTHS: dict[str, InceptionWidths] = {
    "inception_3a": InceptionWidths(64, 96, 128, 16, 32, 32),
    "inception_3b": InceptionWidths(128, 128, 192, 32, 96, 64),
    "inception_4a": InceptionWidths(192, 96, 208, 16, 48, 64),
    "inception_4b": InceptionWidths(160, 112, 224, 24, 64, 64),
    "inception_4c": InceptionWidths(128, 128, 256, 24, 64, 64),
    "inception_4d": InceptionWidths(112, 144, 288, 32, 64, 64),
    "inception_4e": InceptionWidths(256, 160, 320, 32, 128, 128),
    "inception_5a": InceptionWidths(256, 160, 320, 32, 128, 128),
    "inception_5b": InceptionWidths(384, 192, 384, 48, 128, 128),
}

#: Stem widths of Table 1: conv1 (7x7/2), conv2's 3x3 reduce (1x1) and conv2 (3x3).
STEM_WIDTHS = {"conv1": 64, "conv2_reduce": 64, "conv2": 192}

#: Caffe bvlc_googlenet's LRN (norm1, norm2): local_size 5, alpha 1e-4, beta 0.75, k 1.
LRN_ARGS = {"size": 5, "alpha": 1e-4, "beta": 0.75, "bias": 1.0}

NORMALIZATIONS = ("lrn", "batch_norm")

#: A max pool 3x3/2 after these modules (Table 1).
_POOL_AFTER = {"inception_3b": "pool3", "inception_4e": "pool4"}


def _max_pool(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
    return layers.MaxPooling2D(3, strides=2, padding="same", name=name)(x)


def googlenet_backbone(config: dict[str, Any]) -> keras.Model:
    """GoogLeNet's convolutional body (Szegedy et al., 2014, Table 1, up to inception 5b).

    Config keys read: `image_size` (square input side), `width` (multiplier on every
    convolution's filters; 1.0 is the paper) and `normalization` ("lrn": the paper's two
    LRN layers in the stem, convolutions with bias; "batch_norm": Conv -> BN -> ReLU
    everywhere and no LRN).

    The model takes float pixels in [0, 255] of shape (image_size, image_size, 3), scales
    them to [-1, 1] itself, and returns a dict of the stage outputs named in the module
    docstring ("conv1", "pool1", "conv2", "pool2", "inception_3a", ..., "inception_5b").

    Example:
        >>> backbone = googlenet_backbone(
        ...     {"image_size": 224, "width": 1.0, "normalization": "lrn"})
        >>> backbone.output["inception_5b"].shape
        (None, 7, 7, 1024)
    """
    normalization = config["normalization"]
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    # the BN variant: BatchNormalization's momentum; None in the paper's LRN network
    batch_norm = float(config["batch_norm_momentum"]) if normalization == "batch_norm" else None
    width = float(config["width"])
    size = int(config["image_size"])

    def lrn(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
        return x if batch_norm is not None else LocalResponseNormalization(**LRN_ARGS, name=name)(x)

    def stem_conv(x: keras.KerasTensor, key: str, kernel: int, strides: int = 1):
        filters = scale_width(STEM_WIDTHS[key], width)
        return conv_block(x, filters, kernel, strides=strides, name=key, batch_norm=batch_norm)

    inputs = keras.Input(shape=(size, size, 3), name="pixels")
    features: dict[str, keras.KerasTensor] = {}
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)
    x = features["conv1"] = stem_conv(x, "conv1", 7, strides=2)
    x = features["pool1"] = lrn(_max_pool(x, "pool1"), "norm1")
    x = stem_conv(x, "conv2_reduce", 1)
    x = features["conv2"] = lrn(stem_conv(x, "conv2", 3), "norm2")
    x = features["pool2"] = _max_pool(x, "pool2")
    for name, widths in INCEPTION_WIDTHS.items():
        x = features[name] = inception_module(
            x, widths.scaled(width), name=name, batch_norm=batch_norm
        )
        if name in _POOL_AFTER:
            x = features[_POOL_AFTER[name]] = _max_pool(x, _POOL_AFTER[name])
    return keras.Model(inputs, features, name="googlenet_backbone")
