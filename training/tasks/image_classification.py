"""Image classification: data, augmentation, losses, metrics and export, for every family
whose model is an image classifier (`zoo.tasks.image_classifier`: backbone + head).

A family's recipe subclasses `ImageClassificationRecipe`, names its TFDS dataset and the
backbone feature its `features` signature returns, and chooses its optimizer; the rest is
here, driven by config keys (absent keys switch a step off):

    image_size, num_classes      the model's input side and classes (required)
    eval_crop_fraction           decode at image_size / fraction; evaluation and serving
                                 take the central image_size crop (0.875: 146 -> 128)
    random_resized_crop_area     [min, max] area fraction of a random crop resized to
    random_resized_crop_aspect   image_size, with aspect ratio in [min, max] (training)
    shift                        random translation, fraction of the side (training)
    horizontal_flip              random left-right flips (training)
    color_jitter                 brightness, contrast, saturation factors in [1 - j, 1 + j]
    label_smoothing              cross-entropy label smoothing
    aux_loss_weight              weight of each auxiliary head's loss (models with a dict
                                 output: {"probabilities", <aux name>: ...})
    mixed_precision              "auto" (mixed_float16 on a GPU, mixed_bfloat16 on a TPU)
                                 or a Keras dtype policy name
    top_k                        classes returned by `serving_default` (default 5)
    feature_map                  backbone output returned by the `features` signature

Two data routes feed one model the same inputs (float32 pixels in [0, 255], int labels):
`load_data` (TensorFlow: tf.data from an image folder or TFDS, augmentation in `tf.image`;
`training.data.image_pipeline`), and `prepare` + `array_data` for any Keras backend (the
images decoded once into uint8 arrays by `zoo prepare`, batches augmented in `keras.ops`
by `array_augment`). The export is TensorFlow's (`training.exports.image_classifier`);
this module, and so the recipes, import without TensorFlow.

With only `shift` and `horizontal_flip` (the CIFAR convnet) the pipeline is the classic
Keras example's: decode -> cache -> shuffle -> batch -> translate -> flip.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from keras import ops

from training.array_datasets import ShuffledBatches
from training.data import image_folder
from training.data.image_arrays import center_crop, decode_size, read_images
from training.recipe import Data, Headline, Recipe
from training.tasks.classification_objective import compile_classifier
from training.tasks.random_resized_crop import RandomResizedCropFlip
from zoo.tasks.image_classifier import PROBABILITIES, head_layers

if TYPE_CHECKING:
    from training.export_module import ExportModule
    from training.prepared import Prepared

#: The TensorFlow side's names, importable from here as before it moved; loaded on first
#: use, so that importing this module needs no TensorFlow.
_PIPELINE_NAMES = (
    "decoded_splits",
    "random_resized_crop",
    "color_jitter",
    "make_augment",
    "make_eval_transform",
)


def __getattr__(name: str) -> Any:
    if name in _PIPELINE_NAMES:
        from training.data import image_pipeline

        return getattr(image_pipeline, name)
    if name == "ImageClassifierExport":
        from training.exports.image_classifier import ImageClassifierExport

        return ImageClassifierExport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------- arrays

#: ITU-R 601 luma weights, as `tf.image.rgb_to_grayscale`
_LUMA = (0.2989, 0.5870, 0.1140)


def _grayscale(images):
    return ops.sum(images * ops.convert_to_tensor(_LUMA, "float32"), axis=-1, keepdims=True)


def random_shift(images, factor: float, seed: keras.random.SeedGenerator):
    """Each image of a float batch [N, H, W, C] translated by its own random fraction in
    [-factor, factor] of each side, bilinearly, edges repeated: `keras.layers.
    RandomTranslation(factor, factor, fill_mode="nearest")`'s transform, drawn as it draws
    (the same images from a generator of the same seed)."""
    n, height, width = ops.shape(images)[0], int(images.shape[1]), int(images.shape[2])
    dy = keras.random.uniform([n, 1], -factor, factor, seed=seed) * float(height)
    dx = keras.random.uniform([n, 1], -factor, factor, seed=seed) * float(width)
    ones, zeros = ops.ones([n, 1]), ops.zeros([n, 1])
    transforms = ops.concatenate([ones, zeros, -dx, zeros, ones, -dy, zeros, zeros], axis=1)
    return ops.image.affine_transform(
        images, transforms, interpolation="bilinear", fill_mode="nearest"
    )


def random_flip(images, seed: keras.random.SeedGenerator):
    """Half the images of a batch [N, H, W, C], at random, flipped left to right (as
    `keras.layers.RandomFlip("horizontal")` draws them)."""
    flips = keras.random.uniform([ops.shape(images)[0], 1, 1, 1], seed=seed) <= 0.5
    return ops.where(flips, ops.flip(images, axis=2), images)


def jitter_colors(images, strength: float, seed: keras.random.SeedGenerator):
    """`training.data.image_pipeline.color_jitter` in `keras.ops`: brightness, contrast
    and saturation of each image of a batch of float pixels in [0, 255], each scaled by
    its own random factor in [1 - strength, 1 + strength]."""
    n = ops.shape(images)[0]

    def blend(images, towards):
        factor = keras.random.uniform([n, 1, 1, 1], 1.0 - strength, 1.0 + strength, seed=seed)
        return ops.clip(towards + (images - towards) * factor, 0.0, 255.0)

    images = blend(images, 0.0)  # brightness: towards black
    images = blend(images, ops.mean(_grayscale(images), axis=(1, 2, 3), keepdims=True))
    return blend(images, _grayscale(images))  # saturation: towards gray


def array_augment(config: dict, seed: int | None = None):
    """`make_augment`'s counterpart in `keras.ops`, for batches of prepared arrays on any
    backend: uint8 images [N, decode_size, decode_size, 3] -> float32 pixels [N, image_size,
    image_size, 3] in [0, 255], by a random-resized crop and flip (`RandomResizedCropFlip`)
    or the central crop, shift, flip, color jitter as the config asks; None when it asks for
    none of them. The random streams are Keras' (seeded from `seed`), not tf.random's; the
    Keras preprocessing layers are not used, as they look for TensorFlow when it is present
    (`keras.src.utils.backend_utils.in_tf_graph`)."""
    size, source = int(config["image_size"]), decode_size(config)
    seeds = [keras.random.SeedGenerator(None if seed is None else seed + k) for k in range(3)]
    flip = bool(config.get("horizontal_flip"))
    steps = []
    if config.get("random_resized_crop_area"):
        area = config["random_resized_crop_area"]
        aspect = config.get("random_resized_crop_aspect") or (1.0, 1.0)
        crop = RandomResizedCropFlip(size, area, aspect, flip=flip, seed=seed)
        steps.append(lambda images: crop(images, training=True))
        flip = False  # done with the crop
    elif source != size:
        steps.append(lambda images: center_crop(images, size))
    if config.get("shift"):
        steps.append(partial(random_shift, factor=float(config["shift"]), seed=seeds[0]))
    if flip:
        steps.append(partial(random_flip, seed=seeds[1]))
    if config.get("color_jitter"):
        steps.append(partial(jitter_colors, strength=float(config["color_jitter"]), seed=seeds[2]))
    if not steps:
        return None

    def augment(images):
        images = ops.cast(images, "float32")
        for step in steps:
            images = step(images)
        return images

    return augment


def _image_batch(rows: dict[str, np.ndarray], *, size: int, augment, outputs) -> tuple:
    """`ShuffledBatches`' make_batch: (float32 pixels, labels, or a label per head)."""
    images, labels = rows["images"], rows["labels"]
    if augment is not None:
        x = augment(images)
    else:  # evaluation: the central crop (a no-op for held-out rows, stored cropped)
        x = center_crop(images, size).astype(np.float32)
    return x, ({name: labels for name in outputs} if outputs else labels)


def dtype_policy(setting: str | None) -> str | None:
    """The Keras dtype policy for a `mixed_precision` setting; None keeps the global one."""
    if not setting or (setting == "auto" and not _fast_half_precision()):
        return None
    if setting != "auto":
        return setting
    return "mixed_bfloat16" if _on_tpu() else "mixed_float16"


def _on_tpu() -> bool:
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_logical_devices("TPU"))
    if backend == "jax":
        import jax

        return any(d.platform == "tpu" for d in jax.devices())
    return False


def _fast_half_precision() -> bool:
    """A TPU, or a GPU of compute capability 7 or more (tensor cores)."""
    if _on_tpu():
        return True
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        for gpu in tf.config.list_physical_devices("GPU"):
            details = tf.config.experimental.get_device_details(gpu)
            if details.get("compute_capability", (0,)) >= (7,):
                return True
    elif backend == "jax":
        import jax

        for device in jax.devices():
            capability = getattr(device, "compute_capability", None)  # "9.0" on CUDA
            if device.platform == "gpu" and capability and float(capability) >= 7:
                return True
    return False


# ---------------------------------------------------------------------------- recipe


class ImageClassificationRecipe(Recipe):
    """Image folder / TFDS data, cross-entropy (with auxiliary heads and label smoothing),
    top-1 / top-5 accuracy, fine-tuning onto a new class set, image-bytes export.

    Subclasses set `name`, `tfds_name` and `feature_map`, and implement `optimizer`; they
    may rename classes (`display_names`) and declare auxiliary outputs.
    """

    headline = Headline("accuracy", percent=True)
    intended_use = (
        "Classifying photographs into the classes it was trained on ({classes}), and a "
        "starting point for fine-tuning on another small image folder (a new head for a new "
        "class set). Not for decisions about people, nor for images unlike its training data."
    )
    #: TFDS dataset used when no data folder is given
    tfds_name: str = ""
    #: backbone output returned by the `features` signature (config `feature_map` wins)
    feature_map: str = ""

    def optimizer(self, config: dict, steps_per_epoch: int | None) -> keras.optimizers.Optimizer:
        """The family's optimizer; `steps_per_epoch` (None when unknown) sizes schedules."""
        raise NotImplementedError

    def display_names(self, names: list[str]) -> list[str]:
        """Class names as exported and stored in the run, from the data's (folder) names."""
        return list(names)

    def auxiliary_outputs(self, config: dict) -> list[str]:
        """Names of the model's auxiliary outputs for this config (trained, not exported)."""
        return []

    def output_names(self, config: dict) -> list[str] | None:
        """Keys of the model's dict output, or None when it returns probabilities alone."""
        auxiliary = self.auxiliary_outputs(config)
        return [PROBABILITIES, *auxiliary] if auxiliary else None

    def _class_names(self, config: dict, folder_names: list[str], assets: dict | None) -> list:
        """The data's class names as stored (`display_names`), checked against an earlier
        run's (`assets`) and the config's `num_classes`."""
        class_names = self.display_names(folder_names)
        if assets and list(assets["class_names"]) != class_names:
            raise ValueError(
                f"The data's classes {class_names} differ from the run's {assets['class_names']}"
            )
        if len(class_names) != int(config["num_classes"]):
            raise ValueError(
                f"The data has {len(class_names)} classes but the preset expects "
                f"{config['num_classes']}; pass --set num_classes={len(class_names)}"
            )
        return class_names

    def load_data(
        self, config, data_dir, global_batch_size, *, training=True, assets=None, load_source=None
    ) -> Data:
        from training.data.image_pipeline import decoded_splits, make_augment, make_eval_transform

        decoded, folder_names, train_count = decoded_splits(
            data_dir, self.tfds_name, decode_size(config)
        )
        class_names = self._class_names(config, folder_names, assets)
        outputs = self.output_names(config)
        if outputs:  # every head learns the same label
            decoded = {
                k: ds.map(lambda x, y: (x, {name: y for name in outputs}))
                for k, ds in decoded.items()
            }
        evaluation = make_eval_transform(config)
        train = image_folder.batched(
            decoded["train"],
            global_batch_size,
            shuffle=min(train_count, 50_000) if training else 0,
            augment=make_augment(config) if training else evaluation,
        )
        held_out = {
            split: image_folder.batched(decoded[split], global_batch_size, augment=evaluation)
            for split in ("val", "test")
            if split in decoded
        }
        return Data(
            train=train,
            val=held_out.get("val", held_out.get("test")),
            test=held_out.get("test"),
            assets={"class_names": class_names},
        )

    def prepare(
        self, config: dict, data_dir: str | None, assets: dict | None = None
    ) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
        """Per split, uint8 `images` and int32 `labels`: training images decoded at
        `decode_size` (random crops take fractions of the whole image), held-out ones as
        evaluation sees them (decoded at `decode_size`, center-cropped to `image_size`);
        an image folder is read with Pillow (`training.data.image_arrays`), TFDS data with
        TensorFlow. The assets are `load_data`'s: the class names."""
        size, side = int(config["image_size"]), decode_size(config)
        if data_dir:
            folders = image_folder.image_folder_splits(data_dir)
            folder_names = folders["train"].class_names
            splits = {
                split: {
                    "images": read_images(files.paths, side, None if split == "train" else size),
                    "labels": np.asarray(files.labels, np.int32),
                }
                for split, files in folders.items()
            }
        else:
            from training.data.image_pipeline import tfds_arrays

            splits, folder_names = tfds_arrays(self.tfds_name, config)
        return splits, {"class_names": self._class_names(config, folder_names, assets)}

    def array_data(
        self,
        config: dict,
        data: Prepared,
        global_batch_size: int,
        *,
        training: bool = True,
        seed: int | None = 0,
    ) -> Data:
        """`load_data`'s batches over prepared arrays: training batches shuffled each epoch
        (whole batches only) and augmented in `keras.ops` (`array_augment`); evaluation
        batches in order, the central crop, unaugmented. Inputs are float32 pixels in
        [0, 255] (the model rescales), labels int32 (one per head with auxiliary heads)."""
        size, side = int(config["image_size"]), decode_size(config)
        splits = {
            name: data.split(name) for name in ("train", "val", "test") if name in data.splits
        }
        for name, arrays in splits.items():
            got = arrays["images"].row_shape
            allowed = [(side, side, 3)] if name == "train" else [(size, size, 3), (side, side, 3)]
            if got not in allowed:
                raise ValueError(
                    f"{data.path}: {name} images of {got}, where this config decodes at "
                    f"{side} px for {size} px inputs; prepare the data for this config"
                )
        if len(data.assets["class_names"]) != int(config["num_classes"]):
            raise ValueError(
                f"{data.path} holds {len(data.assets['class_names'])} classes but the config "
                f"expects {config['num_classes']}"
            )
        outputs = self.output_names(config)
        evaluation = partial(_image_batch, size=size, augment=None, outputs=outputs)
        augment = array_augment(config, seed) if training else None
        train = ShuffledBatches(
            splits["train"],
            global_batch_size,
            partial(_image_batch, size=size, augment=augment, outputs=outputs),
            shuffle=training,
            drop_remainder=training,
            seed=seed,
        )
        held_out = {
            name: ShuffledBatches(
                splits[name], global_batch_size, evaluation, shuffle=False, drop_remainder=False
            )
            for name in ("val", "test")
            if name in splits
        }
        return Data(
            train=train,
            val=held_out.get("val", held_out.get("test")),
            test=held_out.get("test"),
            assets=dict(data.assets),
        )

    def build_model(self, config: dict, assets: dict):
        """The model, in mixed precision when the config's `mixed_precision` asks for it."""
        return self._build(config, assets, dtype_policy(config.get("mixed_precision")))

    def _build(self, config: dict, assets: dict, policy: str | None):
        if policy is None:
            return super().build_model(config, assets)
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(policy)
        try:
            return super().build_model(config, assets)
        finally:
            keras.config.set_dtype_policy(previous)

    def finetune_overrides(self, config, data_dir) -> dict:
        if not data_dir:
            return {}
        return {"num_classes": len(image_folder.image_folder_splits(data_dir)["train"].class_names)}

    def reinitialized_layers(self, model, config, parent_config, assets, parent_assets):
        """The head's layers when the classes changed (even to as many new ones), else none."""
        if list(assets["class_names"]) == list(parent_assets["class_names"]):
            return []
        return [layer.name for layer in head_layers(model)]

    def compile(self, model, config, data, *, jit_compile) -> None:
        steps = data.batches_per_epoch() if data is not None else None
        optimizer = self.optimizer(config, steps if steps and steps > 0 else None)
        compile_classifier(
            model, config, optimizer, self.output_names(config), jit_compile=jit_compile
        )

    def evaluate(self, model, config, data) -> dict[str, float]:
        """`loss`, `accuracy` (top-1) and `top5_accuracy` of the main head."""
        return self._main_head(config, super().evaluate(model, config, data))

    def evaluate_arrays(self, model, config, data) -> dict[str, float]:
        """`evaluate`'s metrics on prepared arrays (`model.evaluate`)."""
        return self._main_head(config, super().evaluate_arrays(model, config, data))

    def _main_head(self, config: dict, results: dict[str, float]) -> dict[str, float]:
        if not self.output_names(config):
            return results
        prefix = f"{PROBABILITIES}_"
        return {k.removeprefix(prefix): v for k, v in results.items() if k.startswith(prefix)}

    def export(self, model, config, assets) -> ExportModule:
        from training.exports.image_classifier import ImageClassifierExport

        if model.dtype_policy.name != "float32":  # serve in float32: rebuild, same weights
            trained, model = model, self._build(config, assets, "float32")
            model.set_weights(trained.get_weights())
        return ImageClassifierExport(
            model,
            image_size=int(config["image_size"]),
            decode_size=decode_size(config),
            class_names=assets["class_names"],
            top_k=int(config.get("top_k", 5)),
            feature_map=config.get("feature_map") or self.feature_map,
        )
