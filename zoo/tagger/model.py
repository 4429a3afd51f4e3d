"""A BiLSTM part-of-speech tagger with word embeddings and a character CNN.

Each word is represented by a learned embedding of its (normalized) form concatenated with
a character-level encoding: a convolution over the word's character embeddings, max-pooled
over the characters, so words never seen in training still get informative features
(suffixes, capitals, digits, hyphens). A stack of bidirectional LSTMs reads the sentence and
a softmax gives one tag distribution per word. Padding (word id 0) is masked throughout.

References: Plank, Søgaard & Goldberg, "Multilingual Part-of-Speech Tagging with
Bidirectional LSTM Models and Auxiliary Loss" (ACL 2016); Ma & Hovy, "End-to-end Sequence
Labeling via Bi-directional LSTM-CNNs-CRF" (ACL 2016) for the character CNN.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="zoo.tagger")
class CharCNN(layers.Layer):
    """Character CNN word encoder: [batch, words, chars] ids -> [batch, words, filters].

    Args:
        vocab_size: number of character ids (0 is padding).
        embedding_dim: size of the character embeddings.
        filters: number of convolution filters (the output size).
        kernel_size: width of the convolution, in characters.
    """

    def __init__(
        self, vocab_size: int, embedding_dim: int, filters: int, kernel_size: int = 3, **kwargs
    ):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.filters = filters
        self.kernel_size = kernel_size
        self.embedding = layers.Embedding(vocab_size, embedding_dim, name="char_embedding")
        # A (1, k) 2-D convolution is a 1-D convolution over each word's characters.
        self.conv = layers.Conv2D(
            filters, (1, kernel_size), padding="same", activation="relu", name="char_conv"
        )

    def build(self, input_shape):
        self.embedding.build(input_shape)
        self.conv.build((*input_shape, self.embedding_dim))
        self.built = True

    def call(self, char_ids):
        char_mask = ops.cast(ops.not_equal(char_ids, 0), self.compute_dtype)
        features = self.conv(self.embedding(char_ids))  # [B, T, C, F], >= 0 after relu
        # zeroing the padding is enough for the max because real features are >= 0
        return ops.max(features * ops.expand_dims(char_mask, -1), axis=2)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:2], self.filters)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "embedding_dim": self.embedding_dim,
            "filters": self.filters,
            "kernel_size": self.kernel_size,
        }


def build_tagger(config: dict[str, Any]) -> keras.Model:
    """Build the tagger from a config dict (see `zoo.tagger.presets`).

    Inputs: `words` int [batch, words] (0 = padding) and `chars` int [batch, words,
    max_word_length] (0 = padding). Output: tag probabilities [batch, words, num_tags],
    carrying the padding mask.

    Example:
        >>> from zoo.tagger import PRESETS, build_tagger
        >>> sizes = {"word_vocab_size": 500, "char_vocab_size": 60, "num_tags": 17}
        >>> model = build_tagger({**PRESETS["tiny"], **sizes})  # the data decides the sizes
        >>> model.output_shape
        (None, None, 17)
    """
    words = keras.Input((None,), dtype="int32", name="words")
    chars = keras.Input((None, int(config["max_word_length"])), dtype="int32", name="chars")
    # The padding mask is passed to the LSTMs explicitly: Concatenate would OR it with the
    # (absent) mask of the character features and lose it.
    mask = ops.not_equal(words, 0)
    word_vectors = layers.Embedding(
        int(config["word_vocab_size"]), int(config["word_dim"]), name="word_embedding"
    )(words)
    char_vectors = CharCNN(
        int(config["char_vocab_size"]),
        int(config["char_dim"]),
        int(config["char_filters"]),
        int(config["char_kernel_size"]),
        name="char_cnn",
    )(chars)
    x = layers.Concatenate(name="word_features")([word_vectors, char_vectors])
    x = layers.Dropout(float(config["dropout"]), name="input_dropout")(x)
    for i in range(int(config["lstm_layers"])):
        x = layers.Bidirectional(
            layers.LSTM(int(config["lstm_units"]), return_sequences=True), name=f"bilstm_{i}"
        )(x, mask=mask)
        x = layers.Dropout(float(config["dropout"]), name=f"dropout_{i}")(x)
    probs = layers.Dense(int(config["num_tags"]), activation="softmax", name="tags")(x)
    return keras.Model({"words": words, "chars": chars}, probs, name="tagger")
