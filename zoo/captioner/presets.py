"""Named configurations of the Show, Attend and Tell captioner (complete dicts, not deltas).

Model (`ShowAttendTell`):
    encoder, encoder_preset: the zoo family and preset whose backbone encodes the image
        (GoogLeNet's `imagenette` preset: batch norm, width 1.0).
    image_size: input side; with `feature_map` "inception_4e" (stride 16) it sets the grid:
        160 px -> 10x10 (L = 100), 224 px -> 14x14 (the paper's L = 196).
    train_encoder: fine-tune the backbone (False: frozen, as the paper's VGG was).
    target_vocab_size: `DATA_DECIDED` (the vocabulary of the training captions).
    embedding_dim, decoder_units, attention_units, dropout: decoder sizes.
    attention_penalty: lambda of the doubly stochastic attention penalty (the paper: 1).

Data and training (the recipe):
    encoder_init: a trained run directory or published artifact of the encoder family
        whose backbone initialises the encoder at the start of training ("" for none).
    cache_features: with a frozen, initialised encoder, compute every image's feature map
        once before training instead of at every step.
    min_count, max_vocab: words seen fewer times in the training captions are "[UNK]".
    max_caption_tokens: longer training captions are cut.
    train_images, val_images, eval_images: use the first n images of a split (0 = all);
        `eval_images` are captioned for BLEU / CIDEr.
    learning_rate, clipnorm, batch_size, epochs, checkpoint_monitor, lr_plateau_*: as in
        the other families (Adam; the best epoch by val loss is kept and exported).
    label_smoothing: of the word cross-entropy (0: none, as the paper).
    word_dropout: the chance that a teacher-forced input word is "[UNK]" in training
        (`zoo.layers.word_dropout`; 0: none, as the paper).
    beam_size: the exported default (the paper's 3); length_penalty (Wu et al. 2016's
        alpha), no_repeat_ngram_size and prior_weight (how much the caption a blank image
        would get counts against a word): `DECODING_DEFAULTS`; max_decode_length caps
        every caption.
"""

from __future__ import annotations

from zoo.registry import DATA_DECIDED

#: Decoding defaults of the captioner's export (`training.exports.captioner.Captioner`, for
#: configs that name none) and of its presets, chosen on Flickr8k val (100 images x 5
#: references) by `benchmarks/decoding_defaults.py` at beam 3, "[UNK]" banned.
#: no_repeat_ngram_size and length penalty (Wu et al.'s alpha), with captioner/default@1:
#: BLEU-4 / CIDEr 9.13 / 22.36 with neither; n = 2 at alpha 0, 1.0, 1.25, 1.5, 1.75, 2.0:
#: 9.66 / 23.32, 9.69 / 24.89, 10.45 / 25.71, 10.72 / 26.47, 10.11 / 25.45, 9.71 / 22.86;
#: n = 0 and 3 at 1.5: 9.30 / 23.78, 10.56 / 25.54. The decoder as published (emitting
#: "[UNK]", score / length at the end) gave 10.18 / 24.04 with 22 captions holding "[UNK]".
#: prior_weight (`zoo.layers.decoding.PriorContrast` against a blank image), with
#: captioner/default@3 at n = 2, alpha 1.5, BLEU-4 / CIDEr / distinct captions of 100:
#: 0: 12.59 / 28.92 / 73; 0.1: 12.43 / 30.62 / 84; 0.15: 13.09 / 32.92 / 90;
#: 0.2: 12.94 / 30.56 / 86; 0.25: 11.94 / 25.64 / 86; 0.3: 10.16 / 23.10 / 87 (alpha 1.0:
#: 12.66 / 27.74 / 73 at 0, 13.41 / 30.93 / 84 at 0.15). Chosen by each half of val for
#: the other (the benchmark's two-fold cross-validation), so 0.15 is not a pick of the
#: images it is reported on alone.
DECODING_DEFAULTS = {"no_repeat_ngram_size": 2, "length_penalty": 1.5, "prior_weight": 0.15}

#: Flickr8k (800 training images here): GoogLeNet (Imagenette-trained) at 160 px, frozen.
#: 512 LSTM units instead of the paper's 1,000: with 4,000 training captions (the paper had
#: 30,000) the larger decoder only overfits sooner, and costs 2-3x the time on 2 CPU cores.
_DEFAULT: dict = {
    "encoder": "googlenet",
    "encoder_preset": "imagenette",
    "image_size": 160,
    "feature_map": "inception_4e",
    "train_encoder": False,
    "encoder_init": "",
    "cache_features": True,
    "target_vocab_size": DATA_DECIDED,
    "embedding_dim": 256,
    "decoder_units": 512,
    "attention_units": 256,
    "dropout": 0.5,
    "attention_penalty": 1.0,
    "label_smoothing": 0.0,
    "word_dropout": 0.0,
    "min_count": 3,
    "max_vocab": 10000,
    "max_caption_tokens": 30,
    "train_images": 0,
    "val_images": 0,
    "eval_images": 0,
    "learning_rate": 1e-3,
    "clipnorm": 5.0,
    "batch_size": 64,
    "epochs": 30,
    "checkpoint_monitor": "val_loss",
    "lr_plateau_factor": 0.5,
    "lr_plateau_patience": 1,
    "min_learning_rate": 1e-5,
    "beam_size": 3,
    **DECODING_DEFAULTS,
    "max_decode_length": 40,
}

#: Seconds-long runs for tests: GoogLeNet's tiny backbone (64 px, 1/8 width: a 4x4 grid).
_TINY: dict = {
    **_DEFAULT,
    "encoder_preset": "tiny",
    "image_size": 64,
    "embedding_dim": 32,
    "decoder_units": 64,
    "attention_units": 32,
    "dropout": 0.1,
    "min_count": 1,
    "train_images": 40,
    "val_images": 8,
    "eval_images": 4,
    "learning_rate": 5e-3,
    "batch_size": 32,
    "epochs": 3,
    "lr_plateau_factor": 0.0,
    "beam_size": 3,
    "max_decode_length": 20,
}

PRESETS: dict[str, dict] = {"default": _DEFAULT, "tiny": _TINY}

MODEL_KEYS = (
    "target_vocab_size",
    "encoder",
    "encoder_preset",
    "image_size",
    "feature_map",
    "train_encoder",
    "embedding_dim",
    "decoder_units",
    "attention_units",
    "dropout",
    "attention_penalty",
)
