"""Character-level text data: the vocabulary, random training windows, and an in-graph tokenizer.

`CharVocab` is learned from the training text (sorted distinct characters, as nanoGPT's
shakespeare_char/prepare.py) plus one id for characters it has never seen, which decodes to
U+FFFD; fine-tuning appends new characters after that id. `CharTokenizer` is the same mapping in core TensorFlow ops (`tf.strings`,
`tf.lookup`), tracked on a tf.Module so an exported SavedModel takes and returns plain strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

UNKNOWN_CHAR = "\ufffd"
START_CHAR = "\n"


@dataclass(frozen=True)
class CharVocab:
    """Characters of a text, and one id (`unknown_id`) for characters it has never seen.

    Learned from a text, the characters are sorted and the unknown id comes last. A
    fine-tuning run appends the characters its new text adds *after* the unknown id
    (`extended`), so every id the trained model knows keeps its meaning.
    """

    chars: tuple[str, ...]
    unknown_id: int = -1  # -1: after the last character

    def __post_init__(self) -> None:
        if self.unknown_id < 0:
            object.__setattr__(self, "unknown_id", len(self.chars))
        if self.unknown_id > len(self.chars):
            raise ValueError(f"unknown_id {self.unknown_id} is beyond {len(self.chars)} chars")

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        if not text:
            raise ValueError("cannot build a character vocabulary from an empty text")
        return cls(tuple(sorted(set(text))))

    @classmethod
    def from_assets(cls, assets: dict) -> CharVocab:
        return cls(tuple(assets["chars"]), int(assets.get("unknown_id", -1)))

    def to_assets(self) -> dict:
        return {
            "chars": list(self.chars),
            "unknown_id": self.unknown_id,
            "vocab_size": self.size,
            "start_id": self.start_id,
        }

    def extended(self, chars) -> CharVocab:
        """This vocabulary plus the characters of `chars` it lacks, with new ids at the end."""
        known = set(self.chars)
        new = sorted({c for c in chars if c not in known})
        return CharVocab(self.chars + tuple(new), self.unknown_id)

    @property
    def size(self) -> int:
        return len(self.chars) + 1

    @property
    def table(self) -> tuple[str, ...]:
        """The character of every id (U+FFFD for the unknown id)."""
        u = self.unknown_id
        return self.chars[:u] + (UNKNOWN_CHAR,) + self.chars[u:]

    @property
    def ids(self) -> list[int]:
        """The id of each of `chars`."""
        return [i if i < self.unknown_id else i + 1 for i in range(len(self.chars))]

    @property
    def start_id(self) -> int:
        """The token an empty prompt stands for: a newline when the text has one."""
        if START_CHAR not in self.chars:
            return 0
        return self.ids[self.chars.index(START_CHAR)]

    def encode(self, text: str) -> np.ndarray:
        """int32 ids of the characters of `text` (unknown characters -> `unknown_id`)."""
        index = dict(zip(self.chars, self.ids, strict=True))
        return np.fromiter((index.get(c, self.unknown_id) for c in text), np.int32, len(text))

    def decode(self, ids) -> str:
        table = self.table
        return "".join(table[i] if 0 <= i < len(table) else UNKNOWN_CHAR for i in ids)


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


def read_text(path: str | Path) -> str:
    """The text of a UTF-8 file, with a clear error when it is missing or empty."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if not text:
        raise ValueError(f"text file is empty: {path}")
    return text


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """First (1 - val_fraction) of the characters for training, the rest for validation."""
    cut = int(len(text) * (1.0 - val_fraction))
    return text[:cut], text[cut:]


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
