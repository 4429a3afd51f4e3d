"""The tagger's data without TensorFlow: CoNLL-U splits, vocabularies, features as arrays.

Sentences come from CoNLL-U files (`read_splits`; TFDS's `universal_dependencies/en_ewt`
when no folder is given). A run's assets are its word, character and tag vocabularies
(`build_vocabularies`). `TagEncoder` featurizes words exactly as the in-graph featurizer
(`training.data.tagging_graph.Featurizer`, the one the SavedModel carries) does:

    word id     the lowercased form with its ASCII digits as 0, looked up in the word
                vocabulary (0 padding, 1 "[UNK]");
    char ids    the form's characters (case kept), at most `max_word_length` of them: a
                longer word keeps its first half and last half of that many (prefixes and
                suffixes matter most), 0-padded;
    tag id      the index of the tag in the assets' tag list.

Prepared data (`zoo prepare tagger`, `training.prepared`) stores each split as two
"splits" of the folder, so that nothing is padded on disk:

    <split>          one row per sentence: `lengths` [N] int32 (words per sentence);
    <split>_words    one row per word, the sentences' words one after the other:
                     `words` [W] int32, `chars` [W, max_word_length] int32, `tags` [W]
                     int32 (-1 for a tag the vocabulary lacks: a wrong answer in scoring,
                     tag 0 in training as in the tf.data pipeline).

`TaggedBatches` batches them as the tf.data pipeline (`tagging_graph.make_dataset`) does:
length buckets (`BUCKETS`), padding masked by per-word weights, word dropout in training.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from training.array_datasets import BucketedBatches
from training.data.bucketing import bucket_batch_count
from training.data.conllu import Sentence, read_conllu
from training.data.vocab import UNK_ID, Vocabulary

#: length-bucket boundaries of the training and evaluation batches (both routes)
BUCKETS = [8, 16, 24, 32, 48, 64, 96]
#: what a run's assets must hold
ASSET_KEYS = ("words", "chars", "tags", "tagset", "max_word_length")
#: the tag id of a tag the vocabulary lacks, in prepared arrays
UNKNOWN_TAG = -1

_DIGIT = re.compile("[0-9]")


def find_split(data_dir: str, split: str) -> str | None:
    """The `.conllu` file of a split (`train`, `dev`, `test`) in a folder, or None."""
    if os.path.isfile(data_dir):
        return data_dir if split == "train" else None
    matches = sorted(glob.glob(os.path.join(data_dir, f"*{split}*.conllu")))
    if len(matches) > 1:
        raise ValueError(f"several {split} files in {data_dir}: {matches}")
    return matches[0] if matches else None


def load_tfds_sentences(split: str) -> list[Sentence]:
    """UD English EWT from TFDS (`universal_dependencies/en_ewt`); needs the internet and
    TensorFlow (TFDS's)."""
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


def read_splits(
    config: Mapping[str, Any], data_dir: str | None, training: bool
) -> tuple[list[Sentence], list[Sentence]]:
    """(train, evaluation) sentences of `data_dir` (TFDS when None); train is empty when not
    `training`. The config's `train_limit` keeps the first N training sentences and N // 4
    evaluation ones. Evaluation reads dev, else test, else the given file."""
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


def check_tagset(config: Mapping[str, Any]) -> None:
    """Raise a clear error for a tag set other than "upos" and "xpos"."""
    if config["tagset"] not in ("upos", "xpos"):
        raise ValueError(f"tagset must be 'upos' or 'xpos', not {config['tagset']!r}")


def normalize_word(word: str) -> str:
    """The word-vocabulary form of a word: lowercase, ASCII digits as 0 (as the in-graph
    `Featurizer.normalize`: `tf.strings.lower` and `[0-9]` -> 0)."""
    return _DIGIT.sub("0", word.lower())


def kept_chars(word: str, max_word_length: int) -> str:
    """The characters of `word` the character encoder sees: all of them when they fit in
    `max_word_length`, else the first half and the last half of that many."""
    if len(word) <= max_word_length:
        return word
    head = max_word_length // 2
    return word[:head] + word[len(word) - (max_word_length - head) :]


def build_vocabularies(sentences: Sequence[Sentence], config: Mapping[str, Any]) -> dict[str, Any]:
    """Word, character and tag vocabularies of the training sentences (the run's assets)."""
    words = [w for s in sentences for w in s.words]
    word_vocab = Vocabulary.build(
        [[normalize_word(w) for w in words]],
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


def check_assets(assets: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """Raise a clear error when saved assets do not fit this tagger config."""
    missing = [k for k in ASSET_KEYS if k not in assets]
    if missing:
        raise ValueError(f"tagger assets lack {missing} (not a tagger run's assets?)")
    if assets["tagset"] != config["tagset"]:
        raise ValueError(
            f"the assets were built for tagset {assets['tagset']!r}, "
            f"the config asks for {config['tagset']!r}"
        )


def count_batches(sentences: Sequence[Sentence], batch_size: int) -> int:
    """Batches per epoch of the bucketed batches of `sentences` (remainders kept)."""
    return bucket_batch_count((len(s.words) for s in sentences), BUCKETS, batch_size)


class TagEncoder:
    """A run's vocabularies as NumPy featurizing: words -> word ids, character ids; tags ->
    tag ids. The same ids as the in-graph featurizer of the export."""

    def __init__(self, assets: Mapping[str, Any]):
        self.words = Vocabulary.from_json(assets["words"])
        self.chars = Vocabulary.from_json(assets["chars"])
        self.tags = list(assets["tags"])
        self.tagset = str(assets["tagset"])
        self.max_word_length = int(assets["max_word_length"])
        self._tag_index = {t: i for i, t in enumerate(self.tags)}

    def word_ids(self, words: Sequence[str]) -> np.ndarray:
        """Word ids [W] int32 (the "[UNK]" id for unknown words, 0 for "")."""
        return np.asarray(self.words.ids(normalize_word(w) for w in words), np.int32).reshape(-1)

    def char_ids(self, words: Sequence[str]) -> np.ndarray:
        """Character ids [W, max_word_length] int32, 0-padded."""
        out = np.zeros((len(words), self.max_word_length), np.int32)
        for i, word in enumerate(words):
            ids = self.chars.ids(kept_chars(word, self.max_word_length))
            out[i, : len(ids)] = ids
        return out

    def tag_ids(self, tags: Sequence[str]) -> np.ndarray:
        """Tag ids [W] int32; `UNKNOWN_TAG` for tags the vocabulary lacks."""
        index = self._tag_index
        return np.asarray([index.get(t, UNKNOWN_TAG) for t in tags], np.int32).reshape(-1)

    def encode(self, sentences: Sequence[Sentence], name: str) -> dict[str, dict[str, np.ndarray]]:
        """The prepared splits `name` (sentence lengths) and `name`_words (the words' ids,
        characters and tags, sentence after sentence) of `sentences`."""
        words = [w for s in sentences for w in s.words]
        tags = [t for s in sentences for t in s.tags(self.tagset)]
        return {
            name: {"lengths": np.asarray([len(s.words) for s in sentences], np.int32)},
            f"{name}_words": {
                "words": self.word_ids(words),
                "chars": self.char_ids(words),
                "tags": self.tag_ids(tags),
            },
        }


class TaggedBatches(BucketedBatches):
    """Prepared sentences (`TagEncoder.encode`'s two splits) in bucketed batches of
    ({"words": [B, T], "chars": [B, T, max_word_length]}, tags [B, T], weights [B, T]).

    As `tagging_graph.make_dataset`: sentences grouped by length (`BUCKETS`), shuffled each
    epoch when `training`, every sentence once (short batches kept); padding has word,
    character and tag id 0 and weight 0; in training each word is [UNK] with probability
    `word_dropout` (drawn from seed, epoch and batch). A batch is padded to its bucket's
    width (the boundary below, the longest sentence for the last bucket), and a bucket's
    short last batch to `batch_size` rows of padding (weight 0: the masked loss and the
    weighted metrics are those of the short batch), so that a compiled step sees at most
    len(BUCKETS) + 1 shapes (JAX compiles once per shape) and every batch splits evenly
    over data-parallel devices.
    """

    def __init__(
        self,
        sentences: Mapping[str, Any],
        words: Mapping[str, Any],
        batch_size: int,
        *,
        training: bool,
        word_dropout: float = 0.0,
        seed: int | None = 0,
        **kwargs,
    ):
        lengths = np.asarray(sentences["lengths"][:], np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.words = dict(words)
        for name, array in self.words.items():
            if len(array) != int(lengths.sum()):
                raise ValueError(
                    f"prepared tagger data: {len(array)} rows of {name!r} for "
                    f"{int(lengths.sum())} words of {len(lengths)} sentences"
                )
        if len(lengths) == 0:
            raise ValueError("prepared tagger data: a split without sentences")
        self.training = training
        self.word_dropout = float(word_dropout) if training else 0.0
        super().__init__(
            {"lengths": lengths, "starts": starts},
            lengths,
            BUCKETS,
            batch_size,
            self.padded,
            shuffle=training,
            drop_remainder=False,
            seed=seed,
            **kwargs,
        )

    def padded(self, rows: Mapping[str, np.ndarray], width: int):
        """(features, tag ids, weights) of the sentences `rows` (their lengths and starts),
        padded to `width` words and `batch_size` rows; tags the vocabulary lacks stay
        `UNKNOWN_TAG`."""
        lengths, starts = rows["lengths"], rows["starts"]
        total, size = int(lengths.sum()), max(self.batch_size, len(lengths))
        ends = np.cumsum(lengths)
        # the flat index of each word of the batch, and its (row, column) in the batch
        within = np.arange(total) - np.repeat(ends - lengths, lengths)
        flat = np.repeat(starts, lengths) + within
        row = np.repeat(np.arange(len(lengths)), lengths)
        out = {}
        for name, array in self.words.items():
            values = np.asarray(array[flat])
            padded = np.zeros((size, width, *values.shape[1:]), values.dtype)
            padded[row, within] = values
            out[name] = padded
        weights = np.zeros((size, width), np.float32)
        weights[row, within] = 1.0
        return {"words": out["words"], "chars": out["chars"]}, out["tags"], weights

    def __getitem__(self, index: int):
        features, tags, weights = super().__getitem__(index)
        if self.word_dropout > 0:
            seed = None if self.seed is None else [self.seed, self.epoch, index]
            drop = np.random.default_rng(seed).random(features["words"].shape) < self.word_dropout
            words = features["words"]
            features["words"] = np.where(drop & (words > 0), np.int32(UNK_ID), words)
        return features, np.maximum(tags, 0), weights

    def gold(self, index: int):
        """Batch `index` as (features, tag ids with `UNKNOWN_TAG` kept, weights), no
        dropout: what scoring compares the predictions with."""
        return super().__getitem__(index)
