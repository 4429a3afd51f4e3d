"""Parallel text for translation: line-aligned file pairs, tokenization and detokenization.

Tokenization and detokenization are written once, with core `tf.strings` ops, and used both
by the training pipeline (eagerly) and inside the exported SavedModel, so the served model
sees exactly the tokens it was trained on:

- normalization: invalid UTF-8 replaced, whitespace runs collapsed, optional Unicode
  lowercasing (`tf.strings.lower(..., encoding="utf-8")`);
- tokens: words (letters, digits, hyphens) and every other non-space character on its own,
  except that "." and "," between digits stay inside the number ("3.5", "1,000");
- detokenization undoes the spacing around punctuation and apostrophes, so that sacreBLEU
  (which tokenizes on its own) sees ordinary text ("woman's", "d'hommes", "Hut.").

The readers and the length buckets need no TensorFlow: `training.data.parallel_corpus`,
which also holds `tokenize_text`, these tokens in pure Python (for `zoo prepare`).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

# the TensorFlow-free half (readers, buckets), here too under their old names
from training.data.parallel_corpus import (
    BUCKETS,
    batch_count,
    find_split,
    read_lines,
    read_parallel,
)

__all__ = [
    "BUCKETS",
    "batch_count",
    "detokenize",
    "detokenize_py",
    "find_split",
    "make_dataset",
    "normalize",
    "read_lines",
    "read_parallel",
    "tokenize",
    "tokenize_py",
]

# Every character that is not a letter, a digit, whitespace or a hyphen is a token of its own.
_PUNCT = r"([^\pL\pN\s-])"
_NUMBER_SEP = r"(\pN) ([.,]) (\pN)"


def normalize(texts: tf.Tensor, lowercase: bool) -> tf.Tensor:
    """Normalize a string tensor of any shape (in-graph, core ops only)."""
    texts = tf.strings.unicode_transcode(
        texts, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
    )
    texts = tf.strings.regex_replace(texts, r"[\s\p{Z}]+", " ")  # RE2's \s is ASCII only
    if lowercase:
        texts = tf.strings.lower(texts, encoding="utf-8")
    return tf.strings.strip(texts)


def tokenize(texts: tf.Tensor, lowercase: bool) -> tf.RaggedTensor:
    """Raw sentences [N] -> ragged tokens [N, (T)] (in-graph, core ops only)."""
    texts = normalize(tf.convert_to_tensor(texts, tf.string), lowercase)
    texts = tf.strings.regex_replace(texts, _PUNCT, r" \1 ")
    # Undo the split of "." and "," inside numbers (RE2 has no look-around).
    texts = tf.strings.regex_replace(texts, _NUMBER_SEP, r"\1\2\3")
    return tf.strings.split(texts)


def detokenize(tokens: tf.Tensor | tf.RaggedTensor) -> tf.Tensor:
    """Tokens [N, T] (dense with "" padding, or ragged) -> sentences [N] (in-graph)."""
    if isinstance(tokens, tf.RaggedTensor):
        tokens = tokens.to_tensor(default_value="")
    text = tf.strings.reduce_join(tokens, axis=-1, separator=" ")
    text = tf.strings.regex_replace(text, r"\s+", " ")
    text = tf.strings.regex_replace(text, r" ?' ?", "'")
    text = tf.strings.regex_replace(text, r" ([.,!?;:%)\]}])", r"\1")
    text = tf.strings.regex_replace(text, r"([(\[{]) ", r"\1")
    return tf.strings.strip(text)


def tokenize_py(texts: Sequence[str], lowercase: bool, chunk: int = 8192) -> list[list[str]]:
    """Eager `tokenize` on Python strings (the same ops as the SavedModel)."""
    out: list[list[str]] = []
    for start in range(0, len(texts), chunk):
        ragged = tokenize(tf.constant(list(texts[start : start + chunk]), tf.string), lowercase)
        out.extend([t.decode("utf-8") for t in row] for row in ragged.to_list())
    return out


def detokenize_py(token_lists: Sequence[Sequence[str]]) -> list[str]:
    """Eager `detokenize` on Python token lists."""
    if not token_lists:
        return []
    ragged = tf.ragged.constant([list(t) for t in token_lists], dtype=tf.string)
    if ragged.shape.rank == 1:  # every list was empty
        return ["" for _ in token_lists]
    return [s.decode("utf-8") for s in detokenize(ragged).numpy()]


def make_dataset(
    source_ids: Sequence[Sequence[int]],
    target_ids: Sequence[Sequence[int]],
    batch_size: int,
    bos_id: int,
    eos_id: int,
    shuffle: bool,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batches of ({"source_ids", "target_in"}, target_out, weights), bucketed by length.

    The source already ends with its end-of-sentence id; the decoder reads `<s> y1 .. yn`
    and predicts `y1 .. yn </s>` (teacher forcing). Padding (id 0) has weight 0.
    """
    if len(source_ids) != len(target_ids):
        raise ValueError("source and target id lists differ in length")
    if not source_ids:
        raise ValueError("no sentence pairs to build a dataset from")
    src = _ragged(source_ids)
    tgt_in = _ragged([[bos_id, *t] for t in target_ids])
    tgt_out = _ragged([[*t, eos_id] for t in target_ids])
    ds = tf.data.Dataset.from_tensor_slices((src, tgt_in, tgt_out))
    ds = ds.map(_dense_row)  # rows of a ragged tensor come out as ragged specs
    if shuffle:
        ds = ds.shuffle(len(source_ids), seed=seed, reshuffle_each_iteration=True)

    def length(s, ti, to):
        return tf.maximum(tf.shape(s)[0], tf.shape(ti)[0])

    ds = ds.bucket_by_sequence_length(
        length,
        bucket_boundaries=BUCKETS,
        bucket_batch_sizes=[batch_size] * (len(BUCKETS) + 1),
        pad_to_bucket_boundary=False,
    )

    def to_example(s, ti, to):
        weights = tf.cast(tf.not_equal(to, 0), tf.float32)
        return {"source_ids": s, "target_in": ti}, to, weights

    return ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _dense_row(*rows):
    return tuple(tf.identity(r) for r in rows)


def _ragged(rows: Sequence[Sequence[int]]) -> tf.RaggedTensor:
    lengths = [len(r) for r in rows]
    flat = [i for r in rows for i in r]
    return tf.RaggedTensor.from_row_lengths(
        tf.constant(flat, tf.int32, shape=[len(flat)]), tf.constant(lengths, tf.int64)
    )
