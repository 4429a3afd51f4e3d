"""The captioner's SavedModel (TensorFlow): image decoding, the Keras captioner, decoding,
words and text, with every signature of `training.recipes.captioner` (see there) as a
method. The export side of the recipe.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from training.data.images import decode_image
from training.data.vocab import Vocabulary
from training.export_module import image_cost, shared_function, signature
from training.exports.sequence_generation import (
    BEAM_SIZE,
    LENGTH_PENALTY,
    MAX_LENGTH,
    NO_REPEAT_NGRAM_SIZE,
    SequenceGeneratorExport,
)
from zoo.captioner.presets import DECODING_DEFAULTS

IMAGE_BYTES = tf.TensorSpec([None], tf.string, name="image_bytes")


class Captioner(SequenceGeneratorExport):
    """The exported module: image decoding, the Keras captioner, decoding, words and text.

    `outputs(...)` runs eagerly too: the Python API (`zoo caption`, evaluation).
    """

    decoding_defaults = DECODING_DEFAULTS  # measured on Flickr8k val: zoo.captioner.presets

    def __init__(self, model, config: dict, assets: dict):
        vocab = Vocabulary.from_json(assets["target_vocab"])
        super().__init__("captioner", model, vocab, config)
        self.image_size = int(model.image_size)
        self.grid = tuple(model.grid)
        self.feature_dim = int(model.feature_dim)
        # the prior of `prior_weight`: a blank image's mean feature, at every cell
        self.blank_feature = None
        if self.prior_weight > 0:
            blank = self._encode(self.pixels(tf.constant([""])))  # eager: not traced twice
            self.blank_feature = tf.reduce_mean(blank, axis=[1, 2]).numpy()  # [1, D]

    def decode_inputs_spec(self) -> dict:
        return {"features": tf.TensorSpec([None, *self.grid, self.feature_dim], tf.float32)}

    def prior_inputs(self) -> dict:
        """An image that shows nothing: the feature map of a blank (gray) image, the one an
        empty request is answered for, averaged over the grid (the encoder's padding
        makes its border cells differ) and set at every cell."""
        feature = tf.constant(self.blank_feature)[:, None, None, :]
        return {"features": tf.broadcast_to(feature, [1, *self.grid, self.feature_dim])}

    def pixels(self, image_bytes: tf.Tensor) -> tf.Tensor:
        """Encoded images [N] -> float32 pixels [N, s, s, 3]; an empty string -> gray."""
        side = self.image_size
        gray = tf.fill([side, side, 3], tf.constant(128, tf.uint8))
        images = tf.map_fn(
            lambda b: tf.cond(
                tf.strings.length(b) > 0, lambda: decode_image(b, side), lambda: gray
            ),
            image_bytes,
            fn_output_signature=tf.TensorSpec([side, side, 3], tf.uint8),
        )
        return tf.cast(images, tf.float32)

    def encode(self, pixels: tf.Tensor) -> tf.Tensor:
        """Pixels [N, s, s, 3] -> the encoder's feature maps [N, h, w, D], N = 0 included
        (Keras' batch norm fails on an empty batch: one padding row is encoded instead).
        One graph for every signature that encodes (`shared_function`)."""
        spec = tf.TensorSpec([None, self.image_size, self.image_size, 3], tf.float32)
        return shared_function(self, self._encode, [spec])(pixels)

    def _encode(self, pixels: tf.Tensor) -> tf.Tensor:
        n = tf.shape(pixels)[0]
        padded = tf.pad(pixels, [[0, tf.maximum(0, 1 - n)], [0, 0], [0, 0], [0, 0]])
        return self.model.backbone(padded, training=False)[:n]

    def outputs(self, inputs: dict, beam_size=0, max_length=0, empty=None, options=()) -> dict:
        """{"pixels"} or {"features"} -> caption, scores, tokens, attention [N, T, h, w];
        rows where `empty` is True answer "" with no tokens. `options`: () or
        (no_repeat_ngram_size, length_penalty), < 0 meaning the export's defaults."""
        beam_size = tf.convert_to_tensor(beam_size, tf.int32)
        max_length = tf.convert_to_tensor(max_length, tf.int32)
        if "pixels" in inputs:  # encode once, not in both branches of greedy / beam search
            inputs = {"features": self.encode(inputs["pixels"])}
        ids, attention, scores = self.decode(inputs, beam_size, max_length, *options)
        if empty is not None:
            ids = tf.where(empty[:, None], 0, ids)
            attention = tf.where(empty[:, None, None], 0.0, attention)
            scores = tf.where(empty, 0.0, scores)
        tokens = self.target_tokens(ids)
        shape = tf.concat([tf.shape(ids), self.grid], axis=0)
        return {
            "caption": self.detokenize(ids, tokens),
            "scores": scores,
            "tokens": tokens,
            "attention": tf.reshape(attention, shape),
        }

    def image_outputs(self, image_bytes, beam_size=0, max_length=0, options=()) -> dict:
        """Encoded images [N] -> every output of `outputs`."""
        image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
        empty = tf.equal(tf.strings.length(image_bytes), 0)
        pixels = {"pixels": self.pixels(image_bytes)}
        return self.outputs(pixels, beam_size, max_length, empty, options)

    # -- signatures ------------------------------------------------------------------------

    @signature(IMAGE_BYTES)
    def serving_default(self, image_bytes):
        return {"caption": self.image_outputs(image_bytes)["caption"]}

    @signature(IMAGE_BYTES, BEAM_SIZE, MAX_LENGTH)
    def caption(self, image_bytes, beam_size, max_length):
        out = self.image_outputs(image_bytes, beam_size, max_length)
        return {"caption": out["caption"], "scores": out["scores"]}

    @signature(IMAGE_BYTES, BEAM_SIZE, MAX_LENGTH)
    def caption_with_attention(self, image_bytes, beam_size, max_length):
        return self.image_outputs(image_bytes, beam_size, max_length)

    @signature(
        lambda self: [
            tf.TensorSpec([None, *self.grid, self.feature_dim], tf.float32, "features"),
            BEAM_SIZE,
            MAX_LENGTH,
        ]
    )
    def caption_features(self, features, beam_size, max_length):
        return self.outputs({"features": features}, beam_size, max_length)

    @signature(IMAGE_BYTES, BEAM_SIZE, MAX_LENGTH, NO_REPEAT_NGRAM_SIZE, LENGTH_PENALTY)
    def caption_with_options(
        self, image_bytes, beam_size, max_length, no_repeat_ngram_size, length_penalty
    ):
        options = (no_repeat_ngram_size, length_penalty)
        out = self.image_outputs(image_bytes, beam_size, max_length, options)
        return {"caption": out["caption"], "scores": out["scores"]}

    @signature(IMAGE_BYTES)
    def features(self, image_bytes):
        return {"features": self.encode(self.pixels(image_bytes))}

    # -- Python API, warmup ----------------------------------------------------------------

    def request_costs(self):
        image = {"image_bytes": image_cost(self.image_size)}
        return {
            "serving_default": self.decoding_cost(image, knobs=False),
            "caption": self.decoding_cost(image),
            "caption_with_attention": self.decoding_cost(image),
            "caption_with_options": self.decoding_cost(image),
            "caption_features": self.decoding_cost({"features": {"kind": "pixels"}}),
            "features": {"inputs": image},
        }

    def texts(
        self,
        sources: list,
        beam_size: int,
        no_repeat_ngram_size: int = -1,
        length_penalty: float = -1.0,
    ) -> list[str]:
        """Captions of images (file paths or encoded bytes) with the traced
        `caption_with_options`."""
        data = [Path(s).read_bytes() if isinstance(s, str | Path) else s for s in sources]
        batch = tf.constant(data, tf.string, [len(data)])
        options = self.options(beam_size, 0, no_repeat_ngram_size, length_penalty)
        result = self.caption_with_options(batch, **options)
        return [s.decode("utf-8") for s in result["caption"].numpy()]

    def warmup(self):
        gray = np.full((self.image_size, self.image_size, 3), 128, np.uint8)
        jpeg = np.array([tf.io.encode_jpeg(gray).numpy()], dtype=object)
        knobs = {"beam_size": np.int32(0), "max_length": np.int32(0)}
        return [
            ("serving_default", {"image_bytes": jpeg}),
            ("caption_with_attention", {"image_bytes": jpeg, **knobs}),
        ]
