"""Training recipe of the seq2seq translator: parallel text, loss, BLEU and the export.

Export signatures (core TensorFlow ops only; decoding is a `tf.while_loop` in the graph):

- `serving_default`: `source` string [N] -> `translation` string [N], with the preset's
  beam size and an automatic length limit. TF signatures have no optional inputs, so the
  knobs live in the next two signatures instead.
- `translate`: `source` string [N], `beam_size` int32 [], `max_length` int32 [] ->
  `translation` string [N], `scores` float32 [N] (summed log-probabilities).
  `beam_size` <= 0 means the preset's beam size, 1 means greedy, larger values are clamped
  to 16; `max_length` <= 0 means 2 * source tokens + 10; both lengths are capped by the
  preset's `max_decode_length`.
- `translate_with_attention`: same inputs -> `translation`, `scores`, `source_tokens`
  string [N, S] (the normalized source tokens, ending with "</s>"), `target_tokens`
  string [N, T] ("" after "</s>") and `attention` float32 [N, T, S] (rows sum to 1 for
  emitted tokens, 0 after "</s>"), so a client can draw the alignment.
- `translate_ids`: `source_ids` int64 [N, S] (0-padded, ending with the source "</s>" id),
  `beam_size`, `max_length` -> `target_ids` int32 [N, T]; for clients that tokenize alone.

Defined answers for awkward input: an empty (or all-whitespace) source translates to "";
sources longer than `max_source_tokens` are cut; unknown words map to "[UNK]"; an "[UNK]"
in the output is replaced by the source word it attends to most (Luong et al. 2015's
rare-word copy), so names and numbers pass through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from training.data import parallel_text
from training.data.vocab import UNK, UNK_ID, Vocabulary
from training.recipe import Data, Export, Recipe

BOS, EOS = "<s>", "</s>"
SOURCE_SPECIALS = (EOS,)
TARGET_SPECIALS = (BOS, EOS)
MAX_BEAM = 16


@dataclass
class ParallelData(Data):
    """`Data` plus the raw evaluation sentences, for BLEU on detokenized output."""

    eval_sources: list[str] = field(default_factory=list)
    eval_references: list[str] = field(default_factory=list)


def model_config(config: dict, assets: dict) -> dict:
    """The config with the vocabulary sizes of the trained vocabularies."""
    config = dict(config)
    config["source_vocab_size"] = len(assets["source_vocab"])
    config["target_vocab_size"] = len(assets["target_vocab"])
    return config


class Translator(tf.Module):
    """The exported module: tokenization, vocab tables, the Keras model and decoding.

    Its methods run eagerly too: `translate(...)` without tf.function is the Python API.
    """

    def __init__(self, model, config: dict, assets: dict):
        super().__init__(name="seq2seq_translator")
        source_vocab = Vocabulary.from_json(assets["source_vocab"])
        target_vocab = Vocabulary.from_json(assets["target_vocab"])
        if target_vocab.id(BOS) != model.bos_id or target_vocab.id(EOS) != model.eos_id:
            raise ValueError("target vocabulary and model disagree on the <s> / </s> ids")
        # Track the model's tf.Variables, not the Keras objects: the SavedModel's object graph
        # then holds no Keras layers, and loading it never imports Keras.
        self.__dict__["model"] = model
        self.model_variables = [v.value for v in model.variables]
        self.source_table = source_vocab.lookup_table()
        self.target_table = target_vocab.inverse_table()
        self.source_eos_id = source_vocab.id(EOS)
        self.lowercase_source = bool(config["lowercase_source"])
        self.default_beam = int(config["beam_size"])
        self.length_penalty = float(config["length_penalty"])
        self.max_source_tokens = int(config["max_source_tokens"])
        self.max_decode_length = int(config["max_decode_length"])
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

    def decode(self, source_ids, beam_size, max_length):
        """Greedy (beam 1) or beam search on ids; returns (ids, attention, scores)."""
        source_ids = tf.cast(source_ids, tf.int32)
        beam_size = tf.where(beam_size <= 0, self.default_beam, beam_size)
        beam_size = tf.clip_by_value(beam_size, 1, MAX_BEAM)
        auto = 2 * tf.shape(source_ids)[1] + 10
        max_length = tf.where(max_length <= 0, auto, max_length)
        max_length = tf.clip_by_value(max_length, 1, self.max_decode_length)
        from zoo.seq2seq import decoding

        # Keras LSTMs fail on an empty batch: decode one padding row instead, then drop it.
        n = tf.shape(source_ids)[0]
        shape = tf.shape(source_ids)
        source_ids = tf.pad(source_ids, [[0, tf.maximum(0, 1 - shape[0])],
                                         [0, tf.maximum(0, 1 - shape[1])]])  # fmt: skip
        ids, attention, scores = tf.cond(
            tf.equal(beam_size, 1),
            lambda: decoding.greedy_decode(self.model, source_ids, max_length),
            lambda: decoding.beam_search(
                self.model, source_ids, beam_size, max_length, self.length_penalty
            ),
        )
        return ids[:n], attention[:n], scores[:n]

    def translate(self, source, beam_size=0, max_length=0) -> dict[str, tf.Tensor]:
        """Sentences [N] -> dict of translation, scores, tokens and attention."""
        source = tf.convert_to_tensor(source, tf.string)
        beam_size = tf.convert_to_tensor(beam_size, tf.int32)
        max_length = tf.convert_to_tensor(max_length, tf.int32)
        ids, source_tokens, cased = self.encode_source(source)
        target_ids, attention, scores = self.decode(ids, beam_size, max_length)
        target_tokens = self.target_table.lookup(tf.cast(target_ids, tf.int64))
        words = target_tokens
        if self.replace_unk:
            aligned = tf.gather(cased, tf.argmax(attention, axis=-1), batch_dims=1)
            aligned = tf.where(tf.equal(aligned, EOS), UNK, aligned)
            words = tf.where(tf.equal(target_ids, UNK_ID), aligned, words)
        special = (
            tf.equal(target_ids, 0)
            | tf.equal(target_ids, self.model.bos_id)
            | tf.equal(target_ids, self.model.eos_id)
        )
        words = tf.where(special, "", words)
        translation = parallel_text.detokenize(words)
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

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="source")])
    def serve_default(self, source):
        return {"translation": self.translate(source)["translation"]}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="source"),
            tf.TensorSpec([], tf.int32, name="beam_size"),
            tf.TensorSpec([], tf.int32, name="max_length"),
        ]
    )
    def serve_translate(self, source, beam_size, max_length):
        out = self.translate(source, beam_size, max_length)
        return {"translation": out["translation"], "scores": out["scores"]}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="source"),
            tf.TensorSpec([], tf.int32, name="beam_size"),
            tf.TensorSpec([], tf.int32, name="max_length"),
        ]
    )
    def serve_with_attention(self, source, beam_size, max_length):
        out = self.translate(source, beam_size, max_length)
        out.pop("target_ids")
        return out

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.int64, name="source_ids"),
            tf.TensorSpec([], tf.int32, name="beam_size"),
            tf.TensorSpec([], tf.int32, name="max_length"),
        ]
    )
    def serve_ids(self, source_ids, beam_size, max_length):
        target_ids, _, scores = self.decode(source_ids, beam_size, max_length)
        return {"target_ids": target_ids, "scores": scores}

    def signatures(self) -> dict[str, Any]:
        return {
            "serving_default": self.serve_default.get_concrete_function(),
            "translate": self.serve_translate.get_concrete_function(),
            "translate_with_attention": self.serve_with_attention.get_concrete_function(),
            "translate_ids": self.serve_ids.get_concrete_function(),
        }


def translate_batches(
    translator: Translator, sources: list[str], beam_size: int = 0, batch_size: int = 64
) -> list[str]:
    """Translate many sentences with the compiled `translate` signature, in batches."""
    out: list[str] = []
    for start in range(0, len(sources), batch_size):
        batch = tf.constant(sources[start : start + batch_size], tf.string)
        result = translator.serve_translate(batch, tf.constant(beam_size), tf.constant(0))
        out.extend(s.decode("utf-8") for s in result["translation"].numpy())
    return out


class Seq2SeqRecipe(Recipe):
    """Multi30k (or any line-aligned pair) -> BiLSTM/LSTM attention translator."""

    name = "seq2seq"

    def load_data(
        self,
        config: dict,
        data_dir: str | None,
        global_batch_size: int,
        *,
        training: bool = True,
        assets: dict | None = None,
    ) -> ParallelData:
        """Multi30k-style `<split>.<lang>` files; vocabularies from train unless `assets`."""
        if data_dir is None:
            raise ValueError(
                "seq2seq reads local parallel text: pass --data-dir with "
                "train.<src>/train.<tgt> (and val.*) files, e.g. ../shared/data/multi30k"
            )
        src_lang, tgt_lang = config["source_lang"], config["target_lang"]
        src_tok: list[list[str]] = []
        tgt_tok: list[list[str]] = []
        if training or assets is None:
            train_paths = parallel_text.find_split(data_dir, "train", src_lang, tgt_lang)
            if train_paths is None:
                raise FileNotFoundError(
                    f"no train.{src_lang} / train.{tgt_lang} in {data_dir} or {data_dir}/multi30k"
                )
            train_src, train_tgt = parallel_text.read_parallel(*train_paths, config["train_limit"])
            src_tok = parallel_text.tokenize_py(train_src, config["lowercase_source"])
            tgt_tok = parallel_text.tokenize_py(train_tgt, config["lowercase_target"])
            limit = config["max_train_tokens"]
            keep = [
                i
                for i, (s, t) in enumerate(zip(src_tok, tgt_tok, strict=True))
                if 0 < len(s) <= limit and 0 < len(t) <= limit
            ]
            src_tok = [src_tok[i] for i in keep]
            tgt_tok = [tgt_tok[i] for i in keep]
        if assets is not None:  # an earlier run's vocabularies: ids must stay the same
            src_vocab = Vocabulary.from_json(assets["source_vocab"])
            tgt_vocab = Vocabulary.from_json(assets["target_vocab"])
        else:
            src_vocab = Vocabulary.build(
                src_tok, config["max_source_vocab"], config["min_count"], SOURCE_SPECIALS
            )
            tgt_vocab = Vocabulary.build(
                tgt_tok, config["max_target_vocab"], config["min_count"], TARGET_SPECIALS
            )
        assets = {
            "source_lang": src_lang,
            "target_lang": tgt_lang,
            "source_vocab": src_vocab.to_json(),
            "target_vocab": tgt_vocab.to_json(),
        }
        bos, eos = tgt_vocab.id(BOS), tgt_vocab.id(EOS)
        src_eos = src_vocab.id(EOS)

        def encode(s_tok, t_tok):
            return (
                [src_vocab.ids(s) + [src_eos] for s in s_tok],
                [tgt_vocab.ids(t) for t in t_tok],
            )

        train = None
        if training:
            train = parallel_text.make_dataset(
                *encode(src_tok, tgt_tok), global_batch_size, bos, eos, shuffle=True
            )
        val = None
        eval_sources: list[str] = []
        eval_refs: list[str] = []
        val_paths = parallel_text.find_split(data_dir, "val", src_lang, tgt_lang)
        if val_paths is not None:
            val_src, val_tgt = parallel_text.read_parallel(*val_paths, config["val_limit"])
            v_src = parallel_text.tokenize_py(val_src, config["lowercase_source"])
            v_tgt = parallel_text.tokenize_py(val_tgt, config["lowercase_target"])
            val = parallel_text.make_dataset(
                *encode(v_src, v_tgt), global_batch_size, bos, eos, shuffle=False
            )
            eval_limit = config.get("eval_limit")
            eval_sources = val_src[:eval_limit]
            eval_refs = val_tgt[:eval_limit]
        return ParallelData(
            train=train,
            val=val,
            assets=assets,
            eval_sources=eval_sources,
            eval_references=eval_refs,
        )

    def build_model(self, config: dict, assets: dict):
        from zoo import registry

        return registry.get(self.name).builder(model_config(config, assets))

    def compile(self, model, config: dict, data: Data | None, *, jit_compile: bool | str) -> None:
        # Batches have varying lengths (bucketing): XLA would recompile for every shape.
        model.compile(
            optimizer=keras.optimizers.Adam(
                learning_rate=config["learning_rate"], clipnorm=config["clipnorm"]
            ),
            loss=keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, reduction="mean_with_sample_weight"
            ),
            weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            jit_compile=False,
        )

    def evaluate(self, model, config: dict, data: Data) -> dict[str, float]:
        """Token loss / accuracy on val, and sacreBLEU of the detokenized translations."""
        import sacrebleu

        results: dict[str, float] = {}
        split = data.test if data.test is not None else data.val
        if split is not None:
            values = model.evaluate(split, return_dict=True, verbose=0)
            results.update({f"val_{k}": float(v) for k, v in values.items()})
        sources = getattr(data, "eval_sources", [])
        refs = getattr(data, "eval_references", [])
        if sources:
            translator = Translator(model, config, data.assets)
            hyps = translate_batches(translator, sources, beam_size=0)
            results["bleu"] = float(sacrebleu.corpus_bleu(hyps, [refs]).score)
            greedy = translate_batches(translator, sources, beam_size=1)
            results["bleu_greedy"] = float(sacrebleu.corpus_bleu(greedy, [refs]).score)
        return results

    def export(self, model, config: dict, assets: dict) -> Export:
        translator = Translator(model, config, assets)
        example = np.array(["A man is riding a bicycle down the street."], dtype=object)
        return Export(
            module=translator,
            signatures=translator.signatures(),
            warmup=[
                ("serving_default", {"source": example}),
                (
                    "translate",
                    {"source": example, "beam_size": np.int32(0), "max_length": np.int32(0)},
                ),
            ],
            extra_assets={
                "source_vocab.txt": "\n".join(assets["source_vocab"]) + "\n",
                "target_vocab.txt": "\n".join(assets["target_vocab"]) + "\n",
            },
        )


RECIPE = Seq2SeqRecipe()
