"""Named configurations of the seq2seq translator (complete dicts, not deltas).

Model keys go to `Seq2SeqTranslator`; the others drive data, training and decoding
(`lr_schedule`, `warmup_epochs` and `min_learning_rate`: see `training/schedules.py`;
`label_smoothing`: `training/tasks/sequence_objective.py`).
`source_vocab_size` / `target_vocab_size` are `DATA_DECIDED`: the recipe sets them to the
sizes of the vocabularies built from the training data.
"""

from __future__ import annotations

from zoo.registry import DATA_DECIDED

#: Decoding defaults of the translator's export (`training.exports.seq2seq.Translator`, for
#: configs that name none) and of its presets, chosen on Multi30k val (1,014 sentences) by
#: `benchmarks/decoding_defaults.py` with seq2seq/default@2 at beam 4, "[UNK]" banned:
#: sacreBLEU 35.17 with neither; no_repeat_ngram_size 0 / 2 / 3 at length penalty (Wu et
#: al.'s alpha) 1.0: 35.68 / 35.76 / 35.95; n = 3 at alpha 0, 0.6, 1.0, 1.25, 1.5, 2.0:
#: 35.38, 35.74, 35.95, 35.98, 35.65, 35.11. The decoder as published (emitting "[UNK]",
#: then copying the source word; score / length at the end) gave 35.44.
DECODING_DEFAULTS = {"no_repeat_ngram_size": 3, "length_penalty": 1.25}

PRESETS: dict[str, dict] = {
    # Trains in seconds on a slice of Multi30k; for tests.
    "tiny": {
        "source_lang": "en",
        "target_lang": "de",
        "lowercase_source": True,
        "lowercase_target": False,
        "train_limit": 2000,
        "val_limit": 200,
        "max_train_tokens": 30,
        "min_count": 1,
        "max_source_vocab": 3000,
        "max_target_vocab": 3000,
        "source_vocab_size": DATA_DECIDED,
        "target_vocab_size": DATA_DECIDED,
        "embedding_dim": 32,
        "encoder_units": 32,
        "decoder_units": 48,
        "attention": "additive",
        "attention_units": 32,
        "dropout": 0.1,
        "label_smoothing": 0.0,
        "learning_rate": 5e-3,
        "warmup_epochs": 0,
        "lr_schedule": "step",
        "lr_decay_start_epochs": 2,
        "lr_decay_epochs": 1,
        "lr_decay_factor": 0.5,
        "min_learning_rate": 1e-4,
        "checkpoint_monitor": "val_loss",
        "clipnorm": 1.0,
        "batch_size": 32,
        "epochs": 3,
        "beam_size": 2,
        **DECODING_DEFAULTS,
        "max_source_tokens": 256,
        "max_decode_length": 256,
        "eval_limit": 100,
    },
    # Multi30k en->de: 2-4.5 minutes per epoch on 2 CPU cores. The rate is held at its
    # peak for 14 epochs, then halved every epoch (Luong et al. 2015 halve on a fixed
    # schedule too).
    # The previous recipe (Adam at 2e-3 from the first step, dropout 0.3, no label
    # smoothing, otherwise as below) depended strongly on the random draw: unseeded runs
    # were at 1.61-2.03 val loss after 12 epochs and ended at BLEU 19.2-32.96 (this
    # schedule, unseeded: 23.6). `--seed 0` gave val loss 1.521 and BLEU 35.4 beam / 34.7
    # greedy: artifact seq2seq/default@2, trained by that recipe, not this one.
    # Changed for a result that does not hinge on the seed, as attention-LSTM NMT recipes
    # for small corpora do (not yet measured here): the peak rate halved to Adam's usual
    # 1e-3 (OpenNMT-py's recommended Adam rate; the suspicion is that 2e-3 from step 0
    # let the first steps decide the run), reached by a linear warm-up over the first
    # epoch (early Adam steps rest on noisy second-moment estimates: Liu et al. 2020), and
    # label smoothing 0.1 (Szegedy et al. 2016; Vaswani et al. 2017), a regulariser for
    # the 29k-pair corpus alongside the unchanged dropout 0.3. The schedule's cuts are
    # unchanged (after epochs 14-19; the last rate 1e-3 / 64), as are the epochs and the
    # length-bucketed batches. The losses (and so the best epoch by val_loss) are now of
    # smoothed targets: higher than the figures above, and not comparable with them.
    # Val BLEU of this recipe for seeds 0, 1, 2 (`scripts/queue_translator_seeds.sh`):
    # pending, not yet measured.
    "default": {
        "source_lang": "en",
        "target_lang": "de",
        "lowercase_source": True,
        "lowercase_target": False,
        "train_limit": None,
        "val_limit": None,
        "max_train_tokens": 50,
        "min_count": 2,
        "max_source_vocab": 12000,
        "max_target_vocab": 12000,
        "source_vocab_size": DATA_DECIDED,
        "target_vocab_size": DATA_DECIDED,
        "embedding_dim": 256,
        "encoder_units": 256,
        "decoder_units": 256,
        "attention": "multiplicative",
        "attention_units": 256,
        "dropout": 0.3,
        "label_smoothing": 0.1,
        "learning_rate": 1e-3,
        "warmup_epochs": 1,
        # the best epoch by val loss is exported
        "lr_schedule": "step",
        "lr_decay_start_epochs": 14,
        "lr_decay_epochs": 1,
        "lr_decay_factor": 0.5,
        "min_learning_rate": 1e-5,
        "checkpoint_monitor": "val_loss",
        "clipnorm": 1.0,
        "batch_size": 64,
        "epochs": 20,
        "beam_size": 4,
        **DECODING_DEFAULTS,
        "max_source_tokens": 256,
        "max_decode_length": 256,
        "eval_limit": None,
    },
}

MODEL_KEYS = (
    "source_vocab_size",
    "target_vocab_size",
    "embedding_dim",
    "encoder_units",
    "decoder_units",
    "attention",
    "attention_units",
    "dropout",
)
