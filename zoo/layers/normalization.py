"""Local response normalization across channels, in keras.ops (Keras has no LRN layer).

Krizhevsky et al., "ImageNet Classification with Deep Convolutional Neural Networks"
(2012), section 3.3, used in GoogLeNet's stem (Szegedy et al., "Going Deeper with
Convolutions", 2014, Table 1 / Figure 3).

Semantics are Caffe's `LRN` layer (ACROSS_CHANNELS), as in bvlc_googlenet's prototxt::

    out[..., c] = x[..., c] / (bias + alpha / size * sum_{c' in window(c)} x[..., c']**2) ** beta

where `window(c)` is the `size` channels centred on `c`, zero-padded at the edges. Caffe
divides `alpha` by `size`; `tf.nn.local_response_normalization` (and TF-slim's GoogLeNet)
does not, and takes a radius instead of a size. The same normalization in TF's terms is
`depth_radius=(size - 1) // 2, bias=bias, alpha=alpha / size, beta=beta`; PyTorch's
`nn.LocalResponseNorm(size, alpha, beta, k)` matches this layer argument for argument.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="zoo")
class LocalResponseNormalization(keras.layers.Layer):
    """Cross-channel local response normalization (channels-last), Caffe semantics.

    Krizhevsky et al. (2012), section 3.3; GoogLeNet (Szegedy et al., 2014) uses it twice in
    its stem with `size=5, alpha=1e-4, beta=0.75, bias=1` (Caffe bvlc_googlenet).

    The sum of squares and the power are computed in float32 whatever the layer's dtype
    policy: under mixed_float16 a squared activation above 256 would overflow float16.

    Args:
        size: number of channels in each window (odd), centred on the normalized channel.
        alpha: scale of the sum of squares; divided by `size` (Caffe / PyTorch convention).
        beta: exponent.
        bias: additive constant `k` (positive: it keeps the denominator away from 0).
        **kwargs: `keras.layers.Layer` arguments (name, dtype).

    Example:
        >>> import numpy as np
        >>> lrn = LocalResponseNormalization(size=5, alpha=1e-4, beta=0.75, bias=1.0)
        >>> lrn(np.ones((1, 2, 2, 8), "float32")).shape
        (1, 2, 2, 8)
    """

    def __init__(
        self,
        size: int = 5,
        alpha: float = 1e-4,
        beta: float = 0.75,
        bias: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if size < 1 or size % 2 != 1:
            raise ValueError(f"LRN size must be a positive odd number, got {size}")
        if bias <= 0:
            raise ValueError(f"LRN bias must be positive, got {bias}")
        self.size = int(size)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.bias = float(bias)

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        channels = x.shape[-1]
        radius = (self.size - 1) // 2
        padding = [[0, 0]] * (len(x.shape) - 1) + [[radius, radius]]
        squared = ops.pad(ops.square(x), padding)
        window_sum = squared[..., 0:channels]
        for offset in range(1, self.size):
            window_sum = window_sum + squared[..., offset : offset + channels]
        scale = self.bias + (self.alpha / self.size) * window_sum
        # scale ** -beta as exp(-beta * log(scale)): the same value, and 3-4x faster than
        # TensorFlow's pow kernel on CPU (scale >= bias > 0).
        return ops.cast(x * ops.exp(-self.beta * ops.log(scale)), inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(size=self.size, alpha=self.alpha, beta=self.beta, bias=self.bias)
        return config
