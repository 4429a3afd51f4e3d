"""Sequence generation: an encoder-decoder model that writes a sentence for an input (a
sentence to translate, an image to caption), decoded greedily or by beam search.

A family's recipe subclasses `SequenceGenerationRecipe` (data loading, and `export`
returning its `SequenceGeneratorExport` subclass); the rest is here:

- the target vocabulary: padding, "[UNK]", then `TARGET_SPECIALS` ("<s>", "</s>"), then
  words by frequency (`training.data.vocab.Vocabulary`);
- word tokenization of text in and out, in core TF ops (`training.data.parallel_text`'s
  `tokenize`, `detokenize`: the same functions in the training pipeline and in the
  SavedModel; `training.data.parallel_corpus.tokenize_text` is `tokenize` in pure Python);
- loss and metrics: token cross-entropy and accuracy with padding masked out (teacher
  forcing), and corpus sacreBLEU of the decoded, detokenized text with the preset's beam and
  greedily (`bleu`, one or several references per input);
- the export base `SequenceGeneratorExport` (`training.exports.sequence_generation`,
  TensorFlow): greedy / beam search through `zoo.layers.decoding` with the request's
  `beam_size` and `max_length` clamped, an empty batch answered, and ids turned back into
  words and text. Its subclass declares the signatures (raw input in, text out) and reads
  its raw inputs.
- decoding hygiene, the same in every signature: the vocabulary's "[UNK]" is never
  emitted (unless the config's `allow_unk`), `no_repeat_ngram_size` and the beam's length
  normalisation `length_penalty` (Wu et al. 2016's alpha) come from the config, defaulting
  to the export class's `decoding_defaults` (each family's, measured on val); the
  `*_with_options` signatures take both per request (`NO_REPEAT_NGRAM_SIZE`,
  `LENGTH_PENALTY`).

The model implements `zoo.layers.decoding.SequenceDecoder` (`initial_state`,
`attention_size`, `step`, `bos_id`, `eos_id`, `target_vocab_size`).

This module imports no TensorFlow: a recipe built on it compiles, trains on prepared arrays
and evaluates the loss under any Keras backend; the export and BLEU (which decodes through
the export) import it when they run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import keras
import numpy as np

from training.data.vocab import Vocabulary, extend_tokens
from training.recipe import Data, Headline, Recipe
from training.tasks.sequence_objective import compile_sequence_model

__all__ = [
    "BOS",
    "EOS",
    "MAX_BEAM",
    "MAX_LENGTH_PENALTY",
    "TARGET_SPECIALS",
    "GenerationData",
    "SequenceGenerationRecipe",
    "TextGenerator",
    "Vocabulary",
    "bleu",
    "decode_texts",
    "fit_width",
    "padded_ids",
    "teacher_forcing",
]

BOS, EOS = "<s>", "</s>"
#: reserved target tokens, right after padding and "[UNK]" (ids 2 and 3)
TARGET_SPECIALS = (BOS, EOS)
#: the largest beam a request may ask for
MAX_BEAM = 16

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


def padded_ids(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """int32 id rows 0-padded to the longest (at least one column), and their lengths: how
    the prepared arrays store variable-length ids."""
    lengths = np.array([len(r) for r in rows], np.int32)
    out = np.zeros((len(rows), max(int(lengths.max(initial=0)), 1)), np.int32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out, lengths


def fit_width(rows: np.ndarray, width: int) -> np.ndarray:
    """Id rows [n, w] cut or 0-padded to `width` columns."""
    if rows.shape[1] >= width:
        return rows[:, :width]
    return np.pad(rows, ((0, 0), (0, width - rows.shape[1])))


def teacher_forcing(
    target: np.ndarray, lengths: np.ndarray, width: int, bos_id: int, eos_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(target_in, target_out, weights) [n, width] of 0-padded target word ids [n, w]
    (`lengths` each, all below `width`): the decoder reads "<s> y1 .. yn" and predicts
    "y1 .. yn </s>"; padding has weight 0. The tf.data pipelines' layout, in NumPy."""
    target = fit_width(np.asarray(target), width)
    target_in = np.zeros_like(target)
    target_in[:, 0] = bos_id
    target_in[:, 1:] = target[:, :-1]
    target_out = target.copy()
    target_out[np.arange(len(target)), np.asarray(lengths)] = eos_id
    return target_in, target_out, (target_out != 0).astype(np.float32)


class TextGenerator(Protocol):
    """What evaluation decodes with: an export's Python API (`SequenceGeneratorExport`)."""

    def texts(
        self,
        sources: list,
        beam_size: int,
        no_repeat_ngram_size: int = -1,
        length_penalty: float = -1.0,
    ) -> list[str]:
        """Generated texts for a batch of raw inputs."""
        ...


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
    module: TextGenerator,
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


# ---------------------------------------------------------------------------- recipe


class SequenceGenerationRecipe(Recipe):
    """Teacher-forced training of an encoder-decoder generator, BLEU of its decoded output.

    Subclasses implement `load_data` (returning `GenerationData` with the target
    vocabulary as `assets["target_vocab"]`) and `export` (their `SequenceGeneratorExport`).
    Config keys used here: `learning_rate`, `clipnorm`.
    """

    #: The vocabularies in `assets` that fine-tuning extends, and the model's layers that
    #: grow with them (embeddings and the output projection).
    headline = Headline("bleu")
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
        """`compile_sequence_model` with the schedule's steps per epoch. No XLA for tf.data's
        batches, each padded to its own longest sentence (every batch a new shape: XLA would
        recompile for each); prepared arrays come in a bounded set of shapes (`array_data`),
        which XLA compiles once each on any backend but TensorFlow's (its route stays the
        tf.data one's), and without which JAX would run op by op."""
        steps = data.batches_per_epoch() if data is not None else None
        bounded = data is not None and isinstance(data.train, keras.utils.PyDataset)
        if not bounded or keras.backend.backend() == "tensorflow":
            jit_compile = False
        compile_sequence_model(model, config, steps, jit_compile=jit_compile)

    def evaluate_arrays(self, model, config: dict, data: Data) -> dict[str, float]:
        """`evaluate`'s token loss and accuracy on the prepared val arrays (`val_loss`,
        `val_accuracy`); BLEU decodes through the TensorFlow export: `zoo evaluate` on the
        run gives it."""
        split = data.test if data.test is not None else data.val
        if split is None:
            raise ValueError("No test or validation data to evaluate on")
        values = model.evaluate(split, return_dict=True, verbose=0)
        return {f"val_{k}": float(v) for k, v in values.items()}

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
