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

The signatures are `training.exports.seq2seq.Translator`'s (TensorFlow, imported by
`export`); this module imports no TensorFlow, so `zoo prepare seq2seq` and `zoo train
seq2seq --data` run on any Keras backend.

Prepared arrays (`zoo prepare seq2seq`, `prepare`): per split ("train", and "val" when the
data has one) the pairs `load_data` keeps, as ids of the same vocabularies (tokenized by
`training.data.parallel_corpus.tokenize_text`, the SavedModel's tokens in pure Python):

    source          int32 [n, S]  source ids ending with the source "</s>", 0-padded to
                                  the split's longest
    source_lengths  int32 [n]     ids in each row of `source` ("</s>" included)
    target          int32 [n, T]  target word ids (no "<s>" / "</s>"), 0-padded
    target_lengths  int32 [n]     ids in each row of `target`

`array_data` batches them as `parallel_text.make_dataset` does: bucketed by the longer of
source and "<s>"-led target (`parallel_corpus.BUCKETS`), ({"source_ids", "target_in"},
target_out, weights) with "<s>" / "</s>" added. Each batch is padded to its bucket's width
(`array_datasets.bucket_widths`, not to its own longest) and a bucket's last, short batch is
filled up to the batch size with copies of its first pair at weight 0: the loss and its
gradients are those of the batch itself, and a compiled step sees one shape per bucket.
(Keras' epoch means count such a batch as a full one.) The BLEU evaluation's sentences are
not stored: `zoo evaluate RUN --data-dir D` reads them, and decodes through the export.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from training.array_datasets import BucketedBatches
from training.data import parallel_corpus
from training.data.vocab import Vocabulary
from training.tasks.sequence_generation import (
    BOS,
    EOS,
    TARGET_SPECIALS,
    GenerationData,
    SequenceGenerationRecipe,
    fit_width,
    padded_ids,
    teacher_forcing,
)

if TYPE_CHECKING:
    from training.exports.seq2seq import Translator
    from training.prepared import Prepared, ShardedArray

SOURCE_SPECIALS = (EOS,)

#: sentences -> their tokens (TensorFlow's `parallel_text.tokenize_py`, or
#: `parallel_corpus.tokenize_texts`: the same tokens in pure Python)
Tokenizer = Callable[[Sequence[str], bool], list[list[str]]]
Pairs = tuple[list[list[int]], list[list[int]]]


@dataclass
class Corpus:
    """The pairs the recipe trains and validates on, as ids: (source ids ending with the
    source "</s>", target ids), the assets (both vocabularies), and the raw validation
    sentences and references BLEU decodes."""

    assets: dict
    train: Pairs | None
    val: Pairs | None
    eval_sources: list[str]
    eval_references: list[str]

    @property
    def target_vocab(self) -> Vocabulary:
        return Vocabulary.from_json(self.assets["target_vocab"])


class Seq2SeqRecipe(SequenceGenerationRecipe):
    """Multi30k (or any line-aligned pair) -> BiLSTM/LSTM attention translator."""

    name = "seq2seq"
    intended_use = (
        "Translating short descriptive sentences ({source_lang} -> {target_lang}) like its "
        "training data's image captions, and a starting point for fine-tuning on more parallel "
        "data in the same pair. Not a general-purpose translator."
    )
    vocabularies = ("source_vocab", "target_vocab")
    vocabulary_layers = ("source_embedding", "target_embedding", "logits")

    def corpus(
        self,
        config: dict,
        data_dir: str | None,
        assets: dict | None,
        tokenize: Tokenizer,
        *,
        training: bool = True,
    ) -> Corpus:
        """Multi30k-style `<split>.<lang>` files as ids; vocabularies from train unless
        `assets`. Training pairs with an empty side or a side over `max_train_tokens` are
        left out; validation pairs are kept whole."""
        if data_dir is None:
            raise ValueError(
                "seq2seq reads local parallel text: pass --data-dir with "
                "train.<src>/train.<tgt> (and val.*) files, e.g. ../shared/data/multi30k"
            )
        src_lang, tgt_lang = config["source_lang"], config["target_lang"]
        src_tok: list[list[str]] = []
        tgt_tok: list[list[str]] = []
        if training or assets is None:
            train_paths = parallel_corpus.find_split(data_dir, "train", src_lang, tgt_lang)
            if train_paths is None:
                raise FileNotFoundError(
                    f"no train.{src_lang} / train.{tgt_lang} in {data_dir} or {data_dir}/multi30k"
                )
            train_src, train_tgt = parallel_corpus.read_parallel(
                *train_paths, config["train_limit"]
            )
            src_tok = tokenize(train_src, config["lowercase_source"])
            tgt_tok = tokenize(train_tgt, config["lowercase_target"])
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
        src_eos = src_vocab.id(EOS)

        def encode(s_tok, t_tok) -> Pairs:
            return (
                [src_vocab.ids(s) + [src_eos] for s in s_tok],
                [tgt_vocab.ids(t) for t in t_tok],
            )

        corpus = Corpus(
            assets={
                "source_lang": src_lang,
                "target_lang": tgt_lang,
                "source_vocab": src_vocab.to_json(),
                "target_vocab": tgt_vocab.to_json(),
            },
            train=encode(src_tok, tgt_tok) if training else None,
            val=None,
            eval_sources=[],
            eval_references=[],
        )
        val_paths = parallel_corpus.find_split(data_dir, "val", src_lang, tgt_lang)
        if val_paths is not None:
            val_src, val_tgt = parallel_corpus.read_parallel(*val_paths, config["val_limit"])
            corpus.val = encode(
                tokenize(val_src, config["lowercase_source"]),
                tokenize(val_tgt, config["lowercase_target"]),
            )
            eval_limit = config.get("eval_limit")
            corpus.eval_sources = val_src[:eval_limit]
            corpus.eval_references = val_tgt[:eval_limit]
        return corpus

    def load_data(
        self, config, data_dir, global_batch_size, *, training=True, assets=None, load_source=None
    ) -> GenerationData:
        """Multi30k-style `<split>.<lang>` files (`corpus`, tokenized in TensorFlow) as
        length-bucketed tf.data batches (`parallel_text.make_dataset`)."""
        from training.data import parallel_text

        corpus = self.corpus(config, data_dir, assets, parallel_text.tokenize_py, training=training)
        vocab = corpus.target_vocab
        bos, eos = vocab.id(BOS), vocab.id(EOS)
        train, train_batches = None, None
        if corpus.train is not None:
            train = parallel_text.make_dataset(
                *corpus.train, global_batch_size, bos, eos, shuffle=True
            )
            train_batches = parallel_text.batch_count(*corpus.train, global_batch_size)
        val = None
        if corpus.val is not None:
            val = parallel_text.make_dataset(
                *corpus.val, global_batch_size, bos, eos, shuffle=False
            )
        return GenerationData(
            train=train,
            train_batches=train_batches,
            val=val,
            assets=corpus.assets,
            eval_sources=corpus.eval_sources,
            eval_references=corpus.eval_references,
        )

    def prepare(
        self, config: dict, data_dir: str | None, assets: dict | None = None
    ) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
        """`corpus`'s pairs (tokenized in pure Python) as padded id arrays and lengths
        (see the module's docstring), and the vocabularies."""
        corpus = self.corpus(config, data_dir, assets, parallel_corpus.tokenize_texts)
        splits = {"train": pair_arrays(*corpus.train)}
        if corpus.val is not None:
            splits["val"] = pair_arrays(*corpus.val)
        return splits, corpus.assets

    def array_data(
        self,
        config: dict,
        data: Prepared,
        global_batch_size: int,
        *,
        training: bool = True,
        seed: int | None = 0,
    ) -> GenerationData:
        """`load_data`'s batches over prepared arrays (`pair_batches`): the training pairs
        shuffled into their buckets each epoch (from `seed`), the validation pairs in order."""
        vocab = Vocabulary.from_json(data.assets["target_vocab"])
        bos, eos = vocab.id(BOS), vocab.id(EOS)
        train = None
        if training:
            train = pair_batches(
                data.split("train"), global_batch_size, bos, eos, shuffle=True, seed=seed
            )
        val = None
        if "val" in data.splits:
            val = pair_batches(data.split("val"), global_batch_size, bos, eos, shuffle=False)
        return GenerationData(
            train=train,
            train_batches=len(train) if train is not None else None,
            val=val,
            assets=data.assets,
        )

    def model_config(self, config: dict, assets: dict) -> dict:
        """The vocabulary sizes of the trained vocabularies."""
        config = super().model_config(config, assets)
        return {**config, "source_vocab_size": len(assets["source_vocab"])}

    def export(self, model, config: dict, assets: dict) -> Translator:
        """The `Translator` SavedModel module (`training.exports.seq2seq`, TensorFlow)."""
        from training.exports.seq2seq import Translator

        return Translator(model, config, assets)


def pair_arrays(source_ids: Sequence[Sequence[int]], target_ids) -> dict[str, np.ndarray]:
    """The prepared arrays of a split's pairs: `source`, `source_lengths`, `target`,
    `target_lengths` (see the module's docstring)."""
    if not source_ids:
        raise ValueError("no sentence pairs to prepare")
    source, source_lengths = padded_ids(source_ids)
    target, target_lengths = padded_ids(target_ids)
    return {
        "source": source,
        "source_lengths": source_lengths,
        "target": target,
        "target_lengths": target_lengths,
    }


def pair_batches(
    arrays: dict[str, ShardedArray | np.ndarray],
    batch_size: int,
    bos_id: int,
    eos_id: int,
    *,
    shuffle: bool,
    seed: int | None = 0,
) -> BucketedBatches:
    """Batches of ({"source_ids", "target_in"}, target_out, weights) of `pair_arrays`, as
    `parallel_text.make_dataset` makes them, bucketed by `parallel_corpus.BUCKETS` with one
    shape per bucket (see the module's docstring)."""
    source_lengths = np.asarray(arrays["source_lengths"][:], np.int64)
    target_lengths = np.asarray(arrays["target_lengths"][:], np.int64)
    lengths = np.maximum(source_lengths, target_lengths + 1)

    def make_batch(rows: dict[str, np.ndarray], width: int):
        n = len(rows["source"])
        source = fit_width(rows["source"], width)
        target_in, target_out, weights = teacher_forcing(
            rows["target"], rows["target_lengths"], width, bos_id, eos_id
        )  # every target is shorter than its bucket's `width`
        if n < batch_size:  # copies of the first pair, at weight 0
            fill = np.zeros(batch_size - n, np.int64)
            source, target_in, target_out = (
                np.concatenate([a, a[fill]]) for a in (source, target_in, target_out)
            )
            weights = np.concatenate([weights, np.zeros((len(fill), width), np.float32)])
        return {"source_ids": source, "target_in": target_in}, target_out, weights

    return BucketedBatches(
        arrays,
        lengths,
        parallel_corpus.BUCKETS,
        batch_size,
        make_batch,
        shuffle=shuffle,
        drop_remainder=False,
        seed=seed,
    )


RECIPE = Seq2SeqRecipe()
