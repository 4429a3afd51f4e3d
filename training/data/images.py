"""Image decoding shared by the training pipeline and the exported serving signature.

One function, so a served image is preprocessed exactly as the training images were.
"""

from __future__ import annotations

import tensorflow as tf


def decode_image(image_bytes: tf.Tensor, image_size: int) -> tf.Tensor:
    """JPEG/PNG/GIF/BMP bytes -> uint8 [image_size, image_size, 3].

    Grayscale and RGBA are converted to RGB; images of another size are resized with
    bilinear interpolation (antialiased) and rounded back to uint8, the way the training
    pipeline caches them. Raises InvalidArgumentError for bytes that are not an image.
    """
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    shape = tf.shape(image)

    def resize() -> tf.Tensor:
        resized = tf.image.resize(image, [image_size, image_size], antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)

    same = tf.logical_and(tf.equal(shape[0], image_size), tf.equal(shape[1], image_size))
    image = tf.cond(same, lambda: image, resize)
    return tf.ensure_shape(image, [image_size, image_size, 3])
