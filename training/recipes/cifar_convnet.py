"""Training recipe of the Keras CIFAR-10 convnet (also any image-folder classifier)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from training.data import image_folder
from training.data.images import decode_image
from training.recipe import Data, Export, Recipe


def make_augment(config: dict, seed: int | None = None):
    """Batched augmentation of the original example: shifts of 10% and horizontal flips."""
    steps = []
    if config.get("shift"):
        shift = float(config["shift"])
        steps.append(keras.layers.RandomTranslation(shift, shift, fill_mode="nearest", seed=seed))
    if config.get("horizontal_flip"):
        steps.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if not steps:
        return None
    pipeline = keras.Sequential(steps)
    return lambda images: pipeline(images, training=True)


class ImageClassifierRecipe(Recipe):
    """Image folder / TFDS data, categorical cross-entropy, accuracy, image-bytes export."""

    name = "cifar_convnet"
    tfds_name = "cifar10"

    def load_data(self, config, data_dir, global_batch_size, *, training=True, assets=None) -> Data:
        size = int(config["image_size"])
        if data_dir:
            splits = image_folder.image_folder_splits(data_dir)
            class_names = splits["train"].class_names
            decoded = {k: image_folder.decoded_dataset(v, size) for k, v in splits.items()}
            train_count = len(splits["train"])
        else:
            raw, class_names = image_folder.tfds_splits(self.tfds_name)
            decoded = {
                k: ds.map(lambda x, y: (decode_image(tf.io.encode_png(x), size), y))
                for k, ds in raw.items()
            }
            train_count = int(raw["train"].cardinality())
        if assets and list(assets["class_names"]) != list(class_names):
            raise ValueError(
                f"The data's classes {list(class_names)} differ from the run's "
                f"{assets['class_names']}"
            )
        if len(class_names) != int(config["num_classes"]):
            raise ValueError(
                f"The data has {len(class_names)} classes but the preset expects "
                f"{config['num_classes']}; pass --set num_classes={len(class_names)}"
            )
        train = image_folder.batched(
            decoded["train"],
            global_batch_size,
            shuffle=min(train_count, 50_000) if training else 0,
            augment=make_augment(config) if training else None,
        )
        evaluation = {
            split: image_folder.batched(decoded[split], global_batch_size)
            for split in ("val", "test")
            if split in decoded
        }
        val = evaluation.get("val", evaluation.get("test"))
        return Data(
            train=train,
            val=val,
            test=evaluation.get("test"),
            assets={"class_names": list(class_names)},
        )

    def finetune_overrides(self, config, data_dir) -> dict:
        if not data_dir:
            return {}
        return {"num_classes": len(image_folder.image_folder_splits(data_dir)["train"].class_names)}

    def compile(self, model, config, data, *, jit_compile) -> None:
        schedule = keras.optimizers.schedules.InverseTimeDecay(
            float(config["learning_rate"]), decay_steps=1, decay_rate=float(config["lr_decay"])
        )
        model.compile(
            optimizer=keras.optimizers.RMSprop(
                learning_rate=schedule, epsilon=float(config.get("rmsprop_epsilon", 1e-7))
            ),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=jit_compile,
        )

    def export(self, model, config, assets) -> Export:
        return image_classifier_export(model, int(config["image_size"]), assets["class_names"])


def image_classifier_export(model, image_size: int, class_names: list[str]) -> Export:
    """Signatures: `serving_default` (image bytes -> probabilities, class ids, class names)
    and `predict_pixels` (float pixels 0..255 -> probabilities)."""
    module = tf.Module()
    module.model = model
    module.class_names = tf.constant(class_names)

    def decode_batch(image_bytes):
        images = tf.map_fn(
            lambda b: decode_image(b, image_size),
            image_bytes,
            fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.uint8),
        )
        return tf.cast(images, tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serving_default(image_bytes):
        probabilities = module.model(decode_batch(image_bytes), training=False)
        class_ids = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        return {
            "probabilities": probabilities,
            "class_ids": class_ids,
            "classes": tf.gather(module.class_names, class_ids),
        }

    pixel_spec = tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="pixels")

    @tf.function(input_signature=[pixel_spec])
    def predict_pixels(pixels):
        return {"probabilities": module.model(pixels, training=False)}

    module.serving_default = serving_default
    module.predict_pixels = predict_pixels
    gray = np.full((image_size, image_size, 3), 128, np.uint8)
    jpeg = tf.io.encode_jpeg(gray).numpy()
    return Export(
        module=module,
        signatures={"serving_default": serving_default, "predict_pixels": predict_pixels},
        warmup=[
            ("serving_default", {"image_bytes": np.array([jpeg], dtype=object)}),
            ("predict_pixels", {"pixels": gray[None].astype(np.float32)}),
        ],
        extra_assets={"labels.txt": "\n".join(class_names) + "\n"},
    )


RECIPE = ImageClassifierRecipe()
