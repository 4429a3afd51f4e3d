"""The tagger's featurizer in core TensorFlow ops, and its tf.data pipeline.

`Featurizer` turns tokens into model inputs in-graph, so the exported SavedModel takes
plain strings; it computes the ids `training.data.tagging.TagEncoder` computes in NumPy.
`make_dataset` is the TensorFlow training route's batching (`--data-dir`); the prepared
arrays' counterpart is `training.data.tagging.TaggedBatches`.
"""

from __future__ import annotations

import tensorflow as tf

from training.data.conllu import Sentence
from training.data.tagging import BUCKETS
from training.data.vocab import UNK_ID, Vocabulary


class Featurizer(tf.Module):
    """Tokens [N, T] ("" = padding) -> model inputs, with core TF ops and lookup tables.

    Word forms are lowercased and their digits replaced by 0 before the word lookup; the
    characters keep their case. Words longer than `max_word_length` characters keep their
    first half and last half of that many characters (prefixes and suffixes matter most).
    """

    def __init__(self, words: Vocabulary, chars: Vocabulary, max_word_length: int):
        super().__init__()
        self.word_table = words.lookup_table()
        self.char_table = chars.lookup_table()
        self.max_word_length = int(max_word_length)

    @staticmethod
    def normalize(tokens: tf.Tensor) -> tf.Tensor:
        """The word-vocabulary form of tokens: lowercase, digits as 0."""
        lowered = tf.strings.lower(tokens, encoding="utf-8")
        return tf.strings.regex_replace(lowered, "[0-9]", "0")

    def word_ids(self, tokens: tf.Tensor) -> tf.Tensor:
        """Word ids [N, T] int32 (0 for "", the [UNK] id for unknown words)."""
        return tf.cast(self.word_table.lookup(self.normalize(tokens)), tf.int32)

    def char_ids(self, tokens: tf.Tensor) -> tf.Tensor:
        """Character ids [N, T, max_word_length] int32, 0-padded."""
        size = self.max_word_length
        head = size // 2
        flat = tf.reshape(tokens, [-1])
        chars = tf.strings.unicode_split(flat, "UTF-8", errors="replace")
        starts, lengths = chars.row_starts(), chars.row_lengths()
        head_idx = tf.ragged.range(starts, starts + tf.minimum(lengths, head))
        tail_from = tf.maximum(tf.cast(head, tf.int64), lengths - (size - head))
        tail_idx = tf.ragged.range(starts + tail_from, starts + lengths)
        kept = tf.gather(chars.values, tf.concat([head_idx, tail_idx], axis=1))
        ids = tf.ragged.map_flat_values(self.char_table.lookup, kept)
        dense = ids.to_tensor(default_value=0, shape=[None, size])
        shape = tf.concat([tf.shape(tokens, out_type=tf.int64), [size]], axis=0)
        return tf.cast(tf.reshape(dense, shape), tf.int32)

    def features(self, tokens: tf.Tensor) -> dict[str, tf.Tensor]:
        """Model inputs for tokens [N, T]."""
        return {"words": self.word_ids(tokens), "chars": self.char_ids(tokens)}


def featurizer_from_assets(assets: dict) -> Featurizer:
    """The featurizer of a run from its saved assets."""
    return Featurizer(
        Vocabulary.from_json(assets["words"]),
        Vocabulary.from_json(assets["chars"]),
        int(assets["max_word_length"]),
    )


def make_dataset(
    sentences: list[Sentence],
    assets: dict,
    featurizer: Featurizer,
    batch_size: int,
    *,
    training: bool,
    word_dropout: float = 0.0,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batched ((words, chars), tag ids, weights) with length bucketing; unknown tags -> 0."""
    tag_index = {t: i for i, t in enumerate(assets["tags"])}
    tokens = tf.ragged.constant([s.words for s in sentences], dtype=tf.string)
    tags = tf.ragged.constant(
        [[tag_index.get(t, 0) for t in s.tags(assets["tagset"])] for s in sentences],
        dtype=tf.int32,
    )
    splits = tokens.row_splits
    ds = tf.data.Dataset.range(len(sentences)).map(
        lambda i: (
            tokens.values[splits[i] : splits[i + 1]],
            tags.values[splits[i] : splits[i + 1]],
        )
    )
    if training:
        ds = ds.shuffle(len(sentences), seed=seed, reshuffle_each_iteration=True)
    ds = ds.bucket_by_sequence_length(
        lambda tok, tag: tf.shape(tok)[0],
        bucket_boundaries=BUCKETS,
        bucket_batch_sizes=[batch_size] * (len(BUCKETS) + 1),
        padding_values=("", 0),
        drop_remainder=False,
    )

    def featurize(tok, tag):
        features = featurizer.features(tok)
        if training and word_dropout > 0:
            drop = tf.random.uniform(tf.shape(tok)) < word_dropout
            words = features["words"]
            features["words"] = tf.where(drop & (words > 0), tf.constant(UNK_ID, tf.int32), words)
        weights = tf.cast(tf.not_equal(tok, ""), tf.float32)
        return features, tag, weights

    return ds.map(featurize, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
