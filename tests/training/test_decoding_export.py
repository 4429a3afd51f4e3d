"""Decoding hygiene in the SavedModel: a toy decoder exported through the families' own
export path (`SequenceGeneratorExport.decode`, `training.export.write_saved_model`), loaded
with `tf.saved_model.load` and called, for greedy and beam search.

The toy is `tests.zoo.test_decoding`'s Markov chain as a Keras model (its log-probability
table is an embedding weight), with a real `Vocabulary` whose "[UNK]" the export bans."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers, ops

from tests.zoo.test_decoding import (
    BLANK,
    BOS,
    EOS,
    LENGTHS,
    LONG,
    LOOP,
    SHORT,
    SHOWN,
    TABLE,
    A,
    B,
    C,
    InputDecoder,
    _repeats,
)
from training.data.vocab import UNK, Vocabulary
from training.export import write_saved_model
from training.export_module import signature
from training.exports.sequence_generation import (
    BEAM_SIZE,
    LENGTH_PENALTY,
    MAX_LENGTH,
    NO_REPEAT_NGRAM_SIZE,
    SequenceGeneratorExport,
)
from training.tasks.sequence_generation import TARGET_SPECIALS

VOCAB = Vocabulary(["", UNK, *TARGET_SPECIALS, "A", "B", "C", "E"])
INPUTS = tf.zeros([2, 3], tf.int32)
GREEDY, BEAM = 1, 2


class ToyDecoder(keras.Model):
    """A `SequenceDecoder` whose next-token log-probabilities are a table row per previous
    token; `unk_first` ranks "[UNK]" first everywhere (log-prob 0)."""

    def __init__(self, table, unk_first=False, **kwargs):
        super().__init__(**kwargs)
        self.bos_id, self.eos_id = BOS, EOS
        self.target_vocab_size = len(VOCAB)
        full = np.full((len(VOCAB), len(VOCAB)), -1e4, "float32")
        full[: len(table), : len(table)] = table
        if unk_first:
            full[:, VOCAB.id(UNK)] = 0.0
        self.table = layers.Embedding(
            len(VOCAB), len(VOCAB), embeddings_initializer=keras.initializers.Constant(full)
        )
        self.table.build((None,))

    def initial_state(self, inputs):
        batch = ops.shape(inputs)[0]
        return ops.ones_like(ops.cast(inputs, "float32")), ops.zeros((batch,), "int32")

    def attention_size(self, context):
        return ops.shape(context)[1]

    def step(self, tokens, state, context):
        attention = ops.one_hot(state % self.attention_size(context), ops.shape(context)[1])
        return self.table(tokens), state + 1, attention


class ToyExport(SequenceGeneratorExport):
    """The family export base with the toy's signatures (ids in, ids and words out)."""

    @signature(tf.TensorSpec([None, None], tf.int32, name="inputs"))
    def serving_default(self, inputs):
        ids, _, scores = self.decode(inputs, tf.constant(0), tf.constant(0))
        return {"ids": ids, "words": self.target_tokens(ids), "scores": scores}

    @signature(
        tf.TensorSpec([None, None], tf.int32, name="inputs"),
        BEAM_SIZE,
        MAX_LENGTH,
        NO_REPEAT_NGRAM_SIZE,
        LENGTH_PENALTY,
    )
    def generate_with_options(self, inputs, beam_size, max_length, no_repeat, length_penalty):
        ids, _, scores = self.decode(inputs, beam_size, max_length, no_repeat, length_penalty)
        return {"ids": ids, "words": self.target_tokens(ids), "scores": scores}


def export(tmp_path, table, unk_first=False, **config):
    """The toy exported as `<tmp>/toy/1` and loaded back, and the in-process module."""
    config = {"beam_size": 2, "max_decode_length": 8, **config}
    module = ToyExport("toy", ToyDecoder(table, unk_first), VOCAB, config)
    version = write_saved_model(module, tmp_path / "toy", "toy", 1)
    return tf.saved_model.load(str(version)), module


def call(loaded, beam, n=-1, alpha=-1.0, max_length=8):
    out = loaded.signatures["generate_with_options"](
        inputs=INPUTS,
        beam_size=tf.constant(beam),
        max_length=tf.constant(max_length),
        no_repeat_ngram_size=tf.constant(n),
        length_penalty=tf.constant(alpha, tf.float32),
    )
    return {k: v.numpy() for k, v in out.items()}


def test_unk_ranked_first_is_never_emitted_by_the_saved_model(tmp_path):
    loaded, module = export(tmp_path, TABLE, unk_first=True)
    unk = VOCAB.id(UNK)
    answers = [loaded.signatures["serving_default"](inputs=INPUTS)]  # the default beam, 2
    answers += [call(loaded, beam) for beam in (GREEDY, BEAM)]
    for out in answers:
        ids, words = np.asarray(out["ids"]), np.asarray(out["words"])
        assert ids.shape[1] >= 2 and not np.any(ids == unk), ids
        assert UNK.encode() not in words.tolist()[0]
        # the toy's own best answers once "[UNK]" is out: "A </s>" greedily, "B </s>" by beam
        assert ids[0, :2].tolist() in ([A, EOS], [B, EOS])
    assert call(loaded, GREEDY)["ids"][0, :2].tolist() == [A, EOS]
    assert call(loaded, BEAM)["ids"][0, :2].tolist() == [B, EOS]
    # the control: the same toy exported with `allow_unk` says nothing but "[UNK]"
    allowed = ToyExport("toy", ToyDecoder(TABLE, True), VOCAB,
                        {"beam_size": 2, "max_decode_length": 8, "allow_unk": True})  # fmt: skip
    for beam in (GREEDY, BEAM):
        ids = allowed.generate_with_options(INPUTS, beam, 6, -1, -1.0)["ids"].numpy()
        assert np.all(ids == unk), ids


def test_no_repeat_ngram_size_in_the_saved_model(tmp_path):
    """The export's default (here the config's 2) and the per-request option, for greedy and
    beam search (one export for both: each costs seconds)."""
    loaded, _ = export(tmp_path, LOOP, no_repeat_ngram_size=2)
    for beam in (GREEDY, BEAM):
        assert _repeats(call(loaded, beam, n=0)["ids"], 2)  # off: "A B A B ..."
        for n in (-1, 2):  # the default, and asked for
            ids = call(loaded, beam, n=n)["ids"]
            assert not _repeats(ids, 2) and ids.shape[1] >= 3, (beam, ids)
        ids = call(loaded, beam, n=3)["ids"]
        assert not _repeats(ids, 3), (beam, ids)
        if beam == GREEDY:  # (A, B) may repeat, (A, B, A) not: "A B A B C </s>"
            assert ids[0, :6].tolist() == [A, B, A, B, C, EOS], ids
    served = loaded.signatures["serving_default"](inputs=INPUTS)["ids"].numpy()
    assert not _repeats(served, 2)


def test_length_penalty_in_the_saved_model(tmp_path):
    loaded, _ = export(tmp_path, LENGTHS, length_penalty=0.0)
    assert call(loaded, 2)["ids"][0, :3].tolist() == SHORT  # the default: alpha 0
    assert call(loaded, 2, alpha=1.0)["ids"][0, :3].tolist() == LONG
    assert call(loaded, 2, alpha=0.0)["ids"][0, :3].tolist() == SHORT
    # the default of a config that sets alpha 1
    loaded, _ = export(tmp_path / "one", LENGTHS, length_penalty=1.0)
    assert (
        loaded.signatures["serving_default"](inputs=INPUTS)["ids"].numpy()[0, :3].tolist() == LONG
    )


def test_the_export_traces_each_signature_once(tmp_path):
    """`write_saved_model` traces each signature once, inside the save: a function traced
    before it would be traced and saved a second time (the save context is part of the
    trace key), doubling the export's time and its saved_model.pb."""
    _, module = export(tmp_path, TABLE)
    counts = {name: f.experimental_get_tracing_count() for name, f in module.signatures().items()}
    assert counts == {"serving_default": 1, "generate_with_options": 1}


class InputToy(ToyDecoder):
    """The toy with one table per input (`tests.zoo.test_decoding.InputDecoder`'s): row i
    of the inputs decodes by the table of its first value (0, the blank input, or 1)."""

    def __init__(self, **kwargs):
        super().__init__(InputDecoder.TABLES[1], **kwargs)
        blank = ToyDecoder(InputDecoder.TABLES[0]).table.embeddings.numpy()
        self.blank_table = layers.Embedding(
            len(VOCAB), len(VOCAB), embeddings_initializer=keras.initializers.Constant(blank)
        )
        self.blank_table.build((None,))

    def initial_state(self, inputs):
        context, step = super().initial_state(inputs)
        return context, (step, ops.cast(inputs[:, 0], "float32"))

    def step(self, tokens, state, context):
        logp, step, attention = super().step(tokens, state[0], context)
        logp = ops.where(state[1][:, None] > 0, logp, self.blank_table(tokens))
        return logp, (step, state[1]), attention


class InputToyExport(ToyExport):
    """The toy export whose prior is the blank input."""

    def prior_inputs(self):
        return tf.constant(BLANK)


def test_prior_weight_in_the_saved_model(tmp_path):
    """`prior_weight` contrasts every step with the blank input's, for greedy and beam
    search: the word input 1 makes likelier than the blank input does wins (B, not A)."""
    config = {"beam_size": 2, "max_decode_length": 8}
    alone = InputToyExport("toy", InputToy(), VOCAB, {**config, "prior_weight": 0.0})
    module = InputToyExport("toy", InputToy(), VOCAB, {**config, "prior_weight": 0.5})
    loaded = tf.saved_model.load(str(write_saved_model(module, tmp_path / "toy", "toy", 1)))
    for beam in (GREEDY, BEAM):
        knobs = {"beam_size": tf.constant(beam), "max_length": tf.constant(8),
                 "no_repeat_ngram_size": tf.constant(-1), "length_penalty": tf.constant(-1.0)}  # fmt: skip
        control = alone.generate_with_options(tf.constant(SHOWN), *knobs.values())
        assert control["ids"].numpy()[:, :2].tolist() == [[A, EOS]] * 2  # the model alone
        out = loaded.signatures["generate_with_options"](inputs=tf.constant(SHOWN), **knobs)
        assert out["ids"].numpy()[:, :2].tolist() == [[B, EOS]] * 2


def test_a_family_without_a_prior_refuses_a_prior_weight(tmp_path):
    module = ToyExport("toy", ToyDecoder(TABLE), VOCAB,
                       {"beam_size": 2, "max_decode_length": 8, "prior_weight": 0.5})  # fmt: skip
    with pytest.raises(ValueError, match="no prior input: its prior_weight must be 0"):
        module.generate_with_options(INPUTS, 2, 6, -1, -1.0)
