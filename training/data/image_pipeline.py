"""The TensorFlow side of image classification (`training.tasks.image_classification`):
tf.data pipelines of decoded images and the batched training augmentation in `tf.image`,
driven by the config keys the task layer documents. Imported only by `load_data` (and by
`prepare` for TFDS data), so that the task layer itself imports without TensorFlow.

With only `shift` and `horizontal_flip` (the CIFAR convnet) the pipeline is the classic
Keras example's: decode -> cache -> shuffle -> batch -> translate -> flip.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from training.data import image_folder
from training.data.image_arrays import center_crop, decode_size
from training.data.images import decode_image

#: TFDS split names -> the zoo's (`image_folder_splits` uses train / val / test).
_TFDS_SPLITS = {"validation": "val"}


def decoded_splits(
    data_dir: str | None, tfds_name: str, size: int
) -> tuple[dict[str, tf.data.Dataset], list[str], int]:
    """(uint8 image [size, size, 3], label) datasets per split ("train", "val", "test"), the
    data's class names and the number of training images; an image folder, else TFDS."""
    if data_dir:
        splits = image_folder.image_folder_splits(data_dir)
        decoded = {k: image_folder.decoded_dataset(v, size) for k, v in splits.items()}
        return decoded, splits["train"].class_names, len(splits["train"])
    raw, class_names = image_folder.tfds_splits(tfds_name)
    decoded = {
        _TFDS_SPLITS.get(k, k): ds.map(lambda x, y: (decode_image(tf.io.encode_png(x), size), y))
        for k, ds in raw.items()
    }
    return decoded, list(class_names), int(raw["train"].cardinality())


def tfds_arrays(tfds_name: str, config: dict) -> tuple[dict[str, dict[str, np.ndarray]], list]:
    """`ImageClassificationRecipe.prepare`'s arrays of a TFDS dataset: per split uint8
    `images` (training ones at `decode_size`, held-out ones center-cropped to `image_size`,
    as evaluation sees them) and int32 `labels`; and the class names."""
    size, side = int(config["image_size"]), decode_size(config)
    decoded, class_names, _ = decoded_splits(None, tfds_name, side)
    splits = {}
    for split, ds in decoded.items():
        images, labels = [], []
        for image, label in ds.batch(256).as_numpy_iterator():
            images.append(image if split == "train" else center_crop(image, size))
            labels.append(label.astype(np.int32))
        splits[split] = {"images": np.concatenate(images), "labels": np.concatenate(labels)}
    return splits, class_names


def random_resized_crop(
    images: tf.Tensor, size: int, area: tuple, aspect: tuple, seed: int | None = None
) -> tf.Tensor:
    """Inception-style crops of a batch [N, H, W, 3]: for each image a box of a random
    fraction of the area in `area` and aspect ratio (width / height, log-uniform) in
    `aspect`, clipped to the image, at a random place, resized bilinearly to `size`."""
    n = tf.shape(images)[0]
    fraction = tf.random.uniform([n], float(area[0]), float(area[1]), seed=seed)
    log_aspect = [math.log(float(a)) for a in aspect]
    ratio = tf.exp(tf.random.uniform([n], *log_aspect, seed=None if seed is None else seed + 1))
    width = tf.minimum(tf.sqrt(fraction * ratio), 1.0)
    height = tf.minimum(tf.sqrt(fraction / ratio), 1.0)
    top = tf.random.uniform([n], seed=None if seed is None else seed + 2) * (1.0 - height)
    left = tf.random.uniform([n], seed=None if seed is None else seed + 3) * (1.0 - width)
    boxes = tf.stack([top, left, top + height, left + width], axis=1)
    return tf.image.crop_and_resize(images, boxes, tf.range(n), [size, size])


def color_jitter(images: tf.Tensor, strength: float, seed: int | None = None) -> tf.Tensor:
    """Brightness, contrast and saturation of each image of a batch of float pixels in
    [0, 255], each scaled by its own random factor in [1 - strength, 1 + strength]."""
    n = tf.shape(images)[0]

    def factor(k: int) -> tf.Tensor:
        s = None if seed is None else seed + k
        return tf.random.uniform([n, 1, 1, 1], 1.0 - strength, 1.0 + strength, seed=s)

    def blend(images: tf.Tensor, towards: tf.Tensor, k: int) -> tf.Tensor:
        return tf.clip_by_value(towards + (images - towards) * factor(k), 0.0, 255.0)

    images = blend(images, 0.0, 0)  # brightness: towards black
    mean = tf.reduce_mean(tf.image.rgb_to_grayscale(images), axis=[1, 2, 3], keepdims=True)
    images = blend(images, mean, 1)  # contrast: towards the mean gray
    return blend(images, tf.image.rgb_to_grayscale(images), 2)  # saturation: towards gray


def make_augment(config: dict, seed: int | None = None):
    """Batched training augmentation from the config: random-resized crop (or the central
    crop when images are decoded larger), shift, horizontal flip, color jitter; None when
    the config asks for none of them."""
    size, source = int(config["image_size"]), decode_size(config)
    steps = []
    if config.get("random_resized_crop_area"):
        area = config["random_resized_crop_area"]
        aspect = config.get("random_resized_crop_aspect") or (1.0, 1.0)
        steps.append(lambda images: random_resized_crop(images, size, area, aspect, seed))
    elif source != size:
        steps.append(lambda images: center_crop(images, size))
    layers = []
    if config.get("shift"):
        shift = float(config["shift"])
        layers.append(keras.layers.RandomTranslation(shift, shift, fill_mode="nearest", seed=seed))
    if config.get("horizontal_flip"):
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if layers:
        pipeline = keras.Sequential(layers)
        steps.append(lambda images: pipeline(images, training=True))
    if config.get("color_jitter"):
        strength = float(config["color_jitter"])
        steps.append(lambda images: color_jitter(images, strength, seed))
    if not steps:
        return None
    if len(steps) == 1:
        return steps[0]

    def augment(images: tf.Tensor) -> tf.Tensor:
        for step in steps:
            images = step(images)
        return images

    return augment


def make_eval_transform(config: dict):
    """The evaluation (and serving) counterpart: the central crop, or None."""
    size = int(config["image_size"])
    if decode_size(config) == size:
        return None
    return lambda images: center_crop(images, size)
