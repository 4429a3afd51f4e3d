"""Character-level text data in TensorFlow: random training windows, and an in-graph
tokenizer. `CharTokenizer` is `training.data.char_vocab.CharVocab`'s mapping in core
TensorFlow ops (`tf.strings`, `tf.lookup`), tracked on a tf.Module so an exported SavedModel
takes and returns plain strings.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from training.data.char_vocab import CharVocab


class CharTokenizer(tf.Module):
    """`CharVocab` in core TF ops: strings <-> ragged int32 ids, inside a SavedModel."""

    def __init__(self, vocab: CharVocab, name: str = "char_tokenizer"):
        super().__init__(name=name)
        self.unknown_id = vocab.unknown_id
        self.start_id = vocab.start_id
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(list(vocab.chars), tf.string), tf.constant(vocab.ids, tf.int32)
            ),
            default_value=vocab.unknown_id,
        )
        self.id_to_char = tf.constant(list(vocab.table))

    def encode(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """[N] UTF-8 strings -> [N, (chars)] ids; invalid UTF-8 bytes become "unknown"."""
        chars = tf.strings.unicode_split(texts, "UTF-8", errors="replace")
        return tf.ragged.map_flat_values(self.table.lookup, chars)

    def decode(self, ids: tf.Tensor, starts: tf.Tensor, ends: tf.Tensor) -> tf.Tensor:
        """[N, W] ids -> [N] strings of ids[n, starts[n]:ends[n]]."""
        positions = tf.range(tf.shape(ids)[1])[None, :]
        keep = (positions >= starts[:, None]) & (positions < ends[:, None])
        picked = tf.ragged.boolean_mask(ids, keep)
        size = tf.shape(self.id_to_char, out_type=tf.int32)[0]

        def known(x):  # ids outside the vocabulary decode as the unknown character
            return tf.where((x >= 0) & (x < size), x, self.unknown_id)

        safe = tf.ragged.map_flat_values(known, picked)
        chars = tf.ragged.map_flat_values(tf.gather, self.id_to_char, safe)
        return tf.strings.reduce_join(chars, axis=1)


def random_windows(
    ids: np.ndarray, block_size: int, batch_size: int, seed: int | None = None
) -> tf.data.Dataset:
    """Endless batches of (x, y): random windows of `block_size` ids, y shifted by one."""
    if len(ids) < block_size + 1:
        raise ValueError(
            f"text of {len(ids)} characters is shorter than one window ({block_size + 1})"
        )
    data = tf.constant(ids, tf.int32)
    high = len(ids) - block_size
    offsets = tf.range(block_size + 1)

    def window(batch_seed):
        starts = tf.random.stateless_uniform(
            [batch_size], seed=batch_seed, minval=0, maxval=high, dtype=tf.int32
        )
        chunk = tf.gather(data, starts[:, None] + offsets[None, :])
        return chunk[:, :-1], chunk[:, 1:]

    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    return seeds.map(window, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def consecutive_windows(ids: np.ndarray, block_size: int, batch_size: int) -> tf.data.Dataset:
    """Every id of `ids` predicted once: consecutive windows (x, y), the last one dropped
    when incomplete. The mean loss over it is the standard validation loss per character."""
    count = (len(ids) - 1) // block_size
    if count < 1:
        raise ValueError(f"text of {len(ids)} characters is shorter than one window")
    x = ids[: count * block_size].reshape(count, block_size)
    y = ids[1 : count * block_size + 1].reshape(count, block_size)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
