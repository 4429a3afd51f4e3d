"""Training recipe of the BiLSTM tagger: CoNLL-U data, masked loss, UPOS accuracy, export.

The data side is `training.data.tagging` (CoNLL-U splits, vocabularies, NumPy features and
the prepared arrays' batches, no TensorFlow) and `training.data.tagging_graph` (the same
features in-graph, and the tf.data pipeline of `--data-dir` training); the SavedModel is
`training.exports.tagger`. The in-graph featurizer (normalization, vocabulary lookups,
characters of words) feeds the tf.data pipeline and the exported signatures, so the served
model sees exactly what the trained one saw; prepared arrays hold the ids it computes.
`evaluate` scores the exported module itself: on gold words, and on the raw `# text` of each
sentence, aligning predicted tokens with gold words by their character spans.

This module imports no TensorFlow: `zoo prepare tagger` and `zoo train tagger --data` run
under any Keras backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np

from training.data.conllu import Sentence
from training.data.tagging import (
    UNKNOWN_TAG,
    TagEncoder,
    TaggedBatches,
    build_vocabularies,
    check_assets,
    check_tagset,
    count_batches,
    read_splits,
)
from training.data.vocab import extend_tokens
from training.recipe import Data, Headline, Recipe
from training.schedules import learning_rate_schedule


@dataclass
class TaggerData(Data):
    """`Data` plus the evaluation sentences (for raw-text scoring)."""

    eval_sentences: list[Sentence] = field(default_factory=list)


class TaggerRecipe(Recipe):
    """CoNLL-U in, per-word tags out."""

    name = "tagger"
    headline = Headline("{tagset}_accuracy", percent=True)
    intended_use = (
        "Part-of-speech tagging of English text like its treebank's, and a starting point for "
        "fine-tuning on another treebank or tag set. Accuracy drops on other domains."
    )

    def load_data(
        self, config, data_dir, global_batch_size, *, training=True, assets=None, load_source=None
    ) -> TaggerData:
        """EWT (or any CoNLL-U train/dev files) as bucketed batches.

        With `assets` (resume, evaluate) the run's vocabularies and tag list are reused as
        saved; without them they are built from the training sentences. With
        `training=False` only the evaluation sentences are read (dev, else test, else the
        given file), so `zoo evaluate` needs no training file.
        """
        from training.data.tagging_graph import featurizer_from_assets, make_dataset

        check_tagset(config)
        if assets is not None:
            check_assets(assets, config)
        if not training and assets is None:
            raise ValueError("evaluation (training=False) needs the run's assets")
        train, dev = read_splits(config, data_dir, training)
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

    def prepare(self, config, data_dir, assets=None):
        """The training and dev sentences as id arrays (`training.data.tagging`: splits
        `train` and `val` of sentence lengths, `train_words` and `val_words` of word, char
        and tag ids, unpadded), and the vocabularies `load_data` builds (or `assets`)."""
        check_tagset(config)
        if assets is not None:
            check_assets(assets, config)
        train, dev = read_splits(config, data_dir, training=True)
        assets = assets if assets is not None else build_vocabularies(train, config)
        encoder = TagEncoder(assets)
        splits = encoder.encode(train, "train")
        if dev:
            splits.update(encoder.encode(dev, "val"))
        return splits, assets

    def array_data(self, config, data, global_batch_size, *, training=True, seed=0) -> Data:
        """`load_data`'s batches over the prepared arrays (`TaggedBatches`): the same length
        buckets, padding weights and word dropout, each batch padded to its bucket's width
        (and a short one to the batch size, with empty rows of weight 0) so that JAX
        compiles a step once per bucket."""
        check_tagset(config)
        check_assets(data.assets, config)
        val = None
        if "val" in data.splits:
            val = TaggedBatches(
                data.split("val"), data.split("val_words"), global_batch_size, training=False
            )
        train = None
        if training:
            train = TaggedBatches(
                data.split("train"),
                data.split("train_words"),
                global_batch_size,
                training=True,
                word_dropout=float(config["word_dropout"]),
                seed=seed,
            )
        return Data(train=train, val=val, examples_per_step=global_batch_size, assets=data.assets)

    def evaluate_arrays(self, model, config, data) -> dict[str, float]:
        """The gold-word tag accuracy as `evaluate` computes it (padding left out; a tag the
        vocabulary lacks is a wrong answer) and the cross-entropy per word (`loss`) on the
        prepared dev sentences. Raw-text figures need the exported tokenizer: `zoo evaluate`
        on the run."""
        if data.val is None:
            raise ValueError("No validation data to evaluate on")
        correct = total = 0
        loss = 0.0
        for index in range(len(data.val)):
            features, tags, weights = data.val.gold(index)
            probs = np.asarray(model.predict_on_batch(features), np.float64)
            real = weights > 0
            known = real & (tags != UNKNOWN_TAG)
            correct += int(np.sum((np.argmax(probs, axis=-1) == tags) & known))
            total += int(np.sum(real))
            # as the training loss: a tag the vocabulary lacks counts as tag 0
            picked = np.take_along_axis(probs, np.maximum(tags, 0)[..., None], axis=-1)[..., 0]
            loss -= float(np.sum(np.log(np.clip(picked[real], 1e-7, 1 - 1e-7))))
        return {
            "loss": loss / max(total, 1),
            f"{config['tagset']}_accuracy": correct / max(total, 1),
            "eval_words": total,
            "eval_sentences": len(data.val.lengths),
        }

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
        """Adam with gradient clipping, masked cross-entropy, weighted token accuracy.

        XLA would recompile TensorFlow's steps for every new batch shape (sentence lengths
        vary), so "auto" is off there; JAX without jit runs op by op, so "auto" is on there
        (the prepared arrays' batches come in a bounded set of widths)."""
        jit = jit_compile is True or (jit_compile == "auto" and keras.backend.backend() == "jax")
        model.compile(
            optimizer=keras.optimizers.Adam(
                learning_rate_schedule(config, data.batches_per_epoch() if data else None),
                clipnorm=5.0,
            ),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            jit_compile=jit,
        )

    def evaluate(self, model, config, data) -> dict[str, float]:
        """Accuracy on gold words and on raw text, through the export module."""
        sentences = getattr(data, "eval_sentences", None)
        if not sentences:
            return super().evaluate(model, config, data)
        from training.exports.tagger import TaggerModule, score

        return score(TaggerModule(model, data.assets), sentences, config["tagset"])

    def export(self, model, config, assets):
        """The tagger's SavedModel module (`training.exports.tagger.TaggerModule`)."""
        from training.exports.tagger import TaggerModule

        return TaggerModule(model, assets)


RECIPE = TaggerRecipe()
