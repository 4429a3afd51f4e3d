"""Training recipe of the Show, Attend and Tell captioner: captioned images in, `Captioner` out.

Data: a Flickr8k-style folder (`images/`, `captions_{train,val}.csv`; ../shared/data/flickr8k)
or TFDS `coco_captions`. The vocabulary is built from the training captions
(`training.data.captions.caption_tokens`: lowercased, punctuation dropped; words seen fewer
than `min_count` times are "[UNK]").

Encoder: the config's zoo backbone, cut at `feature_map`. `encoder_init` (a trained run
directory or published artifact of that family, e.g. runs/googlenet_imagenette, loaded by
the caller's `load_source`: `training.sources`) initialises it when a run starts
(`init_from(model, source_model, ["backbone"])`, layer by layer by name, strictly). A
frozen, initialised encoder's feature maps are computed once per image before training
(`cache_features`), and the run records a fingerprint of the encoder's weights so that a
resumed run refuses a changed `encoder_init`.

Loss, decoding and its clamps are the sequence-generation task's; the metrics are
coco-caption's (`pycocoevalcap`): BLEU-1..4 and CIDEr against every reference caption of an
image, with the preset's beam and greedily, on the normalized words of
`caption_tokens` (coco-caption's own PTB tokenizer needs Java; this one is the vocabulary's).

Export signatures (core TensorFlow ops only; decoding is a `tf.while_loop` in the graph):

- `serving_default`: `image_bytes` string [N] (JPEG/PNG/GIF/BMP, any size) -> `caption` [N],
  with the preset's beam;
- `caption`: `image_bytes`, `beam_size` int32 [], `max_length` int32 [] -> `caption`,
  `scores` [N] (summed log-probabilities, less `prior_weight` times the blank image's:
  see below); `beam_size` <= 0 means the preset's, 1 greedy;
  `max_length` <= 0 means `max_decode_length`, which also caps it;
- `caption_with_attention`: same inputs -> also `tokens` string [N, T] (the words, then
  "</s>", then "") and `attention` float32 [N, T, h, w] (each emitted token's weights over
  the feature grid, summing to 1; zero after "</s>");
- `caption_features`: `features` float32 [N, h, w, D] (the encoder's output, e.g. from
  `features`), `beam_size`, `max_length` -> as `caption_with_attention`;
- `features`: `image_bytes` -> `features` [N, h, w, D], the encoder's feature map;
- `caption_with_options`: as `caption`, plus `no_repeat_ngram_size` int32 [] (no n-gram of
  that size repeats; 0 turns it off) and `length_penalty` float32 [] (Wu et al. 2016's alpha
  of the beam's length normalisation; 0 turns it off, at most 10); either < 0 means the
  export's default, which every other signature uses.

Decoding never emits "[UNK]" (unless the config's `allow_unk`): see
`training.tasks.sequence_generation`. Every signature decodes against a blank image with
the config's `prior_weight` (`zoo.layers.decoding.PriorContrast`; `DECODING_DEFAULTS`'s 0.15
for configs that name none): a word scores its log-probability for this image less the
weight times its log-probability for a gray one, so that what the model would say of any
photo loses to what this photo makes likely (one image: 29 -> 33 ms, ten: 160 -> 182 ms).

Defined answers for awkward input: an empty string captions to "" (no tokens, zero
attention); bytes that are no image fail the request with INVALID_ARGUMENT ("Unknown image
file format"); an image of any size, 1x1 included, is resized to the encoder's input.

The signatures are `training.exports.captioner.Captioner`'s (TensorFlow, imported by
`export`); this module imports no TensorFlow, so `zoo prepare captioner` and `zoo train
captioner --data` run on any Keras backend.

Prepared arrays (`zoo prepare captioner --data-dir FOLDER`, `prepare`): what `load_data`
trains on, from a Flickr8k-style folder. Per split ("train", "val"), one row per caption
with at least one word (`caption_files.caption_words`, the vocabulary's words in pure
Python), cut to `max_caption_tokens`:

    image           int32 [n]     the caption's image: a row of the split's image table
    target          int32 [n, T]  word ids (no "<s>" / "</s>"), 0-padded to the longest
    target_lengths  int32 [n]     ids in each row of `target`

and the split's image table, one row per image, in split "<split>_images": `pixels` uint8
[m, s, s, 3] (each image decoded and resized to `image_size` without TensorFlow, by Pillow:
`training.data.image_arrays`, within about a level of 255 of the export's decoder, as the
image families' prepared pixels), or, when training reads cached feature maps
(`caches_features`: a frozen encoder initialised from `encoder_init`), `features` float16
[m, h, w, D]: those pixels through that encoder, computed here with Keras (any backend) as
`load_data` caches them, its fingerprint in the assets. `encoder_init` is resolved by the
caller's `load_source` (`zoo prepare` passes the CLI's, as `zoo train` does); a run on the
features still initialises its encoder from `encoder_init` (`initialize`), for the export.

`array_data` batches them as `captions.caption_dataset`: ({"pixels" or "features",
"target_in"}, target_out, weights), shuffled each epoch, the last batch short; targets are
padded to the split's longest caption (not the batch's), so a compiled step sees two shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import keras
import numpy as np

from training.data import caption_files
from training.data.caption_arrays import caption_batches, encoded
from training.data.vocab import Vocabulary
from training.sources import LoadSource, run_directory
from training.tasks import caption_metrics
from training.tasks.sequence_generation import (
    BOS,
    EOS,
    TARGET_SPECIALS,
    GenerationData,
    SequenceGenerationRecipe,
    decode_texts,
    padded_ids,
)
from training.transfer import TransferError, copy_by_name, fingerprint
from zoo.captioner.model import BACKBONE, encoder_backbone

if TYPE_CHECKING:
    import tensorflow as tf

    from training.data.caption_files import CaptionedImages
    from training.exports.captioner import Captioner
    from training.prepared import Prepared

#: caption texts -> their words (`captions.caption_tokens_py`, TensorFlow, or
#: `caption_files.caption_words_of`: the same words in pure Python)
Words = Callable[[Sequence[str]], list[list[str]]]


class CaptionerRecipe(SequenceGenerationRecipe):
    """Flickr8k-style folders (or TFDS coco_captions) -> Show, Attend and Tell."""

    name = "captioner"
    intended_use = (
        "Describing a photograph in one English sentence, for research; a starting point for "
        "fine-tuning on another folder of captioned images."
    )
    vocabulary_layers = ("embedding", "logits")

    def load_data(
        self, config, data_dir, global_batch_size, *, training=True, assets=None, load_source=None
    ) -> GenerationData:
        """Captioned images, one example per caption; vocabulary from train unless `assets`.
        Training batches carry the cached feature maps when `caches_features`, else the
        pixels (so does every evaluation: the model's own encoder runs on them); the
        encoder comes from `encoder_init` through `load_source` (None: run directories)."""
        from training.data import captions

        train = None
        if training or assets is None:
            train = captions.load_split(data_dir, "train", int(config["train_images"]))
            if train is None:
                raise FileNotFoundError(f"no training captions in {data_dir or 'TFDS'}")
        val = captions.load_split(data_dir, "val", int(config["val_images"]))
        vocab = self.vocabulary(config, train, assets, captions.caption_tokens_py)
        new_assets = {"target_vocab": vocab.to_json()}

        key, encoder = "pixels", None
        if training and self.caches_features(config):
            encoder = self.feature_encoder(config, load_source, assets, new_assets)
            key = "features"

        def dataset(split: CaptionedImages, shuffle: bool) -> tf.data.Dataset:
            table = captions.pixel_table(split.images, int(config["image_size"]))
            if encoder is not None:
                table = captions.feature_table(encoder, table)
            index, targets = self.examples(split, vocab, int(config["max_caption_tokens"]))
            bos, eos = vocab.id(BOS), vocab.id(EOS)
            return captions.caption_dataset(
                table, key, index, targets, global_batch_size, bos, eos, shuffle
            )

        eval_limit = int(config["eval_images"]) or None
        return GenerationData(
            train=dataset(train, shuffle=True) if training else None,
            val=dataset(val, shuffle=False) if val is not None else None,
            assets=assets or new_assets,
            eval_sources=val.images[:eval_limit] if val is not None else [],
            eval_references=val.captions[:eval_limit] if val is not None else [],
        )

    def prepare(
        self,
        config: dict,
        data_dir: str | None,
        assets: dict | None = None,
        load_source: LoadSource | None = None,
    ) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
        """`load_data`'s examples and image tables as arrays (see the module's docstring),
        read without TensorFlow; the encoder of cached features comes from `encoder_init`
        through `load_source` (None: run directories)."""
        from training.data.image_arrays import read_images

        if not data_dir:
            raise ValueError(
                "captioner's prepare reads a Flickr8k-style folder (--data-dir), e.g. "
                "../shared/data/flickr8k; TFDS coco_captions trains from --data-dir-less runs"
            )
        train = caption_files.read_split(data_dir, "train", int(config["train_images"]))
        if train is None:
            raise FileNotFoundError(f"no training captions in {data_dir}")
        val = caption_files.read_split(data_dir, "val", int(config["val_images"]))
        vocab = self.vocabulary(config, train, assets, caption_files.caption_words_of)
        new_assets = {"target_vocab": vocab.to_json()}
        key, encoder = "pixels", None
        if self.caches_features(config):
            encoder = self.feature_encoder(config, load_source, assets, new_assets)
            key = "features"
        splits: dict[str, dict[str, np.ndarray]] = {}
        for name, split in (("train", train), ("val", val)):
            if split is None:
                continue
            table = read_images(split.images, int(config["image_size"]))
            if encoder is not None:
                table = encoded(encoder, table)
            index, targets = self.examples(
                split, vocab, int(config["max_caption_tokens"]), caption_files.caption_words_of
            )
            if not targets:
                raise ValueError(f"no captions with words in the {name} split of {data_dir}")
            target, lengths = padded_ids(targets)
            splits[name] = {
                "image": np.asarray(index, np.int32),
                "target": target,
                "target_lengths": lengths,
            }
            splits[f"{name}_images"] = {key: table}
        return splits, assets or new_assets

    def array_data(
        self,
        config: dict,
        data: Prepared,
        global_batch_size: int,
        *,
        training: bool = True,
        seed: int | None = 0,
    ) -> GenerationData:
        """`load_data`'s batches over prepared arrays (`caption_batches`): the training
        captions shuffled each epoch (from `seed`), the validation ones in order."""
        vocab = Vocabulary.from_json(data.assets["target_vocab"])
        bos, eos = vocab.id(BOS), vocab.id(EOS)

        def batches(split: str, shuffle: bool):
            (key, table), *others = data.split(f"{split}_images").items()
            if others:
                raise ValueError(f"{data.path}: {split}_images holds more than one table")
            return caption_batches(
                data.split(split), key, table, global_batch_size, bos, eos, shuffle, seed
            )

        return GenerationData(
            train=batches("train", shuffle=True) if training else None,
            val=batches("val", shuffle=False) if "val" in data.splits else None,
            assets=data.assets,
        )

    def vocabulary(
        self, config: dict, train: CaptionedImages | None, assets: dict | None, words: Words
    ) -> Vocabulary:
        """`assets`' vocabulary (an earlier run's: ids must stay the same), else the words
        of the training captions seen at least `min_count` times."""
        if assets is not None:
            return Vocabulary.from_json(assets["target_vocab"])
        tokens = words([c for refs in train.captions for c in refs])
        return Vocabulary.build(
            tokens, int(config["max_vocab"]), int(config["min_count"]), TARGET_SPECIALS
        )

    def feature_encoder(
        self,
        config: dict,
        load_source: LoadSource | None,
        assets: dict | None,
        new_assets: dict,
    ) -> keras.Model:
        """The frozen encoder whose feature maps training caches, from `encoder_init`; its
        fingerprint goes into `new_assets`, and must match `assets`' (a resumed run)."""
        encoder = self.initialized_encoder(config, load_source or run_directory)
        new_assets["encoder_fingerprint"] = fingerprint(encoder)
        if assets is not None and assets.get("encoder_fingerprint") != fingerprint(encoder):
            raise ValueError(
                f"encoder_init {config['encoder_init']} has changed since this run began: "
                "its frozen encoder no longer matches the run's (use a new --model-dir)"
            )
        return encoder

    @staticmethod
    def examples(
        split: CaptionedImages, vocab: Vocabulary, max_tokens: int, words: Words | None = None
    ):
        """(image index, target ids) of every caption with at least one word; `words`
        splits captions into words (default: `captions.caption_tokens_py`, TensorFlow)."""
        if words is None:
            from training.data import captions

            words = captions.caption_tokens_py
        tokens = words([c for refs in split.captions for c in refs])
        index, targets, at = [], [], 0
        for i, refs in enumerate(split.captions):
            for caption in tokens[at : at + len(refs)]:
                if caption:
                    index.append(i)
                    targets.append(vocab.ids(caption[:max_tokens]))
            at += len(refs)
        return index, targets

    @staticmethod
    def caches_features(config: dict) -> bool:
        """Whether training reads cached feature maps: a frozen encoder with known weights."""
        return bool(
            config["cache_features"] and not config["train_encoder"] and config["encoder_init"]
        )

    def initialized_encoder(self, config: dict, load_source: LoadSource) -> keras.Model:
        """The config's encoder on its own, initialised from `encoder_init`, which
        `load_source` loads (a run directory, or e.g. a published artifact's name)."""
        encoder = encoder_backbone(
            config["encoder"], config["encoder_preset"], config["image_size"], config["feature_map"]
        )
        self.copy_parts_from(load_source(config["encoder_init"]), {BACKBONE: encoder})
        return encoder

    def initialize(self, model, config: dict, load_source: LoadSource) -> None:
        """A new run's encoder comes from `encoder_init`, when the config names one,
        loaded by `load_source`."""
        if config["encoder_init"]:
            self.init_from(model, load_source(config["encoder_init"]), [BACKBONE])
            print(f"[train] encoder initialised from {config['encoder_init']}")

    def init_from(self, model, source_model: keras.Model, parts: list[str]) -> None:
        """Initialise the named parts of `model` from `source_model`, a loaded trained model:
        the "backbone" (the encoder) layer by layer by name from the source's backbone, which
        may go deeper; every layer with weights must find its match, of the same shapes."""
        self.copy_parts_from(source_model, {part: model.get_layer(part) for part in parts})

    @staticmethod
    def copy_parts_from(source_model: keras.Model, targets: dict) -> None:
        """Copy each `targets` layer (part name -> layer) from the same-named layer of
        `source_model`, by name (`copy_by_name`)."""
        for part, target in targets.items():
            try:
                match = source_model.get_layer(part)
            except ValueError:
                raise TransferError(f"{source_model.name} has no layer {part!r}") from None
            copy_by_name(match, target, part)

    def evaluate(self, model, config: dict, data) -> dict[str, float]:
        """Val loss / accuracy, and coco-caption BLEU-1..4 and CIDEr of the captions of the
        evaluation images with the preset's beam (`bleu` is BLEU-4) and greedily (`_greedy`)."""
        results: dict[str, float] = {}
        if data.val is not None:
            values = model.evaluate(data.val, return_dict=True, verbose=0)
            results.update({f"val_{k}": float(v) for k, v in values.items()})
        if getattr(data, "eval_sources", None):
            module = self.export(model, config, data.assets)
            for beam, suffix in ((0, ""), (1, "_greedy")):
                texts = decode_texts(module, data.eval_sources, beam_size=beam, batch_size=32)
                scores = caption_metrics.coco_scores(texts, data.eval_references)
                results.update({f"{k}{suffix}": v for k, v in scores.items()})
            results["bleu"] = results["bleu_4"]
        return results

    def export(self, model, config: dict, assets: dict) -> Captioner:
        """The `Captioner` SavedModel module (`training.exports.captioner`, TensorFlow)."""
        from training.exports.captioner import Captioner

        return Captioner(model, config, assets)


RECIPE = CaptionerRecipe()
