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

from zoo.layers.decoding import PriorContrast, beam_search, greedy_decode, length_normalizer

BOS, EOS, A, B = 2, 3, 4, 5
TABLE = np.full((6, 6), 1e-6)
TABLE[BOS] = [0, 0, 0, 0.0, 0.6, 0.4]
TABLE[A] = [0, 0, 0, 0.4, 0.35, 0.25]
TABLE[B] = [0, 0, 0, 0.9, 0.05, 0.05]
TABLE = np.log(np.maximum(TABLE / TABLE.sum(1, keepdims=True), 1e-9)).astype("float32")


class MarkovDecoder:
    """The decoding interface of zoo.layers.decoding, in keras.ops (next-token log-probs
    from a table [V, V] indexed by the previous token; TABLE by default)."""

    bos_id, eos_id, target_vocab_size = BOS, EOS, 6

    def __init__(self, table=TABLE):
        self.table = table
        self.target_vocab_size = len(table)

    def initial_state(self, inputs):
        """inputs: [B, S] (their values are unused; S is the attention size)."""
        batch = ops.shape(inputs)[0]
        context = {"positions": ops.ones_like(ops.cast(inputs, "float32"))}
        state = {"step": ops.zeros((batch,), "int32"), "extra": (ops.zeros((batch, 2)),)}
        return context, state

    def attention_size(self, context):
        return ops.shape(context["positions"])[1]

    def step(self, tokens, state, context):
        log_probs = ops.take(ops.convert_to_tensor(self.table), tokens, axis=0)
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


# ---------------------------------------------------------------------------- hygiene

UNK = 1  # the vocabulary's "[UNK]" (training.data.vocab.UNK_ID), unused by TABLE


class UnkFirstDecoder(MarkovDecoder):
    """The toy with "[UNK]" ranked first everywhere (log-prob 0), as the captioner did."""

    def step(self, tokens, state, context):
        log_probs, state, attention = super().step(tokens, state, context)
        return ops.where(ops.arange(6) == UNK, 0.0, log_probs), state, attention


BEAM_2 = lambda m, x, n, **kw: beam_search(m, x, 2, n, **kw)  # noqa: E731


@pytest.mark.parametrize("decode", [greedy_decode, BEAM_2], ids=["greedy", "beam"])
def test_unk_is_never_emitted(decode):
    # without the ban the toy says nothing but "[UNK]", up to the length limit
    ids = _np(decode(UnkFirstDecoder(), INPUTS, 6)[0])
    assert ids.shape == (2, 6) and np.all(ids == UNK)
    ids, attention, scores = (_np(x) for x in decode(UnkFirstDecoder(), INPUTS, 6, unk_id=UNK))
    assert not np.any(ids == UNK)
    # the same answers as the toy without the preference, whose scores they are
    want = [_np(x) for x in decode(MODEL, INPUTS, 6)]
    np.testing.assert_array_equal(ids, want[0])
    np.testing.assert_allclose(scores, want[2], rtol=1e-5)
    np.testing.assert_allclose(attention, want[1])


# A Markov chain that loops: from "<s>" A; A -> B, B -> A (0.7 each), "</s>" weak. Greedy
# writes "A B A B A B ...": bigrams (A, B) and (B, A) repeat.
C = 6
LOOP = np.full((7, 7), 1e-6)
LOOP[BOS] = [0, 0, 0, 0.05, 0.9, 0.04, 0.01]
LOOP[A] = [0, 0, 0, 0.1, 0.05, 0.7, 0.15]
LOOP[B] = [0, 0, 0, 0.1, 0.7, 0.05, 0.15]
LOOP[C] = [0, 0, 0, 0.5, 0.2, 0.2, 0.1]
LOOP = np.log(np.maximum(LOOP / LOOP.sum(1, keepdims=True), 1e-9)).astype("float32")


def _ngrams(row, n) -> list[tuple]:
    words = [int(i) for i in row if i not in (0, EOS)]
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def _repeats(ids, n) -> bool:
    return any(len(set(g)) < len(g) for g in (_ngrams(row, n) for row in ids))


@pytest.mark.parametrize(
    ("decode", "want"),
    [
        # after "A B A" the (A, B) bigram is spent: C, then "</s>" (0.5) is best after C
        (greedy_decode, [A, B, A, C, EOS]),
        # the beam finds "A B C </s>" (0.9 x 0.7 x 0.15 x 0.5 against 0.9 x 0.7 x 0.7 x ...)
        (BEAM_2, [A, B, C, EOS, 0]),
    ],
    ids=["greedy", "beam"],
)
def test_no_repeat_ngram_size_2_never_repeats_a_bigram(decode, want):
    model = MarkovDecoder(LOOP)
    looping = _np(decode(model, INPUTS, 8)[0])
    np.testing.assert_array_equal(looping, [[A, B, A, B, A, B, A, B]] * 2)  # the control
    assert _repeats(looping, 2)
    ids, attention, scores = (_np(x) for x in decode(model, INPUTS, 8, no_repeat_ngram_size=2))
    assert not _repeats(ids, 2), ids
    np.testing.assert_array_equal(ids, [want] * 2)
    p = np.exp(LOOP[[BOS, *want[:-1]], want]).prod() if want[-1] else None
    p = p or np.exp(LOOP[[BOS, A, B], [A, B, C]]).prod() * np.exp(LOOP[C, EOS])
    np.testing.assert_allclose(scores, np.log(p), rtol=1e-4)
    np.testing.assert_allclose(attention.sum(-1), (ids > 0).astype("float32"))


@pytest.mark.parametrize("n", [1, 3])
def test_no_repeat_ngram_size_n(n):
    ids = _np(greedy_decode(MarkovDecoder(LOOP), INPUTS, 10, no_repeat_ngram_size=n)[0])
    assert not _repeats(ids, n), ids
    # n = 1: no token twice (A B C, then "</s>"); n = 3: "A B A B" then (B, A, B) is spent
    want = {1: [A, B, C, EOS], 3: [A, B, A, B, C, EOS]}[n]
    np.testing.assert_array_equal(ids[0, : len(want)], want)


# Length normalisation. "B </s>" (0.55 x 0.5 = 0.275, 2 tokens) against "A C </s>"
# (0.45 x 0.95 x 0.6 = 0.2565, 3 tokens): by log P the short one wins; normalised by
# Wu et al.'s ((5 + |Y|) / 6) ** alpha the long one wins for alpha > 0.39
# (ln(1.3606 / 1.2910) / ln(8 / 7)); normalised by |Y| ** alpha it would win from 0.13.
LENGTHS = np.full((7, 7), 1e-6)
LENGTHS[BOS] = [0, 0, 0, 0, 0.45, 0.55, 0]
LENGTHS[A] = [0, 0, 0, 0.05, 0, 0, 0.95]
LENGTHS[B] = [0, 0, 0, 0.5, 0.25, 0, 0.25]
LENGTHS[C] = [0, 0, 0, 0.6, 0.2, 0.2, 0]
LENGTHS = np.log(np.maximum(LENGTHS / LENGTHS.sum(1, keepdims=True), 1e-9)).astype("float32")
SHORT, LONG = [B, EOS, 0], [A, C, EOS]


@pytest.mark.parametrize(("alpha", "want"), [(0.0, SHORT), (0.3, SHORT), (0.5, LONG), (1.0, LONG)])
def test_length_normalisation_is_wu_et_al(alpha, want):
    ids, _, scores = (
        _np(x) for x in beam_search(MarkovDecoder(LENGTHS), INPUTS, 2, 6, length_penalty=alpha)
    )
    np.testing.assert_array_equal(ids[:, :3], [want] * 2)
    p = 0.55 * 0.5 if want == SHORT else 0.45 * 0.95 * 0.6
    np.testing.assert_allclose(scores, np.log(p), rtol=1e-4)  # the unnormalised log P


def test_length_normalizer_values():
    got = _np(length_normalizer(ops.convert_to_tensor([1, 2, 7]), 0.6))
    np.testing.assert_allclose(got, [1.0, (7 / 6) ** 0.6, 2.0**0.6], rtol=1e-6)


def test_hygiene_traced_with_tensor_options_equals_eager():
    """no_repeat_ngram_size, length_penalty and unk_id as graph tensors (as the SavedModel
    signatures pass them): one trace, the eager answers."""
    fn = tf.function(
        lambda x, k, n, a: beam_search(
            MarkovDecoder(LOOP), x, k, 8, a, unk_id=tf.constant(UNK), no_repeat_ngram_size=n
        ),
        input_signature=[
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.float32),
        ],
    )
    for k, n, alpha in ((1, 0, 0.0), (2, 2, 0.6), (3, 3, 1.0), (2, 1, 0.0)):
        eager = beam_search(
            MarkovDecoder(LOOP), INPUTS, k, 8, alpha, unk_id=UNK, no_repeat_ngram_size=n
        )
        graph = fn(tf.constant(INPUTS), tf.constant(k), tf.constant(n), tf.constant(alpha))
        for e, g in zip(eager, graph, strict=True):
            np.testing.assert_allclose(_np(e), g.numpy(), rtol=1e-6)
        if n:
            assert not _repeats(graph[0].numpy(), n)
    assert fn.experimental_get_tracing_count() == 1


# A finished hypothesis must not crowd a longer one out of the beam when the normalised
# score prefers the longer one. Beam 2: "A C" and "B </s>" (0.27) after two steps; then
# "A C </s>" (0.297) and "A C E" (0.216) by log P keep "B </s>" and "A C </s>", but
# normalised (alpha 3) "A C E" outranks "B </s>", and "A C E </s>" (0.1944) wins.
E_ = 7
CROWD = np.full((8, 8), 0.0)
CROWD[BOS, [A, B, C, E_]] = [0.6, 0.3, 0.05, 0.05]
CROWD[A, [C, EOS, B]] = [0.9, 0.05, 0.05]
CROWD[B, [EOS, A]] = [0.9, 0.1]
CROWD[C, [EOS, E_, B]] = [0.55, 0.4, 0.05]
CROWD[E_, [EOS, B]] = [0.9, 0.1]
CROWD[[0, 1, EOS]] = 1 / 8
CROWD = np.log(np.maximum(CROWD, 1e-9)).astype("float32")


def test_normalised_ranking_keeps_longer_hypotheses_in_the_beam():
    model = MarkovDecoder(CROWD)
    ids, _, scores = (_np(x) for x in beam_search(model, INPUTS, 2, 6, length_penalty=3.0))
    np.testing.assert_array_equal(ids[:, :4], [[A, C, E_, EOS]] * 2)
    np.testing.assert_allclose(scores, np.log(0.6 * 0.9 * 0.4 * 0.9), rtol=1e-4)
    # by log P alone the three-token "A C </s>" is the best
    ids = _np(beam_search(model, INPUTS, 2, 6, length_penalty=0.0)[0])
    np.testing.assert_array_equal(ids[:, :3], [[A, C, EOS]] * 2)


@pytest.mark.slow
def test_hygiene_under_jax():
    """The eager tests of this module (the hygiene ones included) under KERAS_BACKEND=jax."""
    import subprocess
    import sys

    from tests.helpers import FAST_XLA, REPO_ROOT, subprocess_env

    pytest.importorskip("jax")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
         "-k", "not traced and not under_jax"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=600,
        # compile-time, not run-time: XLA's CPU optimisations cost more than they save on
        # the one-off calls of eager JAX (each op compiles once per shape)
        env=subprocess_env(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", XLA_FLAGS=FAST_XLA),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-500:]


class EosFirstDecoder(MarkovDecoder):
    """The toy with "</s>" ranked first after "<s>" (the empty output most likely), as a
    barely trained model may."""

    def step(self, tokens, state, context):
        log_probs, state, attention = super().step(tokens, state, context)
        first = ops.logical_and((tokens == BOS)[:, None], (ops.arange(6) == EOS)[None, :])
        return ops.where(first, 0.0, log_probs), state, attention


@pytest.mark.parametrize("decode", [greedy_decode, BEAM_2], ids=["greedy", "beam"])
def test_the_output_is_never_empty(decode):
    ids, _, scores = (_np(x) for x in decode(EosFirstDecoder(), INPUTS, 6))
    assert np.all(ids[:, 0] != EOS) and np.all(ids[:, 0] > 0)
    # the toy's own best non-empty answers, and their scores
    np.testing.assert_array_equal(ids, _np(decode(MODEL, INPUTS, 6)[0]))
    np.testing.assert_allclose(scores, _np(decode(MODEL, INPUTS, 6)[2]), rtol=1e-5)


# What an input says against what the model says of anything: after "<s>", A is the more
# likely word of every input (0.7 for the blank one, 0.52 for input 1), but input 1 makes
# B more likely than the blank input does (0.48 against 0.3). Both end after one word.
SAYS = {0: [0.0, 0.7, 0.3], 1: [0.0, 0.52, 0.48]}  # "</s>", A, B after "<s>"


def _table(first):
    table = np.full((6, 6), 1e-6)
    table[BOS, [EOS, A, B]] = first
    table[A, EOS] = table[B, EOS] = 0.9
    table[A, [A, B]] = table[B, [A, B]] = 0.05
    return np.log(np.maximum(table / table.sum(1, keepdims=True), 1e-9)).astype("float32")


class InputDecoder(MarkovDecoder):
    """The toy with one table per input: row i of the inputs [B, S] decodes by the table of
    its first value (0, the blank input, or 1). It broadcasts a context of batch 1, and
    records the batch of every context it is given (`contexts`)."""

    TABLES = np.stack([_table(SAYS[0]), _table(SAYS[1])])

    def __init__(self):
        super().__init__()
        self.contexts: list[int] = []

    def initial_state(self, inputs):
        context, state = super().initial_state(inputs)
        return {**context, "which": ops.cast(inputs[:, :1], "int32")}, state

    def step(self, tokens, state, context):
        self.contexts.append(int(ops.shape(context["which"])[0]))
        _, state, attention = super().step(tokens, state, context)
        blank, shown = (ops.take(ops.convert_to_tensor(t), tokens, axis=0) for t in self.TABLES)
        return ops.where(context["which"] > 0, shown, blank), state, attention


BLANK = np.zeros((1, 3), "int32")
SHOWN = np.ones((2, 3), "int32")


@pytest.mark.parametrize("decode", [greedy_decode, BEAM_2], ids=["greedy", "beam"])
def test_prior_contrast_prefers_what_the_input_makes_likelier(decode):
    model = InputDecoder()
    ids, _, scores = (_np(x) for x in decode(model, SHOWN, 6))
    np.testing.assert_array_equal(ids, [[A, EOS]] * 2)  # the control: the model alone
    np.testing.assert_allclose(scores, np.log(0.52 * 0.9), rtol=1e-4)
    contrast = PriorContrast(model, BLANK, 0.5)
    model.contexts.clear()
    ids, attention, scores = (_np(x) for x in decode(contrast, SHOWN, 6))
    # the prior's context stays one row; the input's has a row per hypothesis
    assert set(model.contexts) == {1, 2 if decode is greedy_decode else 4}, model.contexts
    np.testing.assert_array_equal(ids, [[B, EOS]] * 2)
    # each word scores log p(word | input) - 0.5 log p(word | blank)
    want = np.log(0.48) - 0.5 * np.log(0.3) + 0.5 * np.log(0.9)
    np.testing.assert_allclose(scores, want, rtol=1e-4)
    np.testing.assert_array_equal(attention, [[[1, 0, 0], [0, 1, 0]]] * 2)
    # a weight too small to overturn 0.52 against 0.48: A again
    small = _np(decode(PriorContrast(model, BLANK, 0.05), SHOWN, 6)[0])
    np.testing.assert_array_equal(small, [[A, EOS]] * 2)


@pytest.mark.parametrize("decode", [greedy_decode, BEAM_2], ids=["greedy", "beam"])
def test_prior_contrast_with_the_input_itself_scales_the_scores(decode):
    # log p - w log p = (1 - w) log p: every ranking stays, hygiene included
    model = MarkovDecoder(LOOP)
    want = [_np(x) for x in decode(model, INPUTS, 8, no_repeat_ngram_size=2)]
    got = [_np(x) for x in decode(PriorContrast(model, INPUTS[:1], 0.25), INPUTS, 8,
                                  no_repeat_ngram_size=2)]  # fmt: skip
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1])
    np.testing.assert_allclose(got[2], 0.75 * want[2], rtol=1e-5)
