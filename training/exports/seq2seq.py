"""The seq2seq translator's SavedModel (TensorFlow): source tokenization, the vocabulary
tables, the Keras model and decoding, with every signature of `training.recipes.seq2seq`
(see there) as a method. The export side of the recipe.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from training.data import parallel_text
from training.data.vocab import UNK, UNK_ID, Vocabulary
from training.export_module import signature
from training.exports.sequence_generation import (
    BEAM_SIZE,
    LENGTH_PENALTY,
    MAX_LENGTH,
    NO_REPEAT_NGRAM_SIZE,
    SequenceGeneratorExport,
)
from training.tasks.sequence_generation import EOS
from zoo.seq2seq.presets import DECODING_DEFAULTS

SOURCE = tf.TensorSpec([None], tf.string, name="source")


class Translator(SequenceGeneratorExport):
    """The exported module: tokenization, vocabulary tables, the Keras model and decoding.

    `outputs(...)` runs eagerly too: it is the Python API (every output at once).
    """

    decoding_defaults = DECODING_DEFAULTS  # measured on Multi30k val: zoo.seq2seq.presets

    def __init__(self, model, config: dict, assets: dict):
        target_vocab = Vocabulary.from_json(assets["target_vocab"])
        super().__init__("seq2seq_translator", model, target_vocab, config)
        source_vocab = Vocabulary.from_json(assets["source_vocab"])
        self.source_table = source_vocab.lookup_table()
        self.source_vocab_text = "".join(f"{token}\n" for token in source_vocab.tokens)
        self.lowercase_source = bool(config["lowercase_source"])
        self.max_source_tokens = int(config["max_source_tokens"])
        self.replace_unk = bool(config.get("replace_unk", True))

    # -- plain methods (eager or traced) -------------------------------------------------

    def encode_source(self, source: tf.Tensor):
        """Sentences [N] -> (ids int32 [N, S], normalized tokens [N, S], original-case tokens)."""
        tokens = parallel_text.tokenize(source, self.lowercase_source)
        tokens = tokens[:, : self.max_source_tokens - 1]
        cased = parallel_text.tokenize(source, False)[:, : self.max_source_tokens - 1]
        eos = tf.fill([tokens.nrows(), 1], EOS)
        tokens = tf.concat([tokens, eos], axis=1).to_tensor(default_value="")
        # An empty batch has no columns at all; give it one so the encoder's loop has a step.
        tokens = tf.pad(tokens, [[0, 0], [0, tf.maximum(0, 1 - tf.shape(tokens)[1])]])
        ids = tf.cast(self.source_table.lookup(tokens), tf.int32)
        ids = tf.where(tf.equal(tokens, ""), 0, ids)
        cased = tf.concat([cased, eos], axis=1).to_tensor(default_value="", shape=tf.shape(tokens))
        return ids, tokens, cased

    def auto_length(self, source_ids) -> tf.Tensor:
        """2 * source tokens + 10."""
        return 2 * tf.shape(source_ids)[1] + 10

    def decode(self, source_ids, beam_size, max_length, *options):
        """Greedy (beam 1) or beam search on source ids; returns (ids, attention, scores)."""
        return super().decode(tf.cast(source_ids, tf.int32), beam_size, max_length, *options)

    def outputs(
        self, source, beam_size=0, max_length=0, no_repeat_ngram_size=None, length_penalty=None
    ) -> dict[str, tf.Tensor]:
        """Sentences [N] -> dict of translation, scores, tokens, attention and target ids
        (`no_repeat_ngram_size` / `length_penalty` None or < 0: the export's defaults)."""
        source = tf.convert_to_tensor(source, tf.string)
        beam_size = tf.convert_to_tensor(beam_size, tf.int32)
        max_length = tf.convert_to_tensor(max_length, tf.int32)
        ids, source_tokens, cased = self.encode_source(source)
        target_ids, attention, scores = self.decode(
            ids, beam_size, max_length, no_repeat_ngram_size, length_penalty
        )
        target_tokens = self.target_tokens(target_ids)
        words = target_tokens
        if self.replace_unk:
            aligned = tf.gather(cased, tf.argmax(attention, axis=-1), batch_dims=1)
            aligned = tf.where(tf.equal(aligned, EOS), UNK, aligned)
            words = tf.where(tf.equal(target_ids, UNK_ID), aligned, words)
        translation = self.detokenize(target_ids, words)
        empty = tf.equal(tf.reduce_sum(tf.cast(ids > 0, tf.int32), axis=1), 1)  # only </s>
        translation = tf.where(empty, "", translation)
        return {
            "translation": translation,
            "scores": scores,
            "source_tokens": source_tokens,
            "target_tokens": target_tokens,
            "attention": attention,
            "target_ids": target_ids,
        }

    # -- signatures ------------------------------------------------------------------------

    @signature(SOURCE)
    def serving_default(self, source):
        return {"translation": self.outputs(source)["translation"]}

    @signature(SOURCE, BEAM_SIZE, MAX_LENGTH)
    def translate(self, source, beam_size, max_length):
        out = self.outputs(source, beam_size, max_length)
        return {"translation": out["translation"], "scores": out["scores"]}

    @signature(SOURCE, BEAM_SIZE, MAX_LENGTH)
    def translate_with_attention(self, source, beam_size, max_length):
        out = self.outputs(source, beam_size, max_length)
        out.pop("target_ids")
        return out

    @signature(SOURCE, BEAM_SIZE, MAX_LENGTH, NO_REPEAT_NGRAM_SIZE, LENGTH_PENALTY)
    def translate_with_options(
        self, source, beam_size, max_length, no_repeat_ngram_size, length_penalty
    ):
        out = self.outputs(source, beam_size, max_length, no_repeat_ngram_size, length_penalty)
        return {"translation": out["translation"], "scores": out["scores"]}

    @signature(tf.TensorSpec([None, None], tf.int64, name="source_ids"), BEAM_SIZE, MAX_LENGTH)
    def translate_ids(self, source_ids, beam_size, max_length):
        target_ids, _, scores = self.decode(source_ids, beam_size, max_length)
        return {"target_ids": target_ids, "scores": scores}

    # -- Python API, warmup, assets ---------------------------------------------------------

    def request_costs(self):
        # measured: 32 sources of 250 words at beam 16 took 842 MB, at beam 1 88 MB
        source = {"source": {"kind": "text", "weight": 16}}
        return {
            "serving_default": self.decoding_cost(source, knobs=False),
            "translate": self.decoding_cost(source),
            "translate_with_attention": self.decoding_cost(source),
            "translate_with_options": self.decoding_cost(source),
            "translate_ids": self.decoding_cost({"source_ids": {"kind": "tokens", "weight": 32}}),
        }

    def texts(
        self,
        sources: list[str],
        beam_size: int,
        no_repeat_ngram_size: int = -1,
        length_penalty: float = -1.0,
    ) -> list[str]:
        """Translations of sentences with the compiled `translate_with_options` signature."""
        batch = tf.constant(sources, tf.string, [len(sources)])
        options = self.options(beam_size, 0, no_repeat_ngram_size, length_penalty)
        result = self.translate_with_options(batch, **options)
        return [s.decode("utf-8") for s in result["translation"].numpy()]

    def warmup(self):
        example = np.array(["A man is riding a bicycle down the street."], dtype=object)
        return [
            ("serving_default", {"source": example}),
            ("translate", {"source": example, "beam_size": np.int32(0), "max_length": np.int32(0)}),
        ]

    def extra_assets(self) -> dict[str, str]:
        return {"source_vocab.txt": self.source_vocab_text, **super().extra_assets()}
