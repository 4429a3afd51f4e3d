"""Sequence generation: an encoder-decoder model that writes a sentence for an input (a
sentence to translate, an image to caption), decoded greedily or by beam search.

A family's recipe subclasses `SequenceGenerationRecipe` (data loading, and `export`
returning its `SequenceGeneratorExport` subclass); the rest is here:

- the target vocabulary: padding, "[UNK]", then `TARGET_SPECIALS` ("<s>", "</s>"), then
  words by frequency (`training.data.vocab.Vocabulary`);
- word tokenization of text in and out, in core TF ops (`tokenize`, `detokenize`: the same
  functions in the training pipeline and in the SavedModel);
- loss and metrics: token cross-entropy and accuracy with padding masked out (teacher
  forcing), and corpus sacreBLEU of the decoded, detokenized text with the preset's beam and
  greedily (`bleu`, one or several references per input);
- the export base `SequenceGeneratorExport`: greedy / beam search through
  `zoo.layers.decoding` with the request's `beam_size` and `max_length` clamped, an empty
  batch answered, and ids turned back into words and text. Its subclass declares the
  signatures (raw input in, text out) and reads its raw inputs.
- decoding hygiene, the same in every signature: the vocabulary's "[UNK]" is never
  emitted (unless the config's `allow_unk`), `no_repeat_ngram_size` and the beam's length
  normalisation `length_penalty` (Wu et al. 2016's alpha) come from the config, defaulting
  to the export class's `decoding_defaults` (each family's, measured on val); the
  `*_with_options` signatures take both per request (`NO_REPEAT_NGRAM_SIZE`,
  `LENGTH_PENALTY`).

The model implements `zoo.layers.decoding.SequenceDecoder` (`initial_state`,
`attention_size`, `step`, `bos_id`, `eos_id`, `target_vocab_size`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import tensorflow as tf

from training.data.parallel_text import detokenize, tokenize
from training.data.vocab import UNK, Vocabulary, extend_tokens
from training.export_module import ExportModule
from training.recipe import Data, Recipe
from training.tasks.sequence_objective import compile_sequence_model
from zoo.layers import decoding

__all__ = [
    "BEAM_SIZE",
    "BOS",
    "EOS",
    "LENGTH_PENALTY",
    "MAX_BEAM",
    "MAX_LENGTH",
    "NO_REPEAT_NGRAM_SIZE",
    "TARGET_SPECIALS",
    "GenerationData",
    "SequenceGenerationRecipe",
    "SequenceGeneratorExport",
    "Vocabulary",
    "bleu",
    "decode_texts",
    "detokenize",
    "tokenize",
]

BOS, EOS = "<s>", "</s>"
#: reserved target tokens, right after padding and "[UNK]" (ids 2 and 3)
TARGET_SPECIALS = (BOS, EOS)
#: the largest beam a request may ask for
MAX_BEAM = 16

#: the decoding knobs of the signatures that take them: <= 0 means the export's default
BEAM_SIZE = tf.TensorSpec([], tf.int32, name="beam_size")
MAX_LENGTH = tf.TensorSpec([], tf.int32, name="max_length")
#: the hygiene knobs of the `*_with_options` signatures: < 0 means the export's default;
#: a size of 0 turns the n-gram ban off, a penalty of 0 turns length normalisation off
NO_REPEAT_NGRAM_SIZE = tf.TensorSpec([], tf.int32, name="no_repeat_ngram_size")
LENGTH_PENALTY = tf.TensorSpec([], tf.float32, name="length_penalty")
#: the largest length penalty a request may ask for (((5 + 256) / 6) ** 10 is ~4e16)
MAX_LENGTH_PENALTY = 10.0


# ---------------------------------------------------------------------------- data


@dataclass
class GenerationData(Data):
    """`Data` plus raw evaluation inputs and their reference texts, for BLEU.

    Attributes:
        eval_sources: raw inputs as the export's `texts` takes them (source sentences;
            image paths or bytes).
        eval_references: one reference text per input, or a list of them per input (the
            same number for every input).
    """

    eval_sources: list = field(default_factory=list)
    eval_references: list = field(default_factory=list)


# ---------------------------------------------------------------------------- metrics


def bleu(hypotheses: list[str], references: list) -> float:
    """Corpus sacreBLEU of detokenized hypotheses against one reference string per
    hypothesis, or a list of references per hypothesis (as many for each)."""
    import sacrebleu

    if references and not isinstance(references[0], str):
        counts = {len(r) for r in references}
        if len(counts) != 1:
            raise ValueError(f"every hypothesis needs as many references; got {sorted(counts)}")
        streams = [list(stream) for stream in zip(*references, strict=True)]
    else:
        streams = [list(references)]
    return float(sacrebleu.corpus_bleu(hypotheses, streams).score)


def decode_texts(
    module: SequenceGeneratorExport,
    sources: list,
    beam_size: int = 0,
    batch_size: int = 64,
    *,
    no_repeat_ngram_size: int = -1,
    length_penalty: float = -1.0,
) -> list[str]:
    """The texts `module` generates for many raw inputs, in batches (0 = default beam;
    a negative `no_repeat_ngram_size` / `length_penalty` = the export's default)."""
    out: list[str] = []
    for start in range(0, len(sources), batch_size):
        batch = sources[start : start + batch_size]
        out.extend(module.texts(batch, beam_size, no_repeat_ngram_size, length_penalty))
    return out


# ---------------------------------------------------------------------------- export


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
            length normalisation alpha, Wu et al. 2016), `no_repeat_ngram_size` (0: off)
            and `allow_unk` (True lets the decoder emit "[UNK]"; by default it never does).
    """

    #: `no_repeat_ngram_size` and `length_penalty` of a config that names none (off here;
    #: the families set the ones they measured on val, `benchmarks/decoding_defaults.py`)
    decoding_defaults: dict = {"no_repeat_ngram_size": 0, "length_penalty": 0.0}

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

    def auto_length(self, inputs) -> tf.Tensor:
        """The length limit of a request that gives none (max_length <= 0)."""
        return tf.constant(self.max_decode_length)

    def decode(self, inputs, beam_size, max_length, no_repeat_ngram_size=None, length_penalty=None):
        """Greedy (beam 1) or beam search on model inputs; (ids, attention, scores).

        `beam_size` <= 0 means the default beam, larger ones are clamped to `MAX_BEAM`;
        `max_length` <= 0 means `auto_length(inputs)`; both are capped by
        `max_decode_length`. `no_repeat_ngram_size` and `length_penalty` (scalar tensors)
        < 0 or None mean the export's; the penalty is capped at `MAX_LENGTH_PENALTY`.
        Works eagerly and traced (a `tf.cond` on the beam size).
        """
        if no_repeat_ngram_size is None:
            no_repeat_ngram_size = self.no_repeat_ngram_size  # a constant: off costs nothing
        else:
            no_repeat_ngram_size = tf.convert_to_tensor(no_repeat_ngram_size, tf.int32)
            no_repeat_ngram_size = tf.where(
                no_repeat_ngram_size < 0, self.no_repeat_ngram_size, no_repeat_ngram_size
            )
        if length_penalty is None:
            length_penalty = self.length_penalty
        else:
            length_penalty = tf.convert_to_tensor(length_penalty, tf.float32)
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
        ids, attention, scores = tf.cond(
            tf.equal(beam_size, 1),
            lambda: decoding.greedy_decode(self.model, inputs, max_length, **hygiene),
            lambda: decoding.beam_search(
                self.model, inputs, beam_size, max_length, length_penalty, **hygiene
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


# ---------------------------------------------------------------------------- recipe


class SequenceGenerationRecipe(Recipe):
    """Teacher-forced training of an encoder-decoder generator, BLEU of its decoded output.

    Subclasses implement `load_data` (returning `GenerationData` with the target
    vocabulary as `assets["target_vocab"]`) and `export` (their `SequenceGeneratorExport`).
    Config keys used here: `learning_rate`, `clipnorm`.
    """

    #: The vocabularies in `assets` that fine-tuning extends, and the model's layers that
    #: grow with them (embeddings and the output projection).
    vocabularies: tuple[str, ...] = ("target_vocab",)
    vocabulary_layers: tuple[str, ...] = ()

    def extend_assets(self, parent_assets: dict, data_assets: dict, config: dict) -> dict:
        """The parent's vocabularies keep every id; the new data's words are appended."""
        extended = {k: extend_tokens(parent_assets[k], data_assets[k]) for k in self.vocabularies}
        return {**data_assets, **extended}

    def grown_layers(self, model) -> list[str]:
        return list(self.vocabulary_layers)

    def model_config(self, config: dict, assets: dict) -> dict:
        """The target vocabulary size is the trained vocabulary's."""
        return {**config, "target_vocab_size": len(assets["target_vocab"])}

    def compile(self, model, config: dict, data: Data | None, *, jit_compile: bool | str) -> None:
        # Batches have varying lengths (bucketing): XLA would recompile for every shape.
        steps = data.batches_per_epoch() if data is not None else None
        compile_sequence_model(model, config, steps, jit_compile=False)

    def evaluate(self, model, config: dict, data: Data) -> dict[str, float]:
        """Token loss / accuracy on val (`val_loss`, `val_accuracy`), and sacreBLEU of the
        generated text with the preset's beam (`bleu`) and greedily (`bleu_greedy`)."""
        results: dict[str, float] = {}
        split = data.test if data.test is not None else data.val
        if split is not None:
            values = model.evaluate(split, return_dict=True, verbose=0)
            results.update({f"val_{k}": float(v) for k, v in values.items()})
        sources = getattr(data, "eval_sources", [])
        references = getattr(data, "eval_references", [])
        if sources:
            module = self.export(model, config, data.assets)
            results["bleu"] = bleu(decode_texts(module, sources, beam_size=0), references)
            if int(config.get("beam_size", 1)) <= 1:  # the preset decodes greedily already
                results["bleu_greedy"] = results["bleu"]
            else:
                results["bleu_greedy"] = bleu(
                    decode_texts(module, sources, beam_size=1), references
                )
        return results
