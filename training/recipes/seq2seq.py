"""Training recipe of the seq2seq translator: parallel text in, the `Translator` export out.

Loss, BLEU evaluation and decoding (greedy / beam search, clamps, empty batches, ids back
to text) are the sequence-generation task's (`training/tasks/sequence_generation.py`).

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
- `translate_with_options`: as `translate`, plus `no_repeat_ngram_size` int32 [] (no n-gram
  of that size repeats; 0 turns it off) and `length_penalty` float32 [] (Wu et al. 2016's
  alpha of the beam's length normalisation; 0 turns it off, at most 10); either < 0 means
  the export's default, which every other signature uses.

Decoding never emits "[UNK]" (unless the config's `allow_unk`): see
`training.tasks.sequence_generation`.

Defined answers for awkward input: an empty (or all-whitespace) source translates to "";
sources longer than `max_source_tokens` are cut; unknown words map to "[UNK]"; an "[UNK]"
in the output is replaced by the source word it attends to most (Luong et al. 2015's
rare-word copy), so names and numbers pass through.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from training.data import parallel_text
from training.data.vocab import UNK, UNK_ID, Vocabulary
from training.export_module import signature
from training.tasks.sequence_generation import (
    BEAM_SIZE,
    BOS,
    EOS,
    LENGTH_PENALTY,
    MAX_LENGTH,
    NO_REPEAT_NGRAM_SIZE,
    TARGET_SPECIALS,
    GenerationData,
    SequenceGenerationRecipe,
    SequenceGeneratorExport,
)
from zoo.seq2seq.presets import DECODING_DEFAULTS

SOURCE_SPECIALS = (EOS,)
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


class Seq2SeqRecipe(SequenceGenerationRecipe):
    """Multi30k (or any line-aligned pair) -> BiLSTM/LSTM attention translator."""

    name = "seq2seq"
    vocabularies = ("source_vocab", "target_vocab")
    vocabulary_layers = ("source_embedding", "target_embedding", "logits")

    def load_data(
        self, config, data_dir, global_batch_size, *, training=True, assets=None, load_source=None
    ) -> GenerationData:
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

        train, train_batches = None, None
        if training:
            ids = encode(src_tok, tgt_tok)
            train = parallel_text.make_dataset(*ids, global_batch_size, bos, eos, shuffle=True)
            train_batches = parallel_text.batch_count(*ids, global_batch_size)
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
        return GenerationData(
            train=train,
            train_batches=train_batches,
            val=val,
            assets=assets,
            eval_sources=eval_sources,
            eval_references=eval_refs,
        )

    def model_config(self, config: dict, assets: dict) -> dict:
        """The vocabulary sizes of the trained vocabularies."""
        config = super().model_config(config, assets)
        return {**config, "source_vocab_size": len(assets["source_vocab"])}

    def export(self, model, config: dict, assets: dict) -> Translator:
        return Translator(model, config, assets)


RECIPE = Seq2SeqRecipe()
