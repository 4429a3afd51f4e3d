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

With only `shift` and `horizontal_flip` (the CIFAR convnet) the pipeline is the classic
Keras example's: decode -> cache -> shuffle -> batch -> translate -> flip.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from training.data import image_folder
from training.data.images import decode_image
from training.export_module import ExportModule, image_cost, signature
from training.recipe import Data, Recipe
from training.tasks.classification_objective import compile_classifier
from zoo.tasks.image_classifier import PROBABILITIES, backbone_of, head_layers, inference_model

#: TFDS split names -> the zoo's (`image_folder_splits` uses train / val / test).
_TFDS_SPLITS = {"validation": "val"}


# ---------------------------------------------------------------------------- data


def decode_size(config: dict) -> int:
    """Side at which images are decoded: `image_size`, or `image_size / eval_crop_fraction`
    when evaluation and serving take a central crop (and training a random one)."""
    size = int(config["image_size"])
    fraction = config.get("eval_crop_fraction")
    return int(round(size / float(fraction))) if fraction else size


def center_crop(images: tf.Tensor, size: int) -> tf.Tensor:
    """The central `size` x `size` crop of images [..., side, side, channels] (static side)."""
    offset = (int(images.shape[-2]) - size) // 2
    return images[..., offset : offset + size, offset : offset + size, :]


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


def dtype_policy(setting: str | None) -> str | None:
    """The Keras dtype policy for a `mixed_precision` setting; None keeps the global one."""
    if not setting or (setting == "auto" and not _fast_half_precision()):
        return None
    if setting != "auto":
        return setting
    return "mixed_bfloat16" if tf.config.list_logical_devices("TPU") else "mixed_float16"


def _fast_half_precision() -> bool:
    if tf.config.list_logical_devices("TPU"):
        return True
    for gpu in tf.config.list_physical_devices("GPU"):
        if tf.config.experimental.get_device_details(gpu).get("compute_capability", (0,)) >= (7,):
            return True
    return False


# ---------------------------------------------------------------------------- recipe


class ImageClassificationRecipe(Recipe):
    """Image folder / TFDS data, cross-entropy (with auxiliary heads and label smoothing),
    top-1 / top-5 accuracy, fine-tuning onto a new class set, image-bytes export.

    Subclasses set `name`, `tfds_name` and `feature_map`, and implement `optimizer`; they
    may rename classes (`display_names`) and declare auxiliary outputs.
    """

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

    def load_data(
        self, config, data_dir, global_batch_size, *, training=True, assets=None, load_source=None
    ) -> Data:
        decoded, folder_names, train_count = decoded_splits(
            data_dir, self.tfds_name, decode_size(config)
        )
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
        results = super().evaluate(model, config, data)
        if not self.output_names(config):
            return results
        prefix = f"{PROBABILITIES}_"
        return {k.removeprefix(prefix): v for k, v in results.items() if k.startswith(prefix)}

    def export(self, model, config, assets) -> ExportModule:
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


# ---------------------------------------------------------------------------- export


class ImageClassifierExport(ExportModule):
    """Signatures of an image classifier (auxiliary heads never reach the SavedModel):

    - `serving_default`: `image_bytes` [N] (JPEG/PNG/GIF/BMP, any size) -> the top k
      classes, best first: `classes` [N, k] (names), `class_ids` [N, k] (int64) and
      `probabilities` [N, k]; k = min(top_k, number of classes).
    - `predict_pixels`: `pixels` [N, image_size, image_size, 3] float32 in [0, 255] ->
      `probabilities` [N, num_classes].
    - `features`: `image_bytes` [N] -> `features` [N, h, w, c], the backbone's
      `feature_map` output (for models built on the trained backbone, e.g. a captioner).

    Images are decoded at `decode_size` (resized, as in training) and center-cropped to
    `image_size`, exactly as the evaluation pipeline does.
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        image_size: int,
        decode_size: int,
        class_names: list[str],
        top_k: int = 5,
        feature_map: str,
    ):
        backbone = backbone_of(model)
        extractor = keras.Model(backbone.input, backbone.output[feature_map], name="features")
        super().__init__("image_classifier", model=inference_model(model), extractor=extractor)
        self.image_size, self.decode_size = image_size, decode_size
        self.labels = "".join(f"{name}\n" for name in class_names)
        self.class_names = tf.constant(list(class_names))
        self.top_k = min(int(top_k), len(class_names))

    def _pixels(self, image_bytes: tf.Tensor) -> tf.Tensor:
        side = self.decode_size
        images = tf.map_fn(
            lambda b: decode_image(b, side),
            image_bytes,
            fn_output_signature=tf.TensorSpec([side, side, 3], tf.uint8),
        )
        return center_crop(tf.cast(images, tf.float32), self.image_size)

    @signature(tf.TensorSpec([None], tf.string, name="image_bytes"))
    def serving_default(self, image_bytes):
        probabilities = self.model(self._pixels(image_bytes), training=False)
        top = tf.math.top_k(probabilities, k=self.top_k)
        return {
            "classes": tf.gather(self.class_names, top.indices),
            "class_ids": tf.cast(top.indices, tf.int64),
            "probabilities": top.values,
        }

    @signature(
        lambda self: [
            tf.TensorSpec([None, self.image_size, self.image_size, 3], tf.float32, "pixels")
        ]
    )
    def predict_pixels(self, pixels):
        return {"probabilities": self.model(pixels, training=False)}

    @signature(tf.TensorSpec([None], tf.string, name="image_bytes"))
    def features(self, image_bytes):
        return {"features": self.extractor(self._pixels(image_bytes), training=False)}

    def warmup(self):
        gray = np.full((self.decode_size, self.decode_size, 3), 128, np.uint8)
        jpeg = np.array([tf.io.encode_jpeg(gray).numpy()], dtype=object)
        pixels = np.full((1, self.image_size, self.image_size, 3), 128, np.float32)
        return [
            ("serving_default", {"image_bytes": jpeg}),
            ("predict_pixels", {"pixels": pixels}),
            ("features", {"image_bytes": jpeg}),
        ]

    def request_costs(self):
        image = {"image_bytes": image_cost(self.decode_size)}
        return {
            "serving_default": {"inputs": image},
            "features": {"inputs": image},
            "predict_pixels": {"inputs": {"pixels": image_cost(self.image_size, "pixels")}},
        }

    def extra_assets(self):
        return {"labels.txt": self.labels}
