"""Greedy and beam-search decoding for any attentional sequence decoder (keras.ops only).

One implementation serves every family that generates a token sequence from an input with
attention (seq2seq's translator; the image captioner), in Python and inside an exported
SavedModel. A model is decodable when it implements `SequenceDecoder` below: the constant
`context` of one input (encoder states and attention keys, or an image's annotation
vectors), a recurrent `state`, and one `step`.

Both loops use `ops.while_loop` with fixed-shape loop variables (token and attention buffers
of length `max_length`, written with one-hot masks), so under `tf.function` they become a
single `tf.while_loop` whose `beam_size` and `max_length` may be graph tensors. Decoding
stops early once every sequence has produced "</s>"; the buffers are then cut to the steps
actually taken. Padding (id 0) is never emitted before "</s>"; after it, a sequence emits
padding with zero attention.

Beam search repeats the context once per hypothesis before the loop and, at each step,
gathers the state of the chosen parent hypotheses (`keras.tree.map_structure`), so it works
for any state and context structure.
"""

from __future__ import annotations

from typing import Any, Protocol

from keras import ops, tree

_NEG = -1e9


class SequenceDecoder(Protocol):
    """The decoding interface: what `greedy_decode` and `beam_search` need of a model.

    `context` and `state` are nested structures (tuples, dicts) of batch-major tensors
    [B, ...]; the decoders never look inside them.

    Attributes:
        bos_id: the token that starts every output sequence ("<s>").
        eos_id: the token that ends one ("</s>"); id 0 is padding.
        target_vocab_size: V, the number of ids `step` scores.
    """

    bos_id: int
    eos_id: int
    target_vocab_size: int

    def initial_state(self, inputs) -> tuple[Any, Any]:
        """Inputs [B, ...] -> (context, state): context stays constant while decoding one
        input (encoder states, attention keys, source mask; an image's annotation vectors),
        state is the decoder's recurrent state (e.g. an LSTM's (h, c))."""

    def attention_size(self, context) -> Any:
        """S, the number of attended positions (source length; H * W cells of an image
        grid), an int or a scalar tensor."""

    def step(self, tokens, state, context) -> tuple[Any, Any, Any]:
        """One step: the previous tokens int32 [B] ("<s>" at first) -> (log-probabilities
        float32 [B, V] of the next token, the new state (same structure), attention
        weights float32 [B, S])."""


def greedy_decode(model: SequenceDecoder, inputs, max_length):
    """The most likely next token at each step.

    Returns (ids [B, L] int32, attention [B, L, S] float32, log-prob scores [B]).
    """
    context, state = model.initial_state(inputs)
    batch = _batch_size(state)
    size = model.attention_size(context)
    positions = ops.arange(max_length, dtype="int32")
    eos = model.eos_id
    no_padding = _no_padding(model.target_vocab_size)

    def cond(t, last, state, tokens, attention, finished, scores):
        return ops.logical_and(t < max_length, ops.logical_not(ops.all(finished)))

    def body(t, last, state, tokens, attention, finished, scores):
        logp, state, weights = model.step(last, state, context)
        logp = logp + no_padding
        tok = ops.cast(ops.argmax(logp, axis=-1), "int32")
        tok_logp = ops.squeeze(ops.take_along_axis(logp, ops.expand_dims(tok, 1), axis=1), 1)
        tok = ops.where(finished, 0, tok)
        scores = scores + ops.where(finished, 0.0, tok_logp)
        weights = ops.where(ops.expand_dims(finished, 1), 0.0, weights)
        tokens, attention = _write(positions, t, tokens, attention, tok, weights)
        finished = ops.logical_or(finished, ops.equal(tok, eos))
        return t + 1, tok, state, tokens, attention, finished, scores

    loop_vars = (
        ops.convert_to_tensor(0, "int32"),
        ops.full((batch,), model.bos_id, "int32"),
        state,
        ops.zeros((batch, max_length), "int32"),
        ops.zeros((batch, max_length, size), "float32"),
        ops.zeros((batch,), "bool"),
        ops.zeros((batch,), "float32"),
    )
    t, _, _, tokens, attention, _, scores = ops.while_loop(cond, body, loop_vars)
    return _cut(tokens, t), _cut(attention, t), scores


def beam_search(model: SequenceDecoder, inputs, beam_size, max_length, length_penalty=1.0):
    """Beam search keeping `beam_size` hypotheses per input.

    Hypotheses are ranked by summed log-probability while decoding; the final choice among
    the beams divides by length ** length_penalty. A finished hypothesis stays in the beam
    with a constant score. With beam_size 1 this gives the greedy result.

    Returns (ids [B, L] int32, attention [B, L, S] float32, log-prob scores [B]).
    """
    context, state = model.initial_state(inputs)
    batch = _batch_size(state)
    size = model.attention_size(context)
    k = beam_size
    vocab = model.target_vocab_size
    eos = model.eos_id
    flat = batch * k

    # hypothesis b * k + i of input b: the context once per hypothesis, the state likewise
    context = tree.map_structure(lambda x: ops.repeat(x, k, axis=0), context)
    state = tree.map_structure(lambda x: ops.repeat(x, k, axis=0), state)
    positions = ops.arange(max_length, dtype="int32")
    # After "</s>" a hypothesis may only emit padding (id 0), at no cost; before, never.
    finished_row = ops.where(ops.equal(ops.arange(vocab), 0), 0.0, _NEG)
    no_padding = _no_padding(vocab)
    batch_offsets = ops.expand_dims(ops.arange(batch, dtype="int32") * k, 1)

    def cond(t, last, state, tokens, attention, finished, scores, lengths):
        return ops.logical_and(t < max_length, ops.logical_not(ops.all(finished)))

    def body(t, last, state, tokens, attention, finished, scores, lengths):
        logp, state, weights = model.step(last, state, context)
        logp = ops.reshape(logp, (batch, k, vocab))
        logp = ops.where(ops.expand_dims(finished, -1), finished_row, logp + no_padding)
        candidates = ops.reshape(ops.expand_dims(scores, -1) + logp, (batch, k * vocab))
        scores, index = ops.top_k(candidates, k)
        index = ops.cast(index, "int32")
        tok = index % vocab
        rows = ops.reshape(batch_offsets + index // vocab, (flat,))  # chosen parent beams

        state = tree.map_structure(lambda x: ops.take(x, rows, axis=0), state)
        weights = ops.take(weights, rows, axis=0)
        was_finished = ops.reshape(ops.take(ops.reshape(finished, (flat,)), rows), (batch, k))
        lengths = ops.reshape(ops.take(ops.reshape(lengths, (flat,)), rows), (batch, k))
        lengths = lengths + ops.cast(ops.logical_not(was_finished), "int32")
        tokens = ops.take(ops.reshape(tokens, (flat, max_length)), rows, axis=0)
        attention = ops.take(ops.reshape(attention, (flat, max_length, size)), rows, axis=0)

        tok_flat = ops.reshape(tok, (flat,))
        weights = ops.where(ops.reshape(was_finished, (flat, 1)), 0.0, weights)
        tokens, attention = _write(positions, t, tokens, attention, tok_flat, weights)
        finished = ops.logical_or(was_finished, ops.equal(tok, eos))
        return (
            t + 1,
            tok_flat,
            state,
            ops.reshape(tokens, (batch, k, max_length)),
            ops.reshape(attention, (batch, k, max_length, size)),
            finished,
            scores,
            lengths,
        )

    first = ops.where(ops.equal(ops.arange(k), 0), 0.0, _NEG)  # expand beam 0 only at first
    loop_vars = (
        ops.convert_to_tensor(0, "int32"),
        ops.full((flat,), model.bos_id, "int32"),
        state,
        ops.zeros((batch, k, max_length), "int32"),
        ops.zeros((batch, k, max_length, size), "float32"),
        ops.zeros((batch, k), "bool"),
        ops.zeros((batch, k), "float32") + ops.cast(first, "float32")[None, :],
        ops.zeros((batch, k), "int32"),
    )
    t, _, _, tokens, attention, _, scores, lengths = ops.while_loop(cond, body, loop_vars)

    lengths = ops.cast(ops.maximum(lengths, 1), "float32")
    normalized = scores / ops.power(lengths, length_penalty)
    best = ops.reshape(batch_offsets, (batch,)) + ops.cast(ops.argmax(normalized, -1), "int32")
    tokens = ops.take(ops.reshape(tokens, (flat, max_length)), best, axis=0)
    attention = ops.take(ops.reshape(attention, (flat, max_length, size)), best, axis=0)
    scores = ops.take(ops.reshape(scores, (flat,)), best)
    return _cut(tokens, t), _cut(attention, t), scores


def _no_padding(vocab):
    """Added to log-probabilities [.., V]: an unfinished sequence never emits padding
    (id 0), which an untrained or barely trained model may otherwise rank first."""
    return ops.where(ops.equal(ops.arange(vocab), 0), _NEG, 0.0)


def _batch_size(state):
    return ops.shape(tree.flatten(state)[0])[0]


def _write(positions, t, tokens, attention, tok, weights):
    """Tokens [R, L] and attention [R, L, S] with step t set to tok [R] and weights [R, S]."""
    here = ops.equal(positions, t)
    tokens = tokens + ops.cast(here, "int32")[None, :] * tok[:, None]
    attention = attention + ops.cast(here, "float32")[None, :, None] * weights[:, None, :]
    return tokens, attention


def _cut(buffer, t):
    """The first t steps of a [R, L, ...] buffer."""
    shape = ops.shape(buffer)
    return ops.slice(buffer, (0,) * len(shape), (shape[0], t, *shape[2:]))
