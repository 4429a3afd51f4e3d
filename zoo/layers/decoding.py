"""Greedy and beam-search decoding for any attentional sequence decoder (keras.ops only).

One implementation serves every family that generates a token sequence from an input with
attention (seq2seq's translator; the image captioner), in Python and inside an exported
SavedModel. A model is decodable when it implements `SequenceDecoder` below: the constant
`context` of one input (encoder states and attention keys, or an image's annotation
vectors), a recurrent `state`, and one `step`.

Both loops use `ops.while_loop` with fixed-shape loop variables (token and attention buffers
of length `max_length`, written with one-hot masks), so under `tf.function` they become a
single `tf.while_loop` whose `beam_size`, `max_length`, `no_repeat_ngram_size` and
`length_penalty` may be graph tensors. Decoding stops early once every sequence has produced
"</s>"; the buffers are then cut to the steps actually taken.

Decoding hygiene, the same in both loops:

- padding (id 0) is never emitted before "</s>"; after it, a sequence emits padding with
  zero attention;
- "</s>" is never the first token: the output is never empty (fairseq's `min_len` 1).
  Under the model the empty output is often the most likely one (Stahlberg and Byrne 2019,
  "On NMT Search Errors and Model Errors: Cat Got Your Tongue?"), and weakly trained
  models do rank "</s>" first; an empty input is answered by the caller, not decoded;
- `unk_id` (the target vocabulary's "[UNK]", passed by the caller: the decoder knows no
  vocabulary) is never emitted either, when given;
- `no_repeat_ngram_size` n > 0 bans every token that would complete an n-gram the sequence
  already holds (fairseq's and Hugging Face's `no_repeat_ngram_size`; n = 1 bans every token
  already emitted). Each sequence carries, for every earlier position p, the length of the
  common suffix of its tokens up to p and up to its last token (a fixed [R, L] buffer,
  updated in O(L) a step); a token that followed a position whose suffix matches the last
  n - 1 tokens is banned, through one scatter into [R, V] (`ops.scatter`: one op under
  TensorFlow and JAX; a Python loop in Keras' torch backend, so slow there).

`PriorContrast` wraps a model so that both loops score each token against the model's
answer to a featureless input (maximum mutual information decoding's anti-language model):
words the model would say of anything lose to the ones this input makes likely.

Beam search ranks hypotheses by the length-normalised score of Wu et al. 2016 ("Google's
Neural Machine Translation System", eq. 14): log P(Y) / lp(Y) with
lp(Y) = ((5 + |Y|) / 6) ** alpha (`length_penalty` is alpha; 0 ranks by log P alone, larger
values favour longer outputs). |Y| counts the tokens emitted up to and including "</s>".
All unfinished hypotheses have the same length at a step, so the normalisation only changes
how they compare with finished ones, which stay in the beam with a constant score; the
final choice among the beams uses it too. With beam_size 1 beam search gives the greedy
result.

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


class Shared:
    """A part of the context that every row shares (a batch of one): beam search does not
    repeat it per hypothesis, and the model's `step` broadcasts it against the rows."""

    def __init__(self, value):
        self.value = value


class PriorContrast:
    """A `SequenceDecoder` that scores each token by how much more likely the input makes
    it than a featureless prior input does:

        score(y_t) = log p(y_t | x, y_<t) - weight * log p(y_t | prior, y_<t)

    the anti-language-model form of maximum mutual information decoding (Li et al. 2016,
    "A Diversity-Promoting Objective Function for Neural Conversation Models", MMI-antiLM),
    with the model's own answer to an input that shows nothing (a blank image) as the
    language model. Tokens that the model would say of anything ("a man in a blue shirt")
    lose to the ones this input makes likely. It wraps the model, so greedy and beam search
    and all their hygiene are unchanged; the scores they return are these contrasted sums.

    The prior's context is computed once, for a batch of one, and kept so (`Shared`): only
    its recurrent state has a row per hypothesis. The model's `step` must therefore
    broadcast a context of batch 1 against its rows, as `zoo.layers.attention` does.

    Args:
        model: the `SequenceDecoder` to decode.
        prior_inputs: the prior input, a batch of one in the model's input structure.
        weight: the prior's weight (0 decodes as the model alone; a float or scalar tensor).
    """

    def __init__(self, model: SequenceDecoder, prior_inputs, weight):
        self.model = model
        self.prior_inputs = prior_inputs
        self.weight = weight
        self.bos_id = model.bos_id
        self.eos_id = model.eos_id
        self.target_vocab_size = model.target_vocab_size

    def initial_state(self, inputs):
        context, state = self.model.initial_state(inputs)
        batch = _batch_size(state)
        prior_context, prior_state = self.model.initial_state(self.prior_inputs)
        prior_state = tree.map_structure(lambda x: ops.repeat(x, batch, axis=0), prior_state)
        return (context, Shared(prior_context)), (state, prior_state)

    def attention_size(self, context):
        return self.model.attention_size(context[0])

    def step(self, tokens, state, context):
        logp, state_x, weights = self.model.step(tokens, state[0], context[0])
        prior_logp, prior_state, _ = self.model.step(tokens, state[1], context[1].value)
        return logp - self.weight * prior_logp, (state_x, prior_state), weights


def greedy_decode(
    model: SequenceDecoder, inputs, max_length, *, unk_id=None, no_repeat_ngram_size=0
):
    """The most likely next token at each step, among those allowed.

    Args:
        model: a `SequenceDecoder`.
        inputs: the model's inputs [B, ...].
        max_length: the most tokens a sequence gets ("</s>" included).
        unk_id: the vocabulary's unknown-token id, never emitted (None: allowed).
        no_repeat_ngram_size: n > 0 never repeats an n-gram (0: off).

    Returns (ids [B, L] int32, attention [B, L, S] float32, log-prob scores [B]).
    """
    context, state = model.initial_state(inputs)
    batch = _batch_size(state)
    size = model.attention_size(context)
    positions = ops.arange(max_length, dtype="int32")
    eos = model.eos_id
    vocab = model.target_vocab_size
    banned = _banned_row(vocab, unk_id)
    ngrams = _NgramBan(no_repeat_ngram_size, positions, vocab)
    no_eos = _banned_first(vocab, eos)

    def cond(t, last, state, tokens, attention, finished, scores, suffix):
        return ops.logical_and(t < max_length, ops.logical_not(ops.all(finished)))

    def body(t, last, state, tokens, attention, finished, scores, suffix):
        logp, state, weights = model.step(last, state, context)
        logp = logp + banned + ngrams.mask(suffix, tokens, t) + no_eos(t)
        tok = ops.cast(ops.argmax(logp, axis=-1), "int32")
        tok_logp = ops.squeeze(ops.take_along_axis(logp, ops.expand_dims(tok, 1), axis=1), 1)
        tok = ops.where(finished, 0, tok)
        scores = scores + ops.where(finished, 0.0, tok_logp)
        weights = ops.where(ops.expand_dims(finished, 1), 0.0, weights)
        tokens, attention = _write(positions, t, tokens, attention, tok, weights)
        suffix = ngrams.update(suffix, tokens, t, tok)
        finished = ops.logical_or(finished, ops.equal(tok, eos))
        return t + 1, tok, state, tokens, attention, finished, scores, suffix

    loop_vars = (
        ops.convert_to_tensor(0, "int32"),
        ops.full((batch,), model.bos_id, "int32"),
        state,
        ops.zeros((batch, max_length), "int32"),
        ops.zeros((batch, max_length, size), "float32"),
        ops.zeros((batch,), "bool"),
        ops.zeros((batch,), "float32"),
        ngrams.initial(batch, max_length),
    )
    t, _, _, tokens, attention, _, scores, _ = ops.while_loop(cond, body, loop_vars)
    return _cut(tokens, t), _cut(attention, t), scores


def beam_search(
    model: SequenceDecoder,
    inputs,
    beam_size,
    max_length,
    length_penalty=0.0,
    *,
    unk_id=None,
    no_repeat_ngram_size=0,
):
    """Beam search keeping `beam_size` hypotheses per input.

    Args:
        model: a `SequenceDecoder`.
        inputs: the model's inputs [B, ...].
        beam_size: k, the hypotheses kept per input (1 gives the greedy result).
        max_length: the most tokens a sequence gets ("</s>" included).
        length_penalty: alpha of Wu et al. 2016's length normalisation: hypotheses are
            ranked by log P / ((5 + length) / 6) ** alpha (0: by log P alone).
        unk_id: the vocabulary's unknown-token id, never emitted (None: allowed).
        no_repeat_ngram_size: n > 0 never repeats an n-gram within a hypothesis (0: off).

    Returns (ids [B, L] int32, attention [B, L, S] float32, log-prob scores [B]) of the
    best hypothesis by normalised score; its score is the summed log-probability.
    """
    context, state = model.initial_state(inputs)
    batch = _batch_size(state)
    size = model.attention_size(context)
    k = beam_size
    vocab = model.target_vocab_size
    eos = model.eos_id
    flat = batch * k

    # hypothesis b * k + i of input b: the context once per hypothesis, the state likewise
    context = tree.map_structure(_per_hypothesis(k), context)
    state = tree.map_structure(lambda x: ops.repeat(x, k, axis=0), state)
    positions = ops.arange(max_length, dtype="int32")
    # After "</s>" a hypothesis may only emit padding (id 0), at no cost; before, never.
    finished_row = ops.where(ops.equal(ops.arange(vocab), 0), 0.0, _NEG)
    banned = _banned_row(vocab, unk_id)
    ngrams = _NgramBan(no_repeat_ngram_size, positions, vocab)
    no_eos = _banned_first(vocab, eos)
    batch_offsets = ops.expand_dims(ops.arange(batch, dtype="int32") * k, 1)

    def cond(t, last, state, tokens, attention, finished, scores, lengths, suffix):
        return ops.logical_and(t < max_length, ops.logical_not(ops.all(finished)))

    def body(t, last, state, tokens, attention, finished, scores, lengths, suffix):
        logp, state, weights = model.step(last, state, context)
        tokens = ops.reshape(tokens, (flat, max_length))
        logp = logp + banned + ngrams.mask(suffix, tokens, t) + no_eos(t)
        logp = ops.reshape(logp, (batch, k, vocab))
        logp = ops.where(ops.expand_dims(finished, -1), finished_row, logp)
        candidates = ops.reshape(ops.expand_dims(scores, -1) + logp, (batch, k * vocab))
        # every candidate of an unfinished hypothesis is one token longer than its parent
        grown = lengths + ops.cast(ops.logical_not(finished), "int32")
        penalty = ops.repeat(_wu_penalty(grown, length_penalty), vocab, axis=1)
        _, index = ops.top_k(candidates / penalty, k)
        index = ops.cast(index, "int32")
        scores = ops.take_along_axis(candidates, index, axis=1)
        tok = index % vocab
        rows = ops.reshape(batch_offsets + index // vocab, (flat,))  # chosen parent beams

        state = tree.map_structure(lambda x: ops.take(x, rows, axis=0), state)
        weights = ops.take(weights, rows, axis=0)
        was_finished = ops.reshape(ops.take(ops.reshape(finished, (flat,)), rows), (batch, k))
        lengths = ops.reshape(ops.take(ops.reshape(lengths, (flat,)), rows), (batch, k))
        lengths = lengths + ops.cast(ops.logical_not(was_finished), "int32")
        tokens = ops.take(tokens, rows, axis=0)
        attention = ops.take(ops.reshape(attention, (flat, max_length, size)), rows, axis=0)
        suffix = ops.take(suffix, rows, axis=0)

        tok_flat = ops.reshape(tok, (flat,))
        weights = ops.where(ops.reshape(was_finished, (flat, 1)), 0.0, weights)
        tokens, attention = _write(positions, t, tokens, attention, tok_flat, weights)
        suffix = ngrams.update(suffix, tokens, t, tok_flat)
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
            suffix,
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
        ngrams.initial(flat, max_length),
    )
    t, _, _, tokens, attention, _, scores, lengths, _ = ops.while_loop(cond, body, loop_vars)

    normalized = scores / _wu_penalty(lengths, length_penalty)
    best = ops.reshape(batch_offsets, (batch,)) + ops.cast(ops.argmax(normalized, -1), "int32")
    tokens = ops.take(ops.reshape(tokens, (flat, max_length)), best, axis=0)
    attention = ops.take(ops.reshape(attention, (flat, max_length, size)), best, axis=0)
    scores = ops.take(ops.reshape(scores, (flat,)), best)
    return _cut(tokens, t), _cut(attention, t), scores


def length_normalizer(length, alpha):
    """Wu et al. 2016's lp(Y) = ((5 + |Y|) / 6) ** alpha: 1 for one token, whatever alpha."""
    return ops.power((5.0 + ops.cast(length, "float32")) / 6.0, ops.cast(alpha, "float32"))


def _wu_penalty(lengths, alpha):
    """lp of int lengths [B, k]; a hypothesis of no tokens yet counts as one."""
    return length_normalizer(ops.maximum(lengths, 1), alpha)


def _banned_row(vocab, unk_id):
    """Added to log-probabilities [.., V]: an unfinished sequence never emits padding
    (id 0), which an untrained or barely trained model may otherwise rank first, nor the
    unknown token `unk_id` when one is given."""
    ids = ops.arange(vocab, dtype="int32")
    banned = ops.equal(ids, 0)
    if unk_id is not None:
        banned = ops.logical_or(banned, ops.equal(ids, ops.cast(unk_id, "int32")))
    return ops.where(banned, _NEG, 0.0)


def _banned_first(vocab, eos):
    """t -> what is added to log-probabilities [.., V] at step t: "</s>" banned at t = 0."""
    row = ops.where(ops.equal(ops.arange(vocab), eos), _NEG, 0.0)
    return lambda t: row * ops.cast(ops.equal(t, 0), "float32")


class _NgramBan:
    """`no_repeat_ngram_size` in fixed-size tensors: `suffix` [R, L] int32 holds, for every
    earlier position p of a sequence whose last token is at t - 1, the length of the common
    suffix of tokens[..p] and tokens[..t-1] (0 when tokens[p] differs). The token after a
    position q - 1 whose common suffix is at least n - 1 long completes a repeated n-gram.

    An int size <= 0 turns it off statically (no work in the loop); a tensor size is
    checked in the graph (<= 0: nothing banned)."""

    def __init__(self, size, positions, vocab):
        self.off = isinstance(size, int) and size <= 0
        self.size = None if self.off else ops.cast(size, "int32")
        self.positions = positions
        self.vocab = vocab

    def initial(self, rows, max_length):
        return ops.zeros((rows, 1 if self.off else max_length), "int32")

    def mask(self, suffix, tokens, t):
        """Added to log-probabilities [R, V] at step t: _NEG for every banned token."""
        if self.off:
            return 0.0
        # the common suffix that ends at q - 1, i.e. the (n-1)-gram before position q
        before = ops.pad(suffix[:, :-1], ((0, 0), (1, 0)))
        hit = ops.logical_and(before >= self.size - 1, (self.positions < t)[None, :])
        hit = ops.logical_and(hit, self.size > 0)
        rows = ops.shape(tokens)[0]
        row_ids = ops.broadcast_to(ops.arange(rows, dtype="int32")[:, None], ops.shape(tokens))
        indices = ops.reshape(ops.stack([row_ids, tokens], axis=-1), (-1, 2))
        counts = ops.scatter(indices, ops.reshape(ops.cast(hit, "float32"), (-1,)),
                             (rows, self.vocab))  # fmt: skip
        return ops.where(counts > 0, _NEG, 0.0)

    def update(self, suffix, tokens, t, tok):
        """`suffix` for the sequence ending at t, once token tok [R] is written there."""
        if self.off:
            return suffix
        shifted = ops.pad(suffix[:, :-1], ((0, 0), (1, 0)))
        same = ops.logical_and(ops.equal(tokens, tok[:, None]), (self.positions < t)[None, :])
        return ops.where(same, shifted + 1, 0)


def _per_hypothesis(k):
    """A context part, repeated once per hypothesis (a `Shared` one as it is)."""
    return lambda x: x if isinstance(x, Shared) else ops.repeat(x, k, axis=0)


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
