"""Inception-style random-resized crops and flips as a Keras layer (`keras.ops` only).

`zoo train --data` (prepared arrays, any Keras backend, no TensorFlow needed) augments on
the device with it, where `tf.data` and `tf.image.crop_and_resize` are not available. `crop_and_resize` samples exactly as
`tf.image.crop_and_resize` does (bilinear, box corners on pixel centres, no antialiasing),
which `tests/training/test_random_resized_crop.py` checks; the boxes follow
`training.data.image_pipeline.random_resized_crop`'s distribution.
"""

from __future__ import annotations

import math

import keras
from keras import ops


def _interpolation(starts, ends, source: int, size: int):
    """[N, size, source] bilinear weights sampling [start, end] (fractions of the side) at
    `size` points, corners on the first and last pixel centres (TensorFlow's convention)."""
    steps = ops.arange(size, dtype="float32") / float(max(size - 1, 1))
    coords = (starts[:, None] + (ends - starts)[:, None] * steps[None, :]) * float(source - 1)
    lower = ops.clip(ops.floor(coords), 0.0, float(source - 1))
    frac = coords - lower
    lower_i = ops.cast(lower, "int32")
    upper_i = ops.minimum(lower_i + 1, source - 1)
    return (
        ops.one_hot(lower_i, source) * (1.0 - frac)[..., None]
        + ops.one_hot(upper_i, source) * frac[..., None]
    )


def crop_and_resize(images, boxes, size: int):
    """Float images [N, H, W, C] -> [N, size, size, C]: each image's box [top, left, bottom,
    right] (fractions of its sides, inside [0, 1]) resampled bilinearly, as two matrix
    products (fast on an accelerator)."""
    height, width = int(images.shape[1]), int(images.shape[2])
    rows = _interpolation(boxes[:, 0], boxes[:, 2], height, size)
    cols = _interpolation(boxes[:, 1], boxes[:, 3], width, size)
    images = ops.einsum("nsh,nhwc->nswc", rows, images)
    return ops.einsum("ntw,nswc->nstc", cols, images)


def random_crop_boxes(n: int, area, aspect, seed) -> keras.KerasTensor:
    """[n, 4] boxes of a random fraction of the area in `area` and aspect ratio (width /
    height, log-uniform) in `aspect`, clipped to the image, at a random place. `seed`: a
    `keras.random.SeedGenerator` (inside compiled steps), or an int or None for a new one
    (an int reused in each draw would tie the four draws together)."""
    if not isinstance(seed, keras.random.SeedGenerator):
        seed = keras.random.SeedGenerator(seed)
    fraction = keras.random.uniform([n], float(area[0]), float(area[1]), seed=seed)
    log_aspect = [math.log(float(a)) for a in aspect]
    ratio = ops.exp(keras.random.uniform([n], *log_aspect, seed=seed))
    width = ops.minimum(ops.sqrt(fraction * ratio), 1.0)
    height = ops.minimum(ops.sqrt(fraction / ratio), 1.0)
    top = keras.random.uniform([n], seed=seed) * (1.0 - height)
    left = keras.random.uniform([n], seed=seed) * (1.0 - width)
    return ops.stack([top, left, top + height, left + width], axis=1)


class RandomResizedCropFlip(keras.layers.Layer):
    """uint8 or float images [N, H, W, 3] -> float32 pixels [N, size, size, 3] in [0, 255].

    In training: a random-resized crop (`area`, `aspect`) and, with `flip`, a left-right
    flip of half the images. Otherwise the images pass through, cast (they must already
    be `size` x `size`: the evaluation crop is made before).
    """

    def __init__(self, size: int, area, aspect, flip: bool = True, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.size, self.area, self.aspect, self.flip = int(size), area, aspect, bool(flip)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        images = ops.cast(images, "float32")
        if not training:
            return images
        n = ops.shape(images)[0]
        boxes = random_crop_boxes(n, self.area, self.aspect, self.seed_generator)
        images = crop_and_resize(images, boxes, self.size)
        if self.flip:
            flips = keras.random.uniform([n, 1, 1, 1], seed=self.seed_generator) < 0.5
            images = ops.where(flips, ops.flip(images, axis=2), images)
        return images

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, input_shape[-1])

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "size": self.size,
            "area": list(self.area),
            "aspect": list(self.aspect),
            "flip": self.flip,
        }
