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

from training.tasks.classification_objective import sgd_or_adamw
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
        return sgd_or_adamw(config, steps_per_epoch)


RECIPE = GoogLeNetRecipe()
