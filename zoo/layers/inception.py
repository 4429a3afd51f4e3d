"""The Inception module and its convolution block (Szegedy et al., 2014).

"Going Deeper with Convolutions" (Szegedy et al., 2014), Figure 2(b): four parallel
branches over the same input, concatenated along channels:

- 1x1 convolution (`#1x1`);
- 1x1 reduction then 3x3 convolution (`#3x3 reduce`, `#3x3`);
- 1x1 reduction then 5x5 convolution (`#5x5 reduce`, `#5x5`);
- 3x3/1 max pooling then 1x1 projection (`pool proj`).

Every convolution is followed by ReLU ("All the convolutions, including those inside the
Inception modules, use rectified linear activation"). With `batch_norm` (a momentum) each
convolution is instead Conv (no bias) -> BatchNormalization -> ReLU, the Inception-BN
arrangement of Ioffe & Szegedy, "Batch Normalization" (2015), without its other changes.

These are functions over Keras tensors that add ordinary Keras layers to a functional
graph, so a model built from them serializes without custom objects.
"""

from __future__ import annotations

from typing import NamedTuple

import keras
from keras import layers


class InceptionWidths(NamedTuple):
    """The six filter counts of one Inception module, Table 1 of Szegedy et al. (2014).

    Fields, in the table's column order: `conv1x1` (#1x1), `reduce3x3` (#3x3 reduce),
    `conv3x3` (#3x3), `reduce5x5` (#5x5 reduce), `conv5x5` (#5x5), `pool_proj` (pool proj).
    """

    conv1x1: int
    reduce3x3: int
    conv3x3: int
    reduce5x5: int
    conv5x5: int
    pool_proj: int

    @property
    def output_channels(self) -> int:
        """Channels of the module's output: the concatenated branch widths."""
        return self.conv1x1 + self.conv3x3 + self.conv5x5 + self.pool_proj

    def scaled(self, width: float) -> InceptionWidths:
        """Every width multiplied by `width` (rounded, at least 1)."""
        return InceptionWidths(*(scale_width(n, width) for n in self))


def scale_width(filters: int, width: float) -> int:
    """`filters * width` rounded to the nearest integer, at least 1 (a width multiplier)."""
    return max(1, int(round(filters * width)))


def conv_block(
    x: keras.KerasTensor,
    filters: int,
    kernel_size: int,
    *,
    name: str,
    strides: int = 1,
    batch_norm: float | None = None,
) -> keras.KerasTensor:
    """A "same"-padded convolution with ReLU; Conv -> BN -> ReLU when `batch_norm`.

    Szegedy et al. (2014), section 5: every convolution uses ReLU. With `batch_norm` the
    convolution has no bias (BatchNormalization's offset replaces it), as in Ioffe &
    Szegedy (2015). Layers are named `name` (the convolution), `name_bn`, `name_relu`.

    Args:
        x: channels-last feature map.
        filters: output channels.
        kernel_size: square kernel side.
        name: the convolution's layer name and the prefix of the others.
        strides: convolution stride.
        batch_norm: the momentum of a BatchNormalization between the convolution and the
            ReLU (0.99 is Keras' default, 0.9 PyTorch's); None for none.
    """
    if batch_norm is None:
        return layers.Conv2D(
            filters, kernel_size, strides=strides, padding="same", activation="relu", name=name
        )(x)
    x = layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False, name=name
    )(x)
    x = layers.BatchNormalization(momentum=batch_norm, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def inception_module(
    x: keras.KerasTensor,
    widths: InceptionWidths,
    *,
    name: str,
    batch_norm: float | None = None,
) -> keras.KerasTensor:
    """One Inception module (Szegedy et al., 2014, Figure 2(b)) on a channels-last map.

    The output keeps the input's spatial size and has `widths.output_channels` channels,
    in the order 1x1, 3x3, 5x5, pool projection (as in Caffe's bvlc_googlenet). The
    concatenation layer is named `name`; branch layers are `name_1x1`, `name_3x3_reduce`,
    `name_3x3`, `name_5x5_reduce`, `name_5x5`, `name_pool`, `name_pool_proj`.

    Args:
        x: the module's input.
        widths: Table 1's six filter counts for this module.
        name: module name, e.g. "inception_3a".
        batch_norm: Conv -> BN (this momentum) -> ReLU in every branch instead of
            Conv -> ReLU when not None.

    Example:
        >>> inputs = keras.Input((28, 28, 192))
        >>> out = inception_module(inputs, InceptionWidths(64, 96, 128, 16, 32, 32), name="i3a")
        >>> out.shape
        (None, 28, 28, 256)
    """
    branch1 = conv_block(x, widths.conv1x1, 1, name=f"{name}_1x1", batch_norm=batch_norm)
    branch3 = conv_block(x, widths.reduce3x3, 1, name=f"{name}_3x3_reduce", batch_norm=batch_norm)
    branch3 = conv_block(branch3, widths.conv3x3, 3, name=f"{name}_3x3", batch_norm=batch_norm)
    branch5 = conv_block(x, widths.reduce5x5, 1, name=f"{name}_5x5_reduce", batch_norm=batch_norm)
    branch5 = conv_block(branch5, widths.conv5x5, 5, name=f"{name}_5x5", batch_norm=batch_norm)
    pool = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    pool = conv_block(pool, widths.pool_proj, 1, name=f"{name}_pool_proj", batch_norm=batch_norm)
    return layers.Concatenate(axis=-1, name=name)([branch1, branch3, branch5, pool])
