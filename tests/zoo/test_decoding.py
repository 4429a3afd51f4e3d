"""zoo.layers.decoding against a toy decoder whose best sequences are known by hand.

The toy is a Markov chain over 6 ids (0 padding, 1 unused, 2 "<s>", 3 "</s>", 4 "A",
5 "B"): the next-token distribution depends on the previous token only. From "<s>", A
(0.6) beats B (0.4); after A every continuation is weak, after B "</s>" is near certain.
Greedy therefore writes "A ..." while the best sequence is "B </s>" (0.4 * 0.9 = 0.36
against at most 0.6 * 0.4 = 0.24), which a beam of 2 finds. The state is a nested structure
(a dict with a step counter and the previous token), the attention is one-hot on position
step % S of each row's S positions, so its buffers are checked too.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from zoo.layers.decoding import beam_search, greedy_decode

BOS, EOS, A, B = 2, 3, 4, 5
TABLE = np.full((6, 6), 1e-6)
TABLE[BOS] = [0, 0, 0, 0.0, 0.6, 0.4]
TABLE[A] = [0, 0, 0, 0.4, 0.35, 0.25]
TABLE[B] = [0, 0, 0, 0.9, 0.05, 0.05]
TABLE = np.log(np.maximum(TABLE / TABLE.sum(1, keepdims=True), 1e-9)).astype("float32")


class MarkovDecoder:
    """The decoding interface of zoo.layers.decoding, in keras.ops."""

    bos_id, eos_id, target_vocab_size = BOS, EOS, 6

    def initial_state(self, inputs):
        """inputs: [B, S] (their values are unused; S is the attention size)."""
        batch = ops.shape(inputs)[0]
        context = {"positions": ops.ones_like(ops.cast(inputs, "float32"))}
        state = {"step": ops.zeros((batch,), "int32"), "extra": (ops.zeros((batch, 2)),)}
        return context, state

    def attention_size(self, context):
        return ops.shape(context["positions"])[1]

    def step(self, tokens, state, context):
        log_probs = ops.take(ops.convert_to_tensor(TABLE), tokens, axis=0)
        size = self.attention_size(context)
        here = ops.expand_dims(state["step"] % size, 1)
        attention = ops.cast(ops.equal(ops.arange(size)[None, :], here), "float32")
        attention = attention * context["positions"]
        state = {"step": state["step"] + 1, "extra": (state["extra"][0] + 1.0,)}
        return log_probs, state, attention


MODEL = MarkovDecoder()
INPUTS = np.zeros((2, 3), "int32")


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


def test_greedy_takes_the_locally_best_token_then_stops_at_eos():
    ids, attention, scores = (_np(x) for x in greedy_decode(MODEL, INPUTS, 6))
    # <s> -> A (0.6), A -> </s> (0.4): both rows end after two steps, buffers cut there
    np.testing.assert_array_equal(ids, [[A, EOS], [A, EOS]])
    np.testing.assert_allclose(scores, np.log(0.6 * 0.4), rtol=1e-4)
    np.testing.assert_array_equal(attention, [[[1, 0, 0], [0, 1, 0]]] * 2)


def test_beam_search_finds_the_sequence_greedy_misses():
    ids, attention, scores = (_np(x) for x in beam_search(MODEL, INPUTS, 2, 6))
    np.testing.assert_array_equal(ids[:, :2], [[B, EOS], [B, EOS]])
    assert np.all(ids[:, 2:] == 0) and np.all(attention[:, 2:] == 0)  # padding after </s>
    np.testing.assert_allclose(scores, np.log(0.4 * 0.9), rtol=1e-4)
    np.testing.assert_array_equal(attention[:, :2], [[[1, 0, 0], [0, 1, 0]]] * 2)


@pytest.mark.parametrize("max_length", [1, 2, 6])
def test_beam_one_equals_greedy(max_length):
    greedy = greedy_decode(MODEL, INPUTS, max_length)
    beam = beam_search(MODEL, INPUTS, 1, max_length)
    for g, b in zip(greedy, beam, strict=True):
        np.testing.assert_allclose(_np(g), _np(b), rtol=1e-6)
    assert _np(greedy[0]).shape == (2, min(max_length, 2))  # stops early, or at the limit


def test_traced_with_tensor_beam_and_length_equals_eager():
    fn = tf.function(
        lambda x, k, n: beam_search(MODEL, x, k, n),
        input_signature=[
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.int32),
        ],
    )
    inputs = np.zeros((3, 4), "int32")  # another batch and attention size: same trace
    for k in (1, 2, 3):
        eager = beam_search(MODEL, inputs, k, 5)
        graph = fn(tf.constant(inputs), tf.constant(k), tf.constant(5))
        for e, g in zip(eager, graph, strict=True):
            np.testing.assert_allclose(_np(e), g.numpy(), rtol=1e-6)
        assert graph[1].shape[2] == 4


def test_length_penalty_prefers_longer_hypotheses():
    """Beam 3 keeps "B </s>", "A </s>" and "A A", then "A A </s>" (0.6 * 0.35 * 0.4 over
    3 tokens); divided by length ** 4 it beats "B </s>" (0.36 over 2 tokens)."""
    ids, _, scores = (_np(x) for x in beam_search(MODEL, INPUTS[:1], 3, 6, length_penalty=4.0))
    np.testing.assert_array_equal(ids[0, :3], [A, A, EOS])
    np.testing.assert_allclose(scores, np.log(0.6 * 0.35 * 0.4), rtol=1e-4)


class PaddingFirstDecoder(MarkovDecoder):
    """The toy with padding (id 0) ranked first everywhere, as an untrained model may."""

    def step(self, tokens, state, context):
        log_probs, state, attention = super().step(tokens, state, context)
        return ops.where(ops.arange(6) == 0, 0.0, log_probs), state, attention


@pytest.mark.parametrize("decode", [greedy_decode, lambda m, x, n: beam_search(m, x, 2, n)])
def test_padding_is_never_emitted_before_eos(decode):
    ids, attention, _ = (_np(x) for x in decode(PaddingFirstDecoder(), INPUTS, 6))
    # the same answers as without the padding preference
    np.testing.assert_array_equal(ids[:, :2], _np(decode(MODEL, INPUTS, 6)[0])[:, :2])
    assert ids[0, 1] == EOS and np.all(ids[:, 0] != 0)
    np.testing.assert_allclose(attention.sum(-1), (ids > 0).astype("float32"))
