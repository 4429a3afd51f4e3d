"""Training recipe of the Keras CIFAR-10 convnet (also any image-folder classifier): the
image classification task with the original example's optimizer."""

from __future__ import annotations

import keras

from training.tasks.image_classification import ImageClassificationRecipe
from zoo.cifar_convnet.model import HEAD_FEATURE


class CifarConvnetRecipe(ImageClassificationRecipe):
    """CIFAR-10 (folder or TFDS), RMSprop with the example's Keras 2 `decay`."""

    name = "cifar_convnet"
    tfds_name = "cifar10"
    feature_map = HEAD_FEATURE

    def optimizer(self, config, steps_per_epoch):
        # Keras 2's `decay=`: lr / (1 + decay * step)
        schedule = keras.optimizers.schedules.InverseTimeDecay(
            float(config["learning_rate"]), decay_steps=1, decay_rate=float(config["lr_decay"])
        )
        return keras.optimizers.RMSprop(
            learning_rate=schedule, epsilon=float(config.get("rmsprop_epsilon", 1e-7))
        )


RECIPE = CifarConvnetRecipe()
