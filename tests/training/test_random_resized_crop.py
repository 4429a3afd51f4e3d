"""The device route's crops (`training.tasks.random_resized_crop`, keras.ops only) against
TensorFlow's: the same boxes sample the same pixels as `tf.image.crop_and_resize`, the
random boxes follow the configured area and aspect, and evaluation passes images through."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from training.tasks.random_resized_crop import (
    RandomResizedCropFlip,
    crop_and_resize,
    random_crop_boxes,
)


def test_crop_and_resize_samples_like_tensorflow():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (6, 37, 29, 3)).astype("float32")
    boxes = np.array(
        [[0, 0, 1, 1], [0.1, 0.2, 0.6, 0.9], [0.5, 0.5, 0.51, 0.52], [0, 0.3, 1, 0.4],
         [0.25, 0, 0.75, 1], [0.9, 0.9, 1, 1]], "float32",
    )  # fmt: skip
    ours = np.asarray(crop_and_resize(images, boxes, 16))
    theirs = tf.image.crop_and_resize(images, boxes, tf.range(6), [16, 16]).numpy()
    np.testing.assert_allclose(ours, theirs, atol=2e-3)
    # the whole-image box at the image's own size is the image itself
    same = np.asarray(crop_and_resize(images[:1, :29], np.array([[0, 0, 1, 1]], "float32"), 29))
    np.testing.assert_allclose(same, images[:1, :29], atol=2e-3)


def test_random_boxes_follow_area_and_aspect():
    boxes = np.asarray(random_crop_boxes(4000, (0.25, 1.0), (3 / 4, 4 / 3), seed=7))
    top, left, bottom, right = boxes.T
    assert np.all(boxes >= 0) and np.all(bottom <= 1 + 1e-6) and np.all(right <= 1 + 1e-6)
    height, width = bottom - top, right - left
    area, aspect = height * width, width / height
    unclipped = (height < 0.999) & (width < 0.999)
    assert area[unclipped].min() >= 0.25 - 1e-4 and area.max() <= 1 + 1e-5
    assert aspect[unclipped].min() >= 0.75 - 1e-4 and aspect[unclipped].max() <= 4 / 3 + 1e-4
    assert 0.55 < area.mean() < 0.7  # uniform in [0.25, 1], pulled down a little by clipping
    # the boxes are placed anywhere that fits, not centred
    assert top.std() > 0.05 and left.std() > 0.05


def test_layer_crops_and_flips_in_training_and_passes_through_otherwise():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (64, 20, 20, 3)).astype("uint8")
    layer = RandomResizedCropFlip(20, (1.0, 1.0), (1.0, 1.0), flip=True, seed=3)
    np.testing.assert_array_equal(np.asarray(layer(images, training=False)), images)
    trained = np.asarray(layer(images, training=True))
    assert trained.shape == (64, 20, 20, 3) and trained.dtype == np.float32
    # whole-image crops: every image is itself or its mirror, and both occur
    same = np.all(np.abs(trained - images) < 1e-2, axis=(1, 2, 3))
    mirrored = np.all(np.abs(trained - images[:, :, ::-1]) < 1e-2, axis=(1, 2, 3))
    assert np.all(same | mirrored) and 10 < mirrored.sum() < 54
    smaller = RandomResizedCropFlip(8, (0.25, 1.0), (3 / 4, 4 / 3), seed=3)
    model = keras.Sequential([keras.Input((20, 20, 3), dtype="uint8"), smaller])
    assert model.output_shape == (None, 8, 8, 3)
    assert np.asarray(smaller(images, training=True)).shape == (64, 8, 8, 3)
