"""The seq2seq model alone: config round-trip, teacher forcing vs stepwise decoding, beams."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from zoo import registry
from zoo.layers.decoding import beam_search, greedy_decode
from zoo.seq2seq import Seq2SeqTranslator

SOURCE = np.array([[5, 6, 7, 8, 2], [9, 10, 2, 0, 0], [2, 0, 0, 0, 0]], "int32")


def small(attention: str) -> Seq2SeqTranslator:
    spec = registry.get("seq2seq")
    return spec.build(
        "tiny",
        source_vocab_size=40,
        target_vocab_size=50,
        attention=attention,
        embedding_dim=8,
        encoder_units=8,
        decoder_units=12,
        attention_units=8,
    )


@pytest.mark.parametrize("attention", ["additive", "multiplicative"])
def test_teacher_forcing_agrees_with_stepwise_decoding(attention):
    model = small(attention)
    ids, weights, scores = greedy_decode(model, SOURCE, 6)
    ids = ids.numpy()
    assert ids.shape[0] == 3 and ids.shape[1] <= 6
    assert weights.shape == (3, ids.shape[1], 5)
    # attention never looks at padding; rows of emitted tokens sum to 1
    w = weights.numpy()
    assert np.all(w[1, :, 3:] == 0) and np.all(w[2, :, 1:] == 0)
    emitted = np.cumsum(ids == model.eos_id, axis=1) - (ids == model.eos_id) == 0
    np.testing.assert_allclose(w.sum(-1)[emitted], 1.0, rtol=1e-5)
    # feeding the greedy output back with teacher forcing reproduces the same argmaxes
    # (over the words: decoding never emits padding, id 0, nor </s> first)
    target_in = np.concatenate([np.full((3, 1), model.bos_id), ids[:, :-1]], axis=1)
    logits = model({"source_ids": SOURCE, "target_in": target_in}).numpy()
    logits[:, 0, model.eos_id] = -np.inf
    np.testing.assert_array_equal(
        np.where(emitted, logits[..., 1:].argmax(-1) + 1, 0), np.where(emitted, ids, 0)
    )


@pytest.mark.parametrize("attention", ["additive", "multiplicative"])
def test_beam_size_one_equals_greedy(attention):
    model = small(attention)
    g_ids, g_att, g_scores = greedy_decode(model, SOURCE, 7)
    b_ids, b_att, b_scores = beam_search(model, SOURCE, 1, 7)
    np.testing.assert_array_equal(g_ids.numpy(), b_ids.numpy())
    np.testing.assert_allclose(g_att.numpy(), b_att.numpy(), atol=1e-6)
    np.testing.assert_allclose(g_scores.numpy(), b_scores.numpy(), rtol=1e-5)


def test_beam_search_in_graph_with_tensor_beam_and_length_equals_eager():
    model = small("additive")
    eager = model.translate_ids(SOURCE, beam_size=3, max_length=6)
    fn = tf.function(
        model.translate_ids,
        input_signature=[
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.int32),
        ],
    )
    graph = fn(tf.constant(SOURCE), tf.constant(3), tf.constant(6))
    np.testing.assert_array_equal(eager[0].numpy(), graph[0].numpy())
    np.testing.assert_allclose(eager[2].numpy(), graph[2].numpy(), rtol=1e-5)
    assert eager[0].shape[1] <= 6 and eager[1].shape[2] == SOURCE.shape[1]


def test_config_round_trip_and_validation():
    model = small("multiplicative")
    clone = Seq2SeqTranslator.from_config(model.get_config())
    assert clone.get_config()["attention"] == "multiplicative"
    assert clone.get_config()["target_vocab_size"] == 50
    with pytest.raises(ValueError, match="attention"):
        Seq2SeqTranslator(40, 50, attention="dot-product")
    with pytest.raises(ValueError, match="target_vocab_size"):
        Seq2SeqTranslator(40, 2)
    with pytest.raises(KeyError, match="Unknown preset"):
        registry.get("seq2seq").config("huge")
