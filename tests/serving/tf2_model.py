"""A small TF2 SavedModel shaped like the zoo's CIFAR export (built with tf.Module, no Keras)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

CLASSES = [f"class_{i}" for i in range(10)]


class ImageModel(tf.Module):
    """JPEG bytes / pixels -> 10-way softmax of a fixed random linear layer; plus a slow op."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.w = tf.Variable(rng.normal(size=(32 * 32 * 3, 10)).astype(np.float32) / 300.0)
        self.classes = tf.constant(CLASSES)

    def _probs(self, pixels):
        return tf.nn.softmax(tf.reshape(pixels / 255.0, [-1, 32 * 32 * 3]) @ self.w)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_bytes(self, image_bytes):
        def decode(b):
            img = tf.io.decode_jpeg(b, channels=3)
            return tf.image.resize(tf.cast(img, tf.float32), [32, 32])

        pixels = tf.map_fn(decode, image_bytes, fn_output_signature=tf.float32)
        probs = self._probs(pixels)
        ids = tf.argmax(probs, axis=-1)
        return {"probabilities": probs, "class_ids": ids, "classes": tf.gather(self.classes, ids)}

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="pixels")])
    def predict_pixels(self, pixels):
        return {"probabilities": self._probs(pixels)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="n")])
    def slow(self, n):
        m = tf.ones([128, 128]) / 128.0

        def body(i, acc):
            return i + 1, acc @ m

        _, acc = tf.while_loop(lambda i, _: i < n[0], body, [tf.constant(0), m])
        return {"total": tf.fill(tf.shape(n), tf.reduce_sum(acc))}


def warmup_record(signature: str, name: str, value: np.ndarray) -> bytes:
    """One PredictionLog record for assets.extra/tf_serving_warmup_requests."""
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = signature
    request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    return log.SerializeToString()


def export(path: Path, warmup_input: str = "pixels") -> Path:
    """Save the model to `path` (a version dir) with a one-record warmup file."""
    model = ImageModel()
    signatures = {
        "serving_default": model.serve_bytes,
        "predict_pixels": model.predict_pixels,
        "slow": model.slow,
    }
    tf.saved_model.save(model, str(path), signatures=signatures)
    extra = path / "assets.extra"
    extra.mkdir()
    with tf.io.TFRecordWriter(str(extra / "tf_serving_warmup_requests")) as writer:
        writer.write(
            warmup_record("predict_pixels", warmup_input, np.zeros([1, 32, 32, 3], np.float32))
        )
    return path


def jpeg(seed: int) -> bytes:
    """A random 32x32 RGB JPEG."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    return tf.io.encode_jpeg(pixels).numpy()
