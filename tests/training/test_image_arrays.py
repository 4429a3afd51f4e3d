"""The image families' prepared-array route (`ImageClassificationRecipe.prepare` /
`array_data`): images decoded with Pillow as the TensorFlow pipeline decodes them, the
assets `load_data` records, batches the model takes as it takes the tf.data ones, and
augmentation in `keras.ops` as the Keras layers do it."""

from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import REPO_ROOT, small_image_folder, subprocess_env
from training.data.image_arrays import decode_size, read_image
from training.recipe import get_recipe
from zoo import registry

#: three Imagenette classes (WordNet ids) for GoogLeNet's tiny preset
IMAGENETTE_CLASSES = ["n01440764", "n03028079", "n03888257"]
#: measured on these files: the mean absolute difference of the prepared images from the
#: TensorFlow pipeline's is 0.88 (GoogLeNet, 73 px decoded, 64 px crop) and 1.01 (CIFAR,
#: 32 px, no resize) levels of 255, at most 1.46 for one image and 5 for one pixel. It is
#: the JPEG IDCT alone (`test_the_difference_is_the_jpeg_idct_alone`).
MEAN_BOUND, IMAGE_BOUND = 1.25, 2.0


@pytest.fixture(scope="module")
def folders(shared_data, tmp_path_factory) -> dict:
    """(family, data folder, config overrides) of small real image folders."""
    tmp = tmp_path_factory.mktemp("image-arrays")
    found = {}
    if (shared_data / "cifar10").is_dir():
        cifar = small_image_folder(shared_data / "cifar10", tmp / "cifar", 3)
        found["cifar_convnet"] = (cifar, {})
    if (shared_data / "imagenette").is_dir():
        imagenette = small_image_folder(
            shared_data / "imagenette", tmp / "imagenette", 5,
            splits=("train", "val"), classes=IMAGENETTE_CLASSES,
        )  # fmt: skip
        found["googlenet"] = (imagenette, {"num_classes": 3})
    return found


def _case(folders: dict, family: str):
    if family not in folders:
        pytest.skip(f"no shared data for {family}")
    folder, overrides = folders[family]
    return get_recipe(family), registry.get(family).config("tiny", **overrides), folder


@pytest.mark.parametrize("family", ["googlenet", "cifar_convnet"])
def test_prepared_images_match_the_tf_pipeline(folders, family):
    """Held-out images as evaluation sees them (decoded at decode_size, central crop) and
    training images at decode_size, against `load_data`'s; the same assets."""
    from training.data.image_pipeline import decoded_splits

    recipe, config, folder = _case(folders, family)
    splits, assets = recipe.prepare(config, str(folder))
    data = recipe.load_data(config, str(folder), 8, training=False)
    assert assets == data.assets
    held_out = "val" if "val" in splits else "test"
    assert sorted(splits) == sorted(["train", held_out])
    reference = {
        held_out: np.concatenate([x.numpy() for x, _ in data.val]),
        "train": np.stack([x for x, _ in decoded_splits(str(folder), "", decode_size(config))[0]
                           ["train"].as_numpy_iterator()]),
    }  # fmt: skip
    for split, want in reference.items():
        images, labels = splits[split]["images"], splits[split]["labels"]
        assert images.dtype == np.uint8 and labels.dtype == np.int32
        side = decode_size(config) if split == "train" else int(config["image_size"])
        assert images.shape == want.shape == (len(labels), side, side, 3)
        diff = np.abs(images.astype(np.float32) - want.astype(np.float32))
        assert diff.mean() < MEAN_BOUND, (split, diff.mean())
        assert diff.reshape(len(diff), -1).mean(axis=1).max() < IMAGE_BOUND, split
    labels = np.concatenate([y if not isinstance(y, dict) else y["probabilities"]
                             for _, y in data.val.as_numpy_iterator()])  # fmt: skip
    np.testing.assert_array_equal(splits[held_out]["labels"], labels)


def test_the_difference_is_the_jpeg_idct_alone(shared_data):
    """Decoded with libjpeg's accurate IDCT (Pillow's), TensorFlow's resize gives Pillow's
    float resize to within one level: what is left is TensorFlow's fast default IDCT."""
    files = sorted((shared_data / "imagenette" / "val" / IMAGENETTE_CLASSES[0]).iterdir())[:4]
    if not files:
        pytest.skip("imagenette not found in shared data")
    for path in files:
        image = tf.io.decode_jpeg(path.read_bytes(), channels=3, dct_method="INTEGER_ACCURATE")
        for side in (73, 183):
            resized = tf.image.resize(image, [side, side], antialias=True)
            want = tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8).numpy()
            diff = np.abs(read_image(path, side).astype(int) - want.astype(int))
            assert diff.max() <= 1 and diff.mean() < 0.01, (path.name, side, diff.mean())


def test_array_batches_are_the_models_inputs(folders, tmp_path):
    """Float32 pixels in [0, 255] at image_size, a label per head: training batches whole,
    shuffled and augmented, evaluation batches the prepared images in order."""
    from training import prepare

    recipe, config, folder = _case(folders, "googlenet")
    data = prepare.run("googlenet", str(folder), tmp_path / "p", preset="tiny",
                       overrides={"num_classes": 3})  # fmt: skip
    batches = recipe.array_data(config, data, 4, seed=0)
    assert len(batches.train) == 15 // 4 and batches.test is None
    x, y = batches.train[0]
    x = keras.ops.convert_to_numpy(x)
    assert x.dtype == np.float32 and x.shape == (4, 64, 64, 3)
    assert 0.0 <= x.min() and x.max() <= 255.0
    assert sorted(y) == ["aux_4a", "aux_4d", "probabilities"]
    val = data.split("val")
    x, y = batches.val[len(batches.val) - 1]  # the last, partial batch is kept
    np.testing.assert_array_equal(x, val["images"][12:].astype(np.float32))
    np.testing.assert_array_equal(y["aux_4a"], val["labels"][12:])
    evaluation = recipe.array_data(config, data, 4, training=False)
    x, _ = evaluation.train[0]  # not augmented: the central crop of the first images
    first = data.split("train")["images"][:4]
    np.testing.assert_array_equal(x, first[:, 4:68, 4:68].astype(np.float32))
    with pytest.raises(ValueError, match="decodes at 146 px"):
        recipe.array_data({**config, "image_size": 128}, data, 4)


def test_shift_and_flip_are_the_keras_layers():
    """`random_shift` and `random_flip` draw and transform as `RandomTranslation` and
    `RandomFlip` of the same seed do."""
    from training.tasks.image_classification import random_flip, random_shift

    images = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    layer = keras.layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=3)
    np.testing.assert_allclose(
        random_shift(images, 0.1, keras.random.SeedGenerator(3)),
        layer(images, training=True),
        atol=1e-4,
    )
    flipped = random_flip(images, keras.random.SeedGenerator(5))
    want = keras.layers.RandomFlip("horizontal", seed=5)(images, training=True)
    np.testing.assert_array_equal(flipped, want)
    assert not np.array_equal(flipped, images)


def test_array_augment_crops_flips_and_jitters():
    """Random-resized crops of the decoded image with flips and color jitter (in range,
    not the central crop); the whole image as the crop with nothing else is the image."""
    from training.tasks.image_classification import array_augment

    config = registry.get("googlenet").config("tiny", color_jitter=0.5)
    side = decode_size(config)
    images = np.random.default_rng(0).uniform(0, 255, (8, side, side, 3)).astype("uint8")
    augmented = keras.ops.convert_to_numpy(array_augment(config, seed=1)(images))
    assert augmented.shape == (8, 64, 64, 3) and augmented.dtype == np.float32
    assert augmented.min() >= 0.0 and augmented.max() <= 255.0
    assert not np.allclose(augmented, images[:, 4:68, 4:68])
    whole = {
        **config,
        "random_resized_crop_area": [1.0, 1.0],
        "random_resized_crop_aspect": [1.0, 1.0],
        "horizontal_flip": False,
        "color_jitter": 0.0,
        "eval_crop_fraction": 1.0,
    }
    same = images[:, :64, :64]
    np.testing.assert_allclose(array_augment(whole)(same), same, atol=1e-3)
    assert array_augment({**whole, "random_resized_crop_area": None}) is None
    cifar = registry.get("cifar_convnet").config("tiny")
    assert array_augment(cifar, seed=0)(images[:, :32, :32]).shape == (8, 32, 32, 3)


def test_the_task_layer_imports_without_tensorflow():
    """The recipes, the task layer and the Pillow reader import with TensorFlow absent."""
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "import training.data.image_arrays, training.tasks.image_classification\n"
        "from training.recipe import get_recipe\n"
        "print(get_recipe('googlenet').name, get_recipe('cifar_convnet').name)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
        env=subprocess_env(KERAS_BACKEND="jax"), cwd=REPO_ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["googlenet", "cifar_convnet"]
