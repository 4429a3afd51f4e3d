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
  `scores` [N] (summed log-probabilities); `beam_size` <= 0 means the preset's, 1 greedy;
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
`training.tasks.sequence_generation`.

Defined answers for awkward input: an empty string captions to "" (no tokens, zero
attention); bytes that are no image fail the request with INVALID_ARGUMENT ("Unknown image
file format"); an image of any size, 1x1 included, is resized to the encoder's input.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from training.data import captions
from training.data.images import decode_image
from training.data.vocab import Vocabulary
from training.export_module import image_cost, signature
from training.sources import LoadSource, run_directory
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
    decode_texts,
)
from training.transfer import TransferError
from zoo.captioner.model import BACKBONE, encoder_backbone
from zoo.captioner.presets import DECODING_DEFAULTS

IMAGE_BYTES = tf.TensorSpec([None], tf.string, name="image_bytes")


# ---------------------------------------------------------------------------- metrics


def coco_scores(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """coco-caption's BLEU-1..4 and CIDEr (x 100) of one caption per image against all of
    that image's references, both normalized by `caption_tokens`."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} captions for {len(references)} reference lists")
    words = captions.caption_tokens_py([*hypotheses, *(r for refs in references for r in refs)])
    hyps = {i: [" ".join(words[i])] for i in range(len(hypotheses))}
    refs, at = {}, len(hypotheses)
    for i, image_refs in enumerate(references):
        refs[i] = [" ".join(w) for w in words[at : at + len(image_refs)]]
        at += len(image_refs)
    bleu, _ = Bleu(4).compute_score(refs, hyps, verbose=0)
    cider, _ = Cider().compute_score(refs, hyps)
    scores = {f"bleu_{n + 1}": 100.0 * float(b) for n, b in enumerate(bleu)}
    return {**scores, "cider": 100.0 * float(cider)}


# ---------------------------------------------------------------------------- export


class Captioner(SequenceGeneratorExport):
    """The exported module: image decoding, the Keras captioner, decoding, words and text.

    `outputs(...)` runs eagerly too: the Python API (`zoo caption`, evaluation).
    """

    decoding_defaults = DECODING_DEFAULTS  # measured on Flickr8k val: zoo.captioner.presets

    def __init__(self, model, config: dict, assets: dict):
        vocab = Vocabulary.from_json(assets["target_vocab"])
        super().__init__("captioner", model, vocab, config)
        self.image_size = int(model.image_size)
        self.grid = tuple(model.grid)
        self.feature_dim = int(model.feature_dim)

    def pixels(self, image_bytes: tf.Tensor) -> tf.Tensor:
        """Encoded images [N] -> float32 pixels [N, s, s, 3]; an empty string -> gray."""
        side = self.image_size
        gray = tf.fill([side, side, 3], tf.constant(128, tf.uint8))
        images = tf.map_fn(
            lambda b: tf.cond(
                tf.strings.length(b) > 0, lambda: decode_image(b, side), lambda: gray
            ),
            image_bytes,
            fn_output_signature=tf.TensorSpec([side, side, 3], tf.uint8),
        )
        return tf.cast(images, tf.float32)

    def encode(self, pixels: tf.Tensor) -> tf.Tensor:
        """Pixels [N, s, s, 3] -> the encoder's feature maps [N, h, w, D], N = 0 included
        (Keras' batch norm fails on an empty batch: one padding row is encoded instead)."""
        n = tf.shape(pixels)[0]
        padded = tf.pad(pixels, [[0, tf.maximum(0, 1 - n)], [0, 0], [0, 0], [0, 0]])
        return self.model.backbone(padded, training=False)[:n]

    def outputs(self, inputs: dict, beam_size=0, max_length=0, empty=None, options=()) -> dict:
        """{"pixels"} or {"features"} -> caption, scores, tokens, attention [N, T, h, w];
        rows where `empty` is True answer "" with no tokens. `options`: () or
        (no_repeat_ngram_size, length_penalty), < 0 meaning the export's defaults."""
        beam_size = tf.convert_to_tensor(beam_size, tf.int32)
        max_length = tf.convert_to_tensor(max_length, tf.int32)
        if "pixels" in inputs:  # encode once, not in both branches of greedy / beam search
            inputs = {"features": self.encode(inputs["pixels"])}
        ids, attention, scores = self.decode(inputs, beam_size, max_length, *options)
        if empty is not None:
            ids = tf.where(empty[:, None], 0, ids)
            attention = tf.where(empty[:, None, None], 0.0, attention)
            scores = tf.where(empty, 0.0, scores)
        tokens = self.target_tokens(ids)
        shape = tf.concat([tf.shape(ids), self.grid], axis=0)
        return {
            "caption": self.detokenize(ids, tokens),
            "scores": scores,
            "tokens": tokens,
            "attention": tf.reshape(attention, shape),
        }

    def image_outputs(self, image_bytes, beam_size=0, max_length=0, options=()) -> dict:
        """Encoded images [N] -> every output of `outputs`."""
        image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
        empty = tf.equal(tf.strings.length(image_bytes), 0)
        pixels = {"pixels": self.pixels(image_bytes)}
        return self.outputs(pixels, beam_size, max_length, empty, options)

    # -- signatures ------------------------------------------------------------------------

    @signature(IMAGE_BYTES)
    def serving_default(self, image_bytes):
        return {"caption": self.image_outputs(image_bytes)["caption"]}

    @signature(IMAGE_BYTES, BEAM_SIZE, MAX_LENGTH)
    def caption(self, image_bytes, beam_size, max_length):
        out = self.image_outputs(image_bytes, beam_size, max_length)
        return {"caption": out["caption"], "scores": out["scores"]}

    @signature(IMAGE_BYTES, BEAM_SIZE, MAX_LENGTH)
    def caption_with_attention(self, image_bytes, beam_size, max_length):
        return self.image_outputs(image_bytes, beam_size, max_length)

    @signature(
        lambda self: [
            tf.TensorSpec([None, *self.grid, self.feature_dim], tf.float32, "features"),
            BEAM_SIZE,
            MAX_LENGTH,
        ]
    )
    def caption_features(self, features, beam_size, max_length):
        return self.outputs({"features": features}, beam_size, max_length)

    @signature(IMAGE_BYTES, BEAM_SIZE, MAX_LENGTH, NO_REPEAT_NGRAM_SIZE, LENGTH_PENALTY)
    def caption_with_options(
        self, image_bytes, beam_size, max_length, no_repeat_ngram_size, length_penalty
    ):
        options = (no_repeat_ngram_size, length_penalty)
        out = self.image_outputs(image_bytes, beam_size, max_length, options)
        return {"caption": out["caption"], "scores": out["scores"]}

    @signature(IMAGE_BYTES)
    def features(self, image_bytes):
        return {"features": self.encode(self.pixels(image_bytes))}

    # -- Python API, warmup ----------------------------------------------------------------

    def request_costs(self):
        image = {"image_bytes": image_cost(self.image_size)}
        return {
            "serving_default": self.decoding_cost(image, knobs=False),
            "caption": self.decoding_cost(image),
            "caption_with_attention": self.decoding_cost(image),
            "caption_with_options": self.decoding_cost(image),
            "caption_features": self.decoding_cost({"features": {"kind": "pixels"}}),
            "features": {"inputs": image},
        }

    def texts(
        self,
        sources: list,
        beam_size: int,
        no_repeat_ngram_size: int = -1,
        length_penalty: float = -1.0,
    ) -> list[str]:
        """Captions of images (file paths or encoded bytes) with the traced
        `caption_with_options`."""
        data = [Path(s).read_bytes() if isinstance(s, str | Path) else s for s in sources]
        batch = tf.constant(data, tf.string, [len(data)])
        options = self.options(beam_size, 0, no_repeat_ngram_size, length_penalty)
        result = self.caption_with_options(batch, **options)
        return [s.decode("utf-8") for s in result["caption"].numpy()]

    def warmup(self):
        gray = np.full((self.image_size, self.image_size, 3), 128, np.uint8)
        jpeg = np.array([tf.io.encode_jpeg(gray).numpy()], dtype=object)
        knobs = {"beam_size": np.int32(0), "max_length": np.int32(0)}
        return [
            ("serving_default", {"image_bytes": jpeg}),
            ("caption_with_attention", {"image_bytes": jpeg, **knobs}),
        ]


# ---------------------------------------------------------------------------- recipe


def copy_by_name(source: keras.layers.Layer, target: keras.layers.Layer, where: str) -> None:
    """Copy `source`'s weights into `target`, strictly: layer by layer by name when
    `target` is a model (`source` may hold more layers, e.g. a backbone cut shorter),
    weight by weight otherwise."""
    if isinstance(target, keras.Model):
        for layer in target.layers:
            if not layer.weights:
                continue
            try:
                match = source.get_layer(layer.name)
            except ValueError:
                raise TransferError(f"{where}/{layer.name}: no such layer in the source") from None
            copy_by_name(match, layer, f"{where}/{layer.name}")
        return
    if len(source.weights) != len(target.weights):
        raise TransferError(f"{where}: {len(source.weights)} weights in the source, "
                            f"{len(target.weights)} here")  # fmt: skip
    for s, t in zip(source.weights, target.weights, strict=True):
        if tuple(s.shape) != tuple(t.shape):
            raise TransferError(
                f"{where}/{t.name}: shape {tuple(s.shape)} in the source, {tuple(t.shape)} here"
            )
        t.assign(s)


def fingerprint(layer: keras.layers.Layer) -> str:
    """A short hash of a layer's weights (which encoder computed a feature cache)."""
    digest = hashlib.sha256()
    for weight in layer.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()[:16]


class CaptionerRecipe(SequenceGenerationRecipe):
    """Flickr8k-style folders (or TFDS coco_captions) -> Show, Attend and Tell."""

    name = "captioner"
    vocabulary_layers = ("embedding", "logits")

    def load_data(
        self, config, data_dir, global_batch_size, *, training=True, assets=None, load_source=None
    ) -> GenerationData:
        """Captioned images, one example per caption; vocabulary from train unless `assets`.
        Training batches carry the cached feature maps when `caches_features`, else the
        pixels (so does every evaluation: the model's own encoder runs on them); the
        encoder comes from `encoder_init` through `load_source` (None: run directories)."""
        train = None
        if training or assets is None:
            train = captions.load_split(data_dir, "train", int(config["train_images"]))
            if train is None:
                raise FileNotFoundError(f"no training captions in {data_dir or 'TFDS'}")
        val = captions.load_split(data_dir, "val", int(config["val_images"]))
        if assets is not None:  # an earlier run's vocabulary: ids must stay the same
            vocab = Vocabulary.from_json(assets["target_vocab"])
        else:
            words = captions.caption_tokens_py([c for refs in train.captions for c in refs])
            vocab = Vocabulary.build(
                words, int(config["max_vocab"]), int(config["min_count"]), TARGET_SPECIALS
            )
        new_assets = {"target_vocab": vocab.to_json()}

        key, encoder = "pixels", None
        if training and self.caches_features(config):
            encoder = self.initialized_encoder(config, load_source or run_directory)
            key = "features"
            new_assets["encoder_fingerprint"] = fingerprint(encoder)
            if (
                assets is not None
                and assets.get("encoder_fingerprint") != new_assets["encoder_fingerprint"]
            ):
                raise ValueError(
                    f"encoder_init {config['encoder_init']} has changed since this run began: "
                    "its frozen encoder no longer matches the run's (use a new --model-dir)"
                )

        def dataset(split: captions.CaptionedImages, shuffle: bool) -> tf.data.Dataset:
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

    @staticmethod
    def examples(split: captions.CaptionedImages, vocab: Vocabulary, max_tokens: int):
        """(image index, target ids) of every caption with at least one word."""
        words = captions.caption_tokens_py([c for refs in split.captions for c in refs])
        index, targets, at = [], [], 0
        for i, refs in enumerate(split.captions):
            for tokens in words[at : at + len(refs)]:
                if tokens:
                    index.append(i)
                    targets.append(vocab.ids(tokens[:max_tokens]))
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
                scores = coco_scores(texts, data.eval_references)
                results.update({f"{k}{suffix}": v for k, v in scores.items()})
            results["bleu"] = results["bleu_4"]
        return results

    def export(self, model, config: dict, assets: dict) -> Captioner:
        return Captioner(model, config, assets)


RECIPE = CaptionerRecipe()
