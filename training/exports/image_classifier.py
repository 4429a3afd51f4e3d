"""The SavedModel of an image classifier (`training.tasks.image_classification`): the
model with its image decoding and class names, as serving signatures. TensorFlow: the
export side of the task layer, imported by `ImageClassificationRecipe.export`.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from training.data.image_arrays import center_crop
from training.data.images import decode_image
from training.export_module import ExportModule, image_cost, signature
from zoo.tasks.image_classifier import backbone_of, inference_model


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
        # the traced `predict_pixels`, called: one graph of the model, not two
        probabilities = self.predict_pixels(self._pixels(image_bytes))["probabilities"]
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
