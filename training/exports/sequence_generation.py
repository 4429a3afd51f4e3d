"""The export base of the sequence-generation families (TensorFlow): decoding with its
clamps and hygiene, empty batches, ids back to words and text, and the decoding knobs of
the signatures. The task itself (data, loss, BLEU) is `training.tasks.sequence_generation`.
"""

from __future__ import annotations

import tensorflow as tf

from training.data.parallel_text import detokenize
from training.data.vocab import UNK, Vocabulary
from training.export_module import ExportModule, shared_function
from training.tasks.sequence_generation import BOS, EOS, MAX_BEAM, MAX_LENGTH_PENALTY
from zoo.layers import decoding

#: the decoding knobs of the signatures that take them: <= 0 means the export's default
BEAM_SIZE = tf.TensorSpec([], tf.int32, name="beam_size")
MAX_LENGTH = tf.TensorSpec([], tf.int32, name="max_length")
#: the hygiene knobs of the `*_with_options` signatures: < 0 means the export's default;
#: a size of 0 turns the n-gram ban off, a penalty of 0 turns length normalisation off
NO_REPEAT_NGRAM_SIZE = tf.TensorSpec([], tf.int32, name="no_repeat_ngram_size")
LENGTH_PENALTY = tf.TensorSpec([], tf.float32, name="length_penalty")


def _at_least_one(x: tf.Tensor) -> tf.Tensor:
    """`x` zero-padded to at least 1 along every axis (an empty batch becomes one row)."""
    shape = tf.shape(x)
    return tf.pad(x, tf.stack([tf.zeros_like(shape), tf.maximum(0, 1 - shape)], axis=1))


class SequenceGeneratorExport(ExportModule):
    """Base of the exported generators: decoding, its clamps, ids -> words -> text.

    Subclasses declare the signatures (raw input -> model inputs -> `decode` ->
    `target_tokens` -> `detokenize`) and `texts`, the Python API evaluation uses, and set
    `decoding_defaults`, their family's measured hygiene defaults.

    Args:
        name: the module's name.
        model: a Keras model implementing `zoo.layers.decoding.SequenceDecoder`.
        target_vocab: its output vocabulary (with `TARGET_SPECIALS`).
        config: the run's config: `beam_size` (the default beam), `max_decode_length` (a
            cap on every request's length), and optionally `length_penalty` (the beam's
            length normalisation alpha, Wu et al. 2016), `no_repeat_ngram_size` (0: off),
            `prior_weight` (> 0 decodes through `zoo.layers.decoding.PriorContrast` with the
            family's `prior_inputs`; 0: off) and `allow_unk` (True lets the decoder emit
            "[UNK]"; by default it never does).
    """

    #: the decoding settings of a config that names none (off here; the families set the
    #: ones they measured on val, `benchmarks/decoding_defaults.py`)
    decoding_defaults: dict = {
        "no_repeat_ngram_size": 0,
        "length_penalty": 0.0,
        "prior_weight": 0.0,
    }

    def __init__(self, name: str, model, target_vocab: Vocabulary, config: dict):
        super().__init__(name, model=model)
        if target_vocab.id(BOS) != model.bos_id or target_vocab.id(EOS) != model.eos_id:
            raise ValueError("target vocabulary and model disagree on the <s> / </s> ids")
        self.target_table = target_vocab.inverse_table()
        self.target_vocab_text = "".join(f"{token}\n" for token in target_vocab.tokens)
        self.default_beam = int(config["beam_size"])
        config = {**self.decoding_defaults, **config}
        self.length_penalty = float(config["length_penalty"])
        self.no_repeat_ngram_size = int(config["no_repeat_ngram_size"])
        self.prior_weight = float(config.get("prior_weight", 0.0))  # a family may not set it
        self.max_decode_length = int(config["max_decode_length"])
        # the vocabulary's unknown token, never emitted (its id, from the vocabulary)
        self.unk_id = None if config.get("allow_unk", False) else target_vocab.id(UNK)

    def decoding_cost(self, inputs: dict[str, dict], knobs: bool = True) -> dict:
        """The request-cost declaration of a decoding signature on `inputs` (declared by
        the subclass), with its `beam_size` / `max_length` inputs when `knobs`: up to the
        default beam, or the asked one up to `MAX_BEAM`, times `max_decode_length` tokens."""
        if knobs:
            inputs = {
                **inputs,
                "beam_size": {"kind": "beams", "cap": MAX_BEAM},
                "max_length": {"kind": "new_tokens", "cap": self.max_decode_length},
            }
        return {"inputs": inputs, "new_tokens": self.max_decode_length, "beams": self.default_beam}

    def prior_inputs(self):
        """The model inputs (a batch of one) of an input that shows nothing, for
        `prior_weight`; families without one raise."""
        raise ValueError(f"{self.name} has no prior input: its prior_weight must be 0")

    def decoder(self) -> decoding.SequenceDecoder:
        """What `decode` decodes: the model, contrasted with its prior when `prior_weight`."""
        if self.prior_weight <= 0:
            return self.model
        return decoding.PriorContrast(self.model, self.prior_inputs(), self.prior_weight)

    def auto_length(self, inputs) -> tf.Tensor:
        """The length limit of a request that gives none (max_length <= 0)."""
        return tf.constant(self.max_decode_length)

    def decode_inputs_spec(self) -> tf.TensorSpec | dict:
        """The model inputs `decode` takes (token ids [N, S] here; families override)."""
        return tf.TensorSpec([None, None], tf.int32, name="ids")

    def decode(self, inputs, beam_size, max_length, no_repeat_ngram_size=None, length_penalty=None):
        """Greedy (beam 1) or beam search on model inputs; (ids, attention, scores).

        `beam_size` <= 0 means the default beam, larger ones are clamped to `MAX_BEAM`;
        `max_length` <= 0 means `auto_length(inputs)`; both are capped by
        `max_decode_length`. `no_repeat_ngram_size` and `length_penalty` (scalar tensors)
        < 0 or None mean the export's; the penalty is capped at `MAX_LENGTH_PENALTY`.

        One `tf.function` with the knobs as inputs, shared by every signature
        (`shared_function`): a save traces the decoding loops once, not once per signature.
        """
        knobs = [BEAM_SIZE, MAX_LENGTH, NO_REPEAT_NGRAM_SIZE, LENGTH_PENALTY]
        function = shared_function(self, self._decode, [self.decode_inputs_spec(), *knobs])
        return function(
            inputs,
            beam_size,
            max_length,
            -1 if no_repeat_ngram_size is None else no_repeat_ngram_size,
            -1.0 if length_penalty is None else length_penalty,
        )

    def _decode(self, inputs, beam_size, max_length, no_repeat_ngram_size, length_penalty):
        no_repeat_ngram_size = tf.where(
            no_repeat_ngram_size < 0, self.no_repeat_ngram_size, no_repeat_ngram_size
        )
        given = length_penalty >= 0  # NaN is not: the default too
        length_penalty = tf.where(
            given, tf.minimum(length_penalty, MAX_LENGTH_PENALTY), self.length_penalty
        )
        hygiene = {"unk_id": self.unk_id, "no_repeat_ngram_size": no_repeat_ngram_size}
        beam_size = tf.where(beam_size <= 0, self.default_beam, beam_size)
        beam_size = tf.clip_by_value(beam_size, 1, MAX_BEAM)
        max_length = tf.where(max_length <= 0, self.auto_length(inputs), max_length)
        max_length = tf.clip_by_value(max_length, 1, self.max_decode_length)
        # Keras LSTMs fail on an empty batch: decode one padding row instead, then drop it.
        n = tf.shape(tf.nest.flatten(inputs)[0])[0]
        inputs = tf.nest.map_structure(_at_least_one, inputs)
        model = self.decoder()
        ids, attention, scores = tf.cond(
            tf.equal(beam_size, 1),
            lambda: decoding.greedy_decode(model, inputs, max_length, **hygiene),
            lambda: decoding.beam_search(
                model, inputs, beam_size, max_length, length_penalty, **hygiene
            ),
        )
        return ids[:n], attention[:n], scores[:n]

    def target_tokens(self, ids: tf.Tensor) -> tf.Tensor:
        """Target ids [N, T] -> their vocabulary strings [N, T] ("" for padding)."""
        return self.target_table.lookup(tf.cast(ids, tf.int64))

    def detokenize(self, ids: tf.Tensor, words: tf.Tensor) -> tf.Tensor:
        """Text [N] of words [N, T], leaving out padding, "<s>" and "</s>" (by their ids)."""
        special = (
            tf.equal(ids, 0) | tf.equal(ids, self.model.bos_id) | tf.equal(ids, self.model.eos_id)
        )
        return detokenize(tf.where(special, "", words))

    def texts(
        self,
        sources: list,
        beam_size: int,
        no_repeat_ngram_size: int = -1,
        length_penalty: float = -1.0,
    ) -> list[str]:
        """Generated texts for a batch of raw inputs, through the traced `*_with_options`
        signature (a negative `no_repeat_ngram_size` / `length_penalty`: the export's)."""
        raise NotImplementedError

    def options(self, beam_size, max_length, no_repeat_ngram_size, length_penalty) -> dict:
        """The decoding knobs of `*_with_options` as tensors of their signature's dtypes."""
        return {
            "beam_size": tf.constant(beam_size, tf.int32),
            "max_length": tf.constant(max_length, tf.int32),
            "no_repeat_ngram_size": tf.constant(no_repeat_ngram_size, tf.int32),
            "length_penalty": tf.constant(length_penalty, tf.float32),
        }

    def extra_assets(self) -> dict[str, str]:
        return {"target_vocab.txt": self.target_vocab_text}
