"""Training recipe of GoogLeNet (Szegedy et al., "Going Deeper with Convolutions", 2014).

Data: an image folder `root/{train,val}/<class>/<image>` (Imagenette in
../shared/data/imagenette, classes named by WordNet id) or TFDS `imagenette/160px-v2`.
Images are decoded at `image_size / eval_crop_fraction` (146 px for the 128 px Imagenette
crop); training takes Inception-style random-resized crops (`random_resized_crop_area`,
`random_resized_crop_aspect`), flips and color jitter, evaluation and serving the central
crop. Class names are exported human-readable (`WORDNET_NAMES`; other folder names stay
as they are).

Loss: cross-entropy of the main classifier plus `aux_loss_weight` (0.3) times each
auxiliary classifier's, with `label_smoothing`. The auxiliary heads are trained only:
evaluation reports the main head, the export holds it alone.

Optimizer (`optimizer`, `lr_schedule`): the paper's SGD with momentum 0.9 and a 4% step
decay every 8 epochs, or (Imagenette) SGD with a linear warm-up and cosine decay; decoupled
weight decay on kernels only (not biases or batch-norm scales and offsets); Polyak
averaging (`ema_momentum`) when set. Mixed precision where the accelerator has fast half
precision (`mixed_precision: "auto"`).
"""

from __future__ import annotations

import keras

from training.schedules import learning_rate_schedule
from training.tasks.image_classification import ImageClassificationRecipe
from zoo.googlenet.model import AUXILIARY_FEATURES

#: Imagenette's classes: WordNet id -> ImageNet class name (the first of its synonyms).
WORDNET_NAMES = {
    "n01440764": "tench",
    "n02102040": "English springer",
    "n02979186": "cassette player",
    "n03000684": "chain saw",
    "n03028079": "church",
    "n03394916": "French horn",
    "n03417042": "garbage truck",
    "n03425413": "gas pump",
    "n03445777": "golf ball",
    "n03888257": "parachute",
}

#: Variables left out of weight decay (matched in variable names): biases and the
#: batch-norm offsets and scales.
NO_WEIGHT_DECAY = ["bias", "beta", "gamma"]


class GoogLeNetRecipe(ImageClassificationRecipe):
    """Imagenette (folder or TFDS), auxiliary heads, SGD (paper) or warm-up + cosine."""

    name = "googlenet"
    tfds_name = "imagenette/160px-v2"
    feature_map = "inception_5b"

    def display_names(self, names):
        return [WORDNET_NAMES.get(name, name) for name in names]

    def auxiliary_outputs(self, config):
        return list(AUXILIARY_FEATURES) if config["aux_heads"] else []

    def optimizer(self, config, steps_per_epoch):
        decay = float(config.get("weight_decay") or 0.0)
        ema = float(config.get("ema_momentum") or 0.0)
        common = dict(
            learning_rate=learning_rate_schedule(config, steps_per_epoch),
            use_ema=ema > 0,
            ema_momentum=ema or 0.99,
        )
        if config["optimizer"] == "sgd":
            momentum = float(config["momentum"])
            optimizer = keras.optimizers.SGD(
                momentum=momentum, weight_decay=decay or None, **common
            )
        elif config["optimizer"] == "adamw":
            optimizer = keras.optimizers.AdamW(weight_decay=decay, **common)
        else:
            raise ValueError(f"Unknown optimizer {config['optimizer']!r}; use 'sgd' or 'adamw'")
        if decay:
            optimizer.exclude_from_weight_decay(var_names=NO_WEIGHT_DECAY)
        return optimizer


RECIPE = GoogLeNetRecipe()
