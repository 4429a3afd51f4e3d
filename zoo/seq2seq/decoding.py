"""Greedy and beam-search decoding in keras.ops (one implementation for Python and SavedModel).

Both loops use `ops.while_loop` with fixed-shape loop variables (token and attention buffers
of length `max_length`, written with one-hot masks), so under `tf.function` they become a
single `tf.while_loop` whose `beam_size` and `max_length` may be graph tensors. Decoding
stops early once every sentence has produced "</s>"; the buffers are then cut to the steps
actually taken. After "</s>" a sentence emits padding (id 0) with zero attention.
"""

from __future__ import annotations

from keras import ops

_NEG = -1e9


def greedy_decode(model, source_ids, max_length):
    """Most likely next word at each step.

    Returns (ids [B, L] int32, attention [B, L, S] float32, log-prob scores [B]).
    """
    states, keys, mask, h, c = model.encode(source_ids)
    batch = ops.shape(source_ids)[0]
    src_len = ops.shape(source_ids)[1]
    positions = ops.arange(max_length, dtype="int32")
    eos = model.eos_id

    def cond(t, last, h, c, tokens, attention, finished, scores):
        return ops.logical_and(t < max_length, ops.logical_not(ops.all(finished)))

    def body(t, last, h, c, tokens, attention, finished, scores):
        logp, h, c, weights = model.decode_step(last, h, c, states, keys, mask)
        tok = ops.cast(ops.argmax(logp, axis=-1), "int32")
        tok_logp = ops.squeeze(ops.take_along_axis(logp, ops.expand_dims(tok, 1), axis=1), 1)
        tok = ops.where(finished, 0, tok)
        scores = scores + ops.where(finished, 0.0, tok_logp)
        weights = ops.where(ops.expand_dims(finished, 1), 0.0, weights)
        here = ops.equal(positions, t)
        tokens = tokens + ops.cast(here, "int32")[None, :] * tok[:, None]
        attention = attention + ops.cast(here, "float32")[None, :, None] * weights[:, None, :]
        finished = ops.logical_or(finished, ops.equal(tok, eos))
        return t + 1, tok, h, c, tokens, attention, finished, scores

    loop_vars = (
        ops.convert_to_tensor(0, "int32"),
        ops.full((batch,), model.bos_id, "int32"),
        h,
        c,
        ops.zeros((batch, max_length), "int32"),
        ops.zeros((batch, max_length, src_len), "float32"),
        ops.zeros((batch,), "bool"),
        ops.zeros((batch,), "float32"),
    )
    t, _, _, _, tokens, attention, _, scores = ops.while_loop(cond, body, loop_vars)
    return _cut_tokens(tokens, t), _cut_attention(attention, t), scores


def beam_search(model, source_ids, beam_size, max_length, length_penalty=1.0):
    """Beam search keeping `beam_size` hypotheses per sentence.

    Hypotheses are ranked by summed log-probability while decoding; the final choice among
    the beams divides by length ** length_penalty. A finished hypothesis stays in the beam
    with a constant score. With beam_size 1 this gives the greedy result.

    Returns (ids [B, L] int32, attention [B, L, S] float32, log-prob scores [B]).
    """
    states, keys, mask, h, c = model.encode(source_ids)
    batch = ops.shape(source_ids)[0]
    src_len = ops.shape(source_ids)[1]
    k = beam_size
    vocab = model.target_vocab_size
    eos = model.eos_id
    flat = batch * k

    states = ops.repeat(states, k, axis=0)
    keys = ops.repeat(keys, k, axis=0)
    mask = ops.repeat(mask, k, axis=0)
    h = ops.repeat(h, k, axis=0)
    c = ops.repeat(c, k, axis=0)
    positions = ops.arange(max_length, dtype="int32")
    # After "</s>" a hypothesis may only emit padding (id 0), at no cost.
    finished_row = ops.where(ops.equal(ops.arange(vocab), 0), 0.0, _NEG)
    batch_offsets = ops.expand_dims(ops.arange(batch, dtype="int32") * k, 1)

    def cond(t, last, h, c, tokens, attention, finished, scores, lengths):
        return ops.logical_and(t < max_length, ops.logical_not(ops.all(finished)))

    def body(t, last, h, c, tokens, attention, finished, scores, lengths):
        logp, h, c, weights = model.decode_step(last, h, c, states, keys, mask)
        logp = ops.reshape(logp, (batch, k, vocab))
        logp = ops.where(ops.expand_dims(finished, -1), finished_row, logp)
        candidates = ops.reshape(ops.expand_dims(scores, -1) + logp, (batch, k * vocab))
        scores, index = ops.top_k(candidates, k)
        index = ops.cast(index, "int32")
        tok = index % vocab
        rows = ops.reshape(batch_offsets + index // vocab, (flat,))  # chosen parent beams

        h = ops.take(h, rows, axis=0)
        c = ops.take(c, rows, axis=0)
        weights = ops.take(weights, rows, axis=0)
        was_finished = ops.reshape(ops.take(ops.reshape(finished, (flat,)), rows), (batch, k))
        lengths = ops.reshape(ops.take(ops.reshape(lengths, (flat,)), rows), (batch, k))
        lengths = lengths + ops.cast(ops.logical_not(was_finished), "int32")
        tokens = ops.take(ops.reshape(tokens, (flat, max_length)), rows, axis=0)
        attention = ops.take(ops.reshape(attention, (flat, max_length, src_len)), rows, axis=0)

        tok_flat = ops.reshape(tok, (flat,))
        weights = ops.where(ops.reshape(was_finished, (flat, 1)), 0.0, weights)
        here = ops.equal(positions, t)
        tokens = tokens + ops.cast(here, "int32")[None, :] * tok_flat[:, None]
        attention = attention + ops.cast(here, "float32")[None, :, None] * weights[:, None, :]
        finished = ops.logical_or(was_finished, ops.equal(tok, eos))
        return (
            t + 1,
            tok_flat,
            h,
            c,
            ops.reshape(tokens, (batch, k, max_length)),
            ops.reshape(attention, (batch, k, max_length, src_len)),
            finished,
            scores,
            lengths,
        )

    first = ops.where(ops.equal(ops.arange(k), 0), 0.0, _NEG)  # expand beam 0 only at first
    loop_vars = (
        ops.convert_to_tensor(0, "int32"),
        ops.full((flat,), model.bos_id, "int32"),
        h,
        c,
        ops.zeros((batch, k, max_length), "int32"),
        ops.zeros((batch, k, max_length, src_len), "float32"),
        ops.zeros((batch, k), "bool"),
        ops.zeros((batch, k), "float32") + ops.cast(first, "float32")[None, :],
        ops.zeros((batch, k), "int32"),
    )
    t, _, _, _, tokens, attention, _, scores, lengths = ops.while_loop(cond, body, loop_vars)

    lengths = ops.cast(ops.maximum(lengths, 1), "float32")
    normalized = scores / ops.power(lengths, length_penalty)
    best = ops.reshape(batch_offsets, (batch,)) + ops.cast(ops.argmax(normalized, -1), "int32")
    tokens = ops.take(ops.reshape(tokens, (flat, max_length)), best, axis=0)
    attention = ops.take(ops.reshape(attention, (flat, max_length, src_len)), best, axis=0)
    scores = ops.take(ops.reshape(scores, (flat,)), best)
    return _cut_tokens(tokens, t), _cut_attention(attention, t), scores


def _cut_tokens(tokens, t):
    return ops.slice(tokens, (0, 0), (ops.shape(tokens)[0], t))


def _cut_attention(attention, t):
    shape = ops.shape(attention)
    return ops.slice(attention, (0, 0, 0), (shape[0], t, shape[2]))
