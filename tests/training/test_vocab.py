"""Vocabulary: id layout, frequency order, JSON round trip, and the in-graph tables."""

from __future__ import annotations

import pytest
import tensorflow as tf

from training.data.vocab import UNK, Vocabulary


def test_layout_and_order():
    vocab = Vocabulary.build(
        [["b", "a", "c", "a"], ["c", "b", "d"], ["a"]], specials=["[START]", "[END]"]
    )
    # a:3, b:2, c:2 (tie -> alphabetical), d:1
    assert vocab.tokens == ["", "[UNK]", "[START]", "[END]", "a", "b", "c", "d"]
    assert len(vocab) == 8
    assert vocab.ids(["a", "d", "zzz", ""]) == [4, 7, 1, 0]


def test_max_size_and_min_count():
    lists = [["x"] * 5 + ["y"] * 3 + ["z"]]
    assert Vocabulary.build(lists, max_size=3).tokens == ["", "[UNK]", "x"]
    assert Vocabulary.build(lists, min_count=2).tokens == ["", "[UNK]", "x", "y"]
    with pytest.raises(ValueError, match="max_size"):
        Vocabulary.build(lists, max_size=1)


def test_json_round_trip_and_validation():
    vocab = Vocabulary.build([["hello", "world", "hello"]])
    again = Vocabulary.from_json(vocab.to_json())
    assert again.tokens == vocab.tokens == ["", "[UNK]", "hello", "world"]
    with pytest.raises(ValueError, match="must start"):
        Vocabulary.from_json(["a", "b"])
    with pytest.raises(ValueError, match="Duplicate"):
        Vocabulary.from_json(["", "[UNK]", "a", "a"])


def test_tables_match_python():
    vocab = Vocabulary.build([["Grüße", "cat", "cat", "dog"]])
    table, inverse = vocab.lookup_table(), vocab.inverse_table()
    words = ["cat", "Grüße", "unseen", ""]
    ids = table.lookup(tf.constant(words))
    assert ids.dtype == tf.int64
    assert ids.numpy().tolist() == vocab.ids(words) == [2, 3, 1, 0]
    back = inverse.lookup(tf.constant([2, 3, 1, 0, 99], tf.int64)).numpy().tolist()
    assert [b.decode() for b in back] == ["cat", "Grüße", UNK, "", UNK]
