"""A token vocabulary built from training data, usable in Python and in-graph (tf.lookup).

Layout of ids: 0 is padding (""), 1 is "[UNK]", then the optional specials in the order
given, then the tokens by descending frequency (ties broken alphabetically). The JSON form
is just the id -> token list, so it fits in `Data.assets`. Only the in-graph tables need
TensorFlow (imported when they are built), so the vocabulary itself works without it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the in-graph tables only
    import tensorflow as tf

PAD = ""
UNK = "[UNK]"
PAD_ID = 0
UNK_ID = 1


def extend_tokens(known: Sequence[str], new: Iterable[str]) -> list[str]:
    """`known` in its order (every token keeps its id), then the tokens of `new` it lacks, in
    their order: a fine-tuning run's vocabulary, whose known rows keep their trained values."""
    seen = set(known)
    return [*known, *(t for t in new if t not in seen and not seen.add(t))]


class Vocabulary:
    """An id <-> token mapping with padding at 0 and "[UNK]" at 1."""

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if len(tokens) < 2 or tokens[0] != PAD or tokens[1] != UNK:
            raise ValueError(f"A vocabulary must start with {PAD!r} (padding) and {UNK!r}")
        if len(set(tokens)) != len(tokens):
            dupes = sorted(t for t, c in Counter(tokens).items() if c > 1)
            raise ValueError(f"Duplicate tokens in vocabulary: {dupes[:10]}")
        self.tokens: list[str] = tokens
        self._index = {token: i for i, token in enumerate(tokens)}

    @classmethod
    def build(
        cls,
        token_lists: Iterable[Iterable[str]],
        max_size: int | None = None,
        min_count: int = 1,
        specials: Sequence[str] = (),
    ) -> Vocabulary:
        """Count tokens and keep the most frequent.

        Args:
            token_lists: an iterable of token sequences (e.g. sentences).
            max_size: the largest vocabulary size, padding, "[UNK]" and specials included.
            min_count: tokens seen fewer times are left out (they map to "[UNK]").
            specials: reserved tokens placed right after "[UNK]" (e.g. "[START]", "[END]").
        """
        reserved = [PAD, UNK, *specials]
        if len(set(reserved)) != len(reserved):
            raise ValueError(f"specials repeat or clash with padding/[UNK]: {list(specials)}")
        if max_size is not None and max_size < len(reserved):
            raise ValueError(
                f"max_size={max_size} is smaller than the {len(reserved)} reserved ids"
            )
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        reserved_set = set(reserved)
        ranked = sorted(
            (t for t, c in counts.items() if c >= min_count and t not in reserved_set),
            key=lambda t: (-counts[t], t),
        )
        if max_size is not None:
            ranked = ranked[: max_size - len(reserved)]
        return cls(reserved + ranked)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._index

    def id(self, token: str) -> int:
        """The id of one token ("[UNK]"'s id when unknown)."""
        return self._index.get(token, UNK_ID)

    def ids(self, tokens: Iterable[str]) -> list[int]:
        """Ids of tokens; unknown tokens get the "[UNK]" id."""
        index = self._index
        return [index.get(t, UNK_ID) for t in tokens]

    def to_json(self) -> list[str]:
        """The id -> token list (JSON-serializable)."""
        return list(self.tokens)

    @classmethod
    def from_json(cls, tokens: list[str]) -> Vocabulary:
        """Inverse of `to_json`."""
        return cls(tokens)

    def lookup_table(self) -> tf.lookup.StaticHashTable:
        """In-graph string -> int64 id table; unknown strings map to the "[UNK]" id.

        Note: the padding token "" maps to 0, so padded string tensors become padded ids.
        """
        import tensorflow as tf

        init = tf.lookup.KeyValueTensorInitializer(
            tf.constant(self.tokens, tf.string),
            tf.range(len(self.tokens), dtype=tf.int64),
        )
        return tf.lookup.StaticHashTable(init, default_value=tf.constant(UNK_ID, tf.int64))

    def inverse_table(self) -> tf.lookup.StaticHashTable:
        """In-graph int64 id -> string table; out-of-range ids map to "[UNK]"."""
        import tensorflow as tf

        init = tf.lookup.KeyValueTensorInitializer(
            tf.range(len(self.tokens), dtype=tf.int64),
            tf.constant(self.tokens, tf.string),
        )
        return tf.lookup.StaticHashTable(init, default_value=tf.constant(UNK, tf.string))
