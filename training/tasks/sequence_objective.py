"""How a sequence-generation model is compiled: optimizer, loss and metric (Keras only).

Shared by `SequenceGenerationRecipe.compile` (`zoo train`, TensorFlow) and the device route
(`scripts/device_seq2seq.py`, JAX, where TensorFlow is not installed), so both train the
same objective.
"""

from __future__ import annotations

import keras

from training.schedules import learning_rate_schedule


def compile_sequence_model(
    model: keras.Model, config: dict, steps_per_epoch: int | None, *, jit_compile: bool | str
) -> None:
    """Adam with `clipnorm` on the config's learning-rate schedule; cross-entropy of the
    logits averaged over real tokens (the sample weights are 0 on padding); token accuracy
    weighted alike."""
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=learning_rate_schedule(config, steps_per_epoch),
            clipnorm=config["clipnorm"],
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"
        ),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
    )
