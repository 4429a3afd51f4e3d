"""Training recipe of the BiLSTM tagger: CoNLL-U data, masked loss, UPOS accuracy, export.

The same in-graph featurizer (normalization, vocabulary lookups, characters of words) feeds
training (in tf.data) and the exported signatures, so the served model sees exactly what
the trained one saw. `evaluate` scores the exported module itself: on gold words, and on
the raw `# text` of each sentence, aligning predicted tokens with gold words by their
character spans.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from training.data.bucketing import bucket_batch_count
from training.data.conllu import Sentence, read_conllu
from training.data.ud_tokenize import token_spans, tokenize_graph
from training.data.vocab import UNK_ID, Vocabulary, extend_tokens
from training.export_module import ExportModule, signature
from training.recipe import Data, Recipe
from training.schedules import learning_rate_schedule

_BUCKETS = [8, 16, 24, 32, 48, 64, 96]


def find_split(data_dir: str, split: str) -> str | None:
    """The `.conllu` file of a split (`train`, `dev`, `test`) in a folder, or None."""
    if os.path.isfile(data_dir):
        return data_dir if split == "train" else None
    matches = sorted(glob.glob(os.path.join(data_dir, f"*{split}*.conllu")))
    if len(matches) > 1:
        raise ValueError(f"several {split} files in {data_dir}: {matches}")
    return matches[0] if matches else None


def load_tfds_sentences(split: str) -> list[Sentence]:
    """UD English EWT from TFDS (`universal_dependencies/en_ewt`); needs the internet."""
    import tensorflow_datasets as tfds

    sentences = []
    for example in tfds.as_numpy(tfds.load("universal_dependencies/en_ewt", split=split)):
        words = [w.decode() for w in example["tokens"]]
        sentences.append(
            Sentence(
                words=words,
                upos=[t.decode() for t in example["upos"]],
                xpos=[t.decode() for t in example["xpos"]],
                text=example["text"].decode(),
                tokens=list(words),
                token_words=[(i, i + 1) for i in range(len(words))],
            )
        )
    return sentences


class Featurizer(tf.Module):
    """Tokens [N, T] ("" = padding) -> model inputs, with core TF ops and lookup tables.

    Word forms are lowercased and their digits replaced by 0 before the word lookup; the
    characters keep their case. Words longer than `max_word_length` characters keep their
    first half and last half of that many characters (prefixes and suffixes matter most).
    """

    def __init__(self, words: Vocabulary, chars: Vocabulary, max_word_length: int):
        super().__init__()
        self.word_table = words.lookup_table()
        self.char_table = chars.lookup_table()
        self.max_word_length = int(max_word_length)

    @staticmethod
    def normalize(tokens: tf.Tensor) -> tf.Tensor:
        """The word-vocabulary form of tokens: lowercase, digits as 0."""
        lowered = tf.strings.lower(tokens, encoding="utf-8")
        return tf.strings.regex_replace(lowered, "[0-9]", "0")

    def word_ids(self, tokens: tf.Tensor) -> tf.Tensor:
        """Word ids [N, T] int32 (0 for "", the [UNK] id for unknown words)."""
        return tf.cast(self.word_table.lookup(self.normalize(tokens)), tf.int32)

    def char_ids(self, tokens: tf.Tensor) -> tf.Tensor:
        """Character ids [N, T, max_word_length] int32, 0-padded."""
        size = self.max_word_length
        head = size // 2
        flat = tf.reshape(tokens, [-1])
        chars = tf.strings.unicode_split(flat, "UTF-8", errors="replace")
        starts, lengths = chars.row_starts(), chars.row_lengths()
        head_idx = tf.ragged.range(starts, starts + tf.minimum(lengths, head))
        tail_from = tf.maximum(tf.cast(head, tf.int64), lengths - (size - head))
        tail_idx = tf.ragged.range(starts + tail_from, starts + lengths)
        kept = tf.gather(chars.values, tf.concat([head_idx, tail_idx], axis=1))
        ids = tf.ragged.map_flat_values(self.char_table.lookup, kept)
        dense = ids.to_tensor(default_value=0, shape=[None, size])
        shape = tf.concat([tf.shape(tokens, out_type=tf.int64), [size]], axis=0)
        return tf.cast(tf.reshape(dense, shape), tf.int32)

    def features(self, tokens: tf.Tensor) -> dict[str, tf.Tensor]:
        """Model inputs for tokens [N, T]."""
        return {"words": self.word_ids(tokens), "chars": self.char_ids(tokens)}


def build_vocabularies(sentences: list[Sentence], config: dict) -> dict[str, Any]:
    """Word, character and tag vocabularies of the training sentences (the run's assets)."""
    words = [w for s in sentences for w in s.words]
    normalized = [t.decode() for t in Featurizer.normalize(tf.constant(words)).numpy()]
    word_vocab = Vocabulary.build(
        [normalized],
        max_size=int(config["word_vocab_max"]),
        min_count=int(config["word_min_count"]),
    )
    char_vocab = Vocabulary.build([list(w) for w in words], min_count=int(config["char_min_count"]))
    tags = sorted({t for s in sentences for t in s.tags(config["tagset"])})
    return {
        "words": word_vocab.to_json(),
        "chars": char_vocab.to_json(),
        "tags": tags,
        "tagset": config["tagset"],
        "max_word_length": int(config["max_word_length"]),
    }


_ASSET_KEYS = ("words", "chars", "tags", "tagset", "max_word_length")


def check_assets(assets: dict, config: dict) -> None:
    """Raise a clear error when saved assets do not fit this tagger config."""
    missing = [k for k in _ASSET_KEYS if k not in assets]
    if missing:
        raise ValueError(f"tagger assets lack {missing} (not a tagger run's assets?)")
    if assets["tagset"] != config["tagset"]:
        raise ValueError(
            f"the assets were built for tagset {assets['tagset']!r}, "
            f"the config asks for {config['tagset']!r}"
        )


def count_batches(sentences: list[Sentence], batch_size: int) -> int:
    """Batches per epoch of `make_dataset`."""
    return bucket_batch_count((len(s.words) for s in sentences), _BUCKETS, batch_size)


def featurizer_from_assets(assets: dict) -> Featurizer:
    """The featurizer of a run from its saved assets."""
    return Featurizer(
        Vocabulary.from_json(assets["words"]),
        Vocabulary.from_json(assets["chars"]),
        int(assets["max_word_length"]),
    )


def make_dataset(
    sentences: list[Sentence],
    assets: dict,
    featurizer: Featurizer,
    batch_size: int,
    *,
    training: bool,
    word_dropout: float = 0.0,
    seed: int = 0,
) -> tf.data.Dataset:
    """Batched ((words, chars), tag ids, weights) with length bucketing; unknown tags -> 0."""
    tag_index = {t: i for i, t in enumerate(assets["tags"])}
    tokens = tf.ragged.constant([s.words for s in sentences], dtype=tf.string)
    tags = tf.ragged.constant(
        [[tag_index.get(t, 0) for t in s.tags(assets["tagset"])] for s in sentences],
        dtype=tf.int32,
    )
    splits = tokens.row_splits
    ds = tf.data.Dataset.range(len(sentences)).map(
        lambda i: (
            tokens.values[splits[i] : splits[i + 1]],
            tags.values[splits[i] : splits[i + 1]],
        )
    )
    if training:
        ds = ds.shuffle(len(sentences), seed=seed, reshuffle_each_iteration=True)
    ds = ds.bucket_by_sequence_length(
        lambda tok, tag: tf.shape(tok)[0],
        bucket_boundaries=_BUCKETS,
        bucket_batch_sizes=[batch_size] * (len(_BUCKETS) + 1),
        padding_values=("", 0),
        drop_remainder=False,
    )

    def featurize(tok, tag):
        features = featurizer.features(tok)
        if training and word_dropout > 0:
            drop = tf.random.uniform(tf.shape(tok)) < word_dropout
            words = features["words"]
            features["words"] = tf.where(drop & (words > 0), tf.constant(UNK_ID, tf.int32), words)
        weights = tf.cast(tf.not_equal(tok, ""), tf.float32)
        return features, tag, weights

    return ds.map(featurize, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


@dataclass
class TaggerData(Data):
    """`Data` plus the evaluation sentences (for raw-text scoring)."""

    eval_sentences: list[Sentence] = field(default_factory=list)


class TaggerModule(ExportModule):
    """The exported tagger: raw sentences or tokens in, tag strings out (core TF ops).

    Signatures:
        serving_default  sentences [N] string -> tokens [N, T], tags [N, T] (padded with "")
                         and lengths [N] int32.
        tag_tokens       tokens [N, T] string ("" = padding) -> tags [N, T] ("" at padding).
    """

    def __init__(self, model: keras.Model, assets: dict):
        super().__init__("tagger", model=model)
        self.featurizer = featurizer_from_assets(assets)
        tags = list(assets["tags"])
        self.tags_text = "".join(f"{tag}\n" for tag in tags)
        self.tag_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.range(len(tags), dtype=tf.int64), tf.constant(tags, tf.string)
            ),
            default_value="",
        )

    def _tag(self, tokens: tf.Tensor) -> tf.Tensor:
        tokens = tf.convert_to_tensor(tokens, tf.string)
        # a zero-length batch or sentence still runs the model on one padded column
        n, t = tf.shape(tokens)[0], tf.shape(tokens)[1]
        padded = tf.pad(tokens, [[0, tf.maximum(1 - n, 0)], [0, tf.maximum(1 - t, 0)]])
        probs = self.model(self.featurizer.features(padded), training=False)
        ids = tf.argmax(probs, axis=-1, output_type=tf.int64)[:n, :t]
        tags = self.tag_table.lookup(ids)
        return tf.where(tf.equal(tokens, ""), tf.constant("", tf.string), tags)

    @signature(tf.TensorSpec([None], tf.string, name="sentences"))
    def serving_default(self, sentences):
        """Raw sentences [N] -> tokens [N, T], tags [N, T] (padded with "") and lengths [N]."""
        ragged = tokenize_graph(sentences)
        tokens = ragged.to_tensor(default_value="")
        return {
            "tokens": tokens,
            "tags": self._tag(tokens),
            "lengths": tf.cast(ragged.row_lengths(), tf.int32),
        }

    @signature(tf.TensorSpec([None, None], tf.string, name="tokens"))
    def tag_tokens(self, tokens):
        """Pre-tokenized words [N, T] ("" = padding) -> tags [N, T] ("" at padding)."""
        return {"tags": self._tag(tokens)}

    def warmup(self):
        return [
            ("serving_default", {"sentences": np.array([b"She sells seashells."], dtype=object)}),
            ("tag_tokens", {"tokens": np.array([[b"She", b"sells", b"seashells"]], dtype=object)}),
        ]

    def request_costs(self):
        # measured: 64 sentences of 256 one-letter words (32 KB padded) took 292 MB, of 1,024
        # words 1.1 GB: about 8.6 KB a padded byte, so a byte weighs 8 (a token 16)
        return {
            "serving_default": {"inputs": {"sentences": {"kind": "text", "weight": 8}}},
            "tag_tokens": {"inputs": {"tokens": {"kind": "tokens", "weight": 16}}},
        }

    def extra_assets(self) -> dict[str, str]:
        return {"tags.txt": self.tags_text}


def _decode(rows: np.ndarray, lengths) -> list[list[str]]:
    return [[v.decode() for v in row[:n]] for row, n in zip(rows, lengths, strict=True)]


def score(module: TaggerModule, sentences: list[Sentence], tagset: str, batch_size: int = 64):
    """Tag accuracy on gold words and on raw text (span-aligned), via the export module.

    Raw-text accuracy: gold words whose character span is exactly a predicted token's span
    and whose tag matches, over all gold words; precision divides by predicted tokens.
    """
    gold_correct = gold_total = raw_correct = raw_predicted = 0
    for start in range(0, len(sentences), batch_size):
        batch = sentences[start : start + batch_size]
        width = max(len(s.words) for s in batch)
        tokens = np.array([s.words + [""] * (width - len(s.words)) for s in batch], dtype=object)
        tags = _decode(
            module.tag_tokens(tf.constant(tokens))["tags"].numpy(), [len(s.words) for s in batch]
        )
        out = module.serving_default(tf.constant([s.text for s in batch]))
        lengths = out["lengths"].numpy()
        raw_tokens, raw_tags = (
            _decode(out["tokens"].numpy(), lengths),
            _decode(out["tags"].numpy(), lengths),
        )
        for s, predicted, toks, ttags in zip(batch, tags, raw_tokens, raw_tags, strict=True):
            gold = s.tags(tagset)
            gold_correct += sum(p == g for p, g in zip(predicted, gold, strict=True))
            gold_total += len(gold)
            by_span = dict(zip(token_spans(s.text, toks), ttags, strict=True))
            raw_correct += sum(
                by_span.get(span) == g for span, g in zip(s.word_spans(), gold, strict=True)
            )
            raw_predicted += len(toks)
    raw_recall = raw_correct / max(gold_total, 1)
    raw_precision = raw_correct / max(raw_predicted, 1)
    return {
        f"{tagset}_accuracy": gold_correct / max(gold_total, 1),
        f"{tagset}_accuracy_raw_text": raw_recall,
        f"{tagset}_f1_raw_text": 2
        * raw_recall
        * raw_precision
        / max(raw_recall + raw_precision, 1e-9),
        "eval_words": gold_total,
        "eval_sentences": len(sentences),
    }


class TaggerRecipe(Recipe):
    """CoNLL-U in, per-word tags out."""

    name = "tagger"

    def load_data(
        self, config, data_dir, global_batch_size, *, training=True, assets=None, load_source=None
    ) -> TaggerData:
        """EWT (or any CoNLL-U train/dev files) as bucketed batches.

        With `assets` (resume, evaluate) the run's vocabularies and tag list are reused as
        saved; without them they are built from the training sentences. With
        `training=False` only the evaluation sentences are read (dev, else test, else the
        given file), so `zoo evaluate` needs no training file.
        """
        if config["tagset"] not in ("upos", "xpos"):
            raise ValueError(f"tagset must be 'upos' or 'xpos', not {config['tagset']!r}")
        if assets is not None:
            check_assets(assets, config)
        if not training and assets is None:
            raise ValueError("evaluation (training=False) needs the run's assets")
        train, dev = self._sentences(config, data_dir, training)
        assets = assets if assets is not None else build_vocabularies(train, config)
        featurizer = featurizer_from_assets(assets)
        train_ds = None
        if training:
            train_ds = make_dataset(
                train,
                assets,
                featurizer,
                global_batch_size,
                training=True,
                word_dropout=float(config["word_dropout"]),
            )
        val_ds = (
            make_dataset(dev, assets, featurizer, global_batch_size, training=False)
            if dev
            else None
        )
        return TaggerData(
            train=train_ds,
            val=val_ds,
            examples_per_step=global_batch_size,
            assets=assets,
            eval_sentences=dev,
            train_batches=count_batches(train, global_batch_size) if training else None,
        )

    @staticmethod
    def _sentences(
        config: dict, data_dir: str | None, training: bool
    ) -> tuple[list[Sentence], list[Sentence]]:
        """(train, evaluation) sentences; train is empty when not training."""
        limit = int(config["train_limit"]) if config.get("train_limit") else None
        dev_limit = max(limit // 4, 1) if limit else None
        if data_dir is None:
            train = load_tfds_sentences("train") if training else []
            dev = load_tfds_sentences("validation")
        elif training:
            train_file, dev_file = find_split(data_dir, "train"), find_split(data_dir, "dev")
            if train_file is None:
                raise FileNotFoundError(f"no *train*.conllu file in {data_dir}")
            train = read_conllu(train_file, limit=limit)
            dev = read_conllu(dev_file, limit=dev_limit) if dev_file else []
        else:
            train = []
            eval_file = (
                data_dir
                if os.path.isfile(data_dir)
                else find_split(data_dir, "dev") or find_split(data_dir, "test")
            )
            if eval_file is None:
                raise FileNotFoundError(f"no *dev*.conllu or *test*.conllu file in {data_dir}")
            dev = read_conllu(eval_file, limit=dev_limit)
        if limit:  # TFDS splits are read whole
            train, dev = train[:limit], dev[:dev_limit]
        if training and not train:
            raise ValueError(f"no training sentences found in {data_dir}")
        if not training and not dev:
            raise ValueError(f"no evaluation sentences found in {data_dir}")
        return train, dev

    def model_config(self, config, assets):
        """Vocabulary sizes, tag count and word length of the run's vocabularies."""
        if not assets:
            return config
        return {
            **config,
            "word_vocab_size": len(assets["words"]),
            "char_vocab_size": len(assets["chars"]),
            "num_tags": len(assets["tags"]),
            "max_word_length": int(assets["max_word_length"]),
        }

    def extend_assets(self, parent_assets, data_assets, config):
        """The parent's words and characters keep their ids and the new data's are appended;
        the tags too when the tag set is the same (another tag set is a new head)."""
        tags = data_assets["tags"]
        if parent_assets["tagset"] == data_assets["tagset"]:
            tags = extend_tokens(parent_assets["tags"], tags)
        return {
            **data_assets,
            "words": extend_tokens(parent_assets["words"], data_assets["words"]),
            "chars": extend_tokens(parent_assets["chars"], data_assets["chars"]),
            "tags": tags,
        }

    def reinitialized_layers(self, model, config, parent_config, assets, parent_assets):
        """The tag head, when fine-tuning to another tag set (e.g. UPOS -> XPOS)."""
        return ["tags"] if config["tagset"] != parent_config["tagset"] else []

    def grown_layers(self, model) -> list[str]:
        """The word and character embeddings (new words), and the head (new tags)."""
        return ["word_embedding", "char_cnn", "tags"]

    def compile(self, model, config, data, *, jit_compile) -> None:
        # XLA would recompile for every new batch shape (sentence lengths vary)
        model.compile(
            optimizer=keras.optimizers.Adam(
                learning_rate_schedule(config, data.batches_per_epoch() if data else None),
                clipnorm=5.0,
            ),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            jit_compile=jit_compile is True,
        )

    def evaluate(self, model, config, data) -> dict[str, float]:
        sentences = getattr(data, "eval_sentences", None)
        if not sentences:
            return super().evaluate(model, config, data)
        return score(TaggerModule(model, data.assets), sentences, config["tagset"])

    def export(self, model, config, assets) -> TaggerModule:
        return TaggerModule(model, assets)


RECIPE = TaggerRecipe()
