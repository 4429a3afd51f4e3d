"""How a sequence-generation model is compiled: optimizer, loss and metric (Keras only).

`SequenceGenerationRecipe.compile` uses it on every backend (`zoo train` on TensorFlow, or
on JAX over prepared arrays, where TensorFlow need not be installed).

Config keys: `learning_rate` and the schedule's keys (`training/schedules.py`), `clipnorm`,
and `label_smoothing` (optional, default 0: plain cross-entropy).
"""

from __future__ import annotations

import keras
from keras import ops

from training.schedules import learning_rate_schedule


@keras.saving.register_keras_serializable(package="tfzoo")
class SmoothedSparseLogitsCrossentropy(keras.losses.Loss):
    """Cross-entropy of integer labels against logits with label smoothing: the target is
    (1 - e) on the label plus e / K on each of the K classes (Szegedy et al. 2016), which is
    what `categorical_crossentropy(one_hot, logits, from_logits=True, label_smoothing=e)`
    computes, without the [batch, time, K] one-hot tensor:
    (1 - e) * (-log p_label) + e * (logsumexp(logits) - mean(logits)).
    Keras' SparseCategoricalCrossentropy has no label smoothing. Averaged over the sample
    weights ("mean_with_sample_weight"), so padded positions (weight 0) count for nothing."""

    def __init__(
        self,
        label_smoothing: float,
        reduction: str = "mean_with_sample_weight",
        name: str = "sparse_categorical_crossentropy",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        labels = ops.cast(y_true, "int32")
        if len(labels.shape) == len(y_pred.shape):
            labels = ops.squeeze(labels, axis=-1)
        nll = keras.losses.sparse_categorical_crossentropy(labels, y_pred, from_logits=True)
        uniform = ops.logsumexp(y_pred, axis=-1) - ops.mean(y_pred, axis=-1)
        e = self.label_smoothing
        return (1.0 - e) * nll + e * uniform

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def sequence_loss(config: dict) -> keras.losses.Loss:
    """Cross-entropy of the logits averaged over real tokens (the sample weights are 0 on
    padding), smoothed when the config's `label_smoothing` is above 0."""
    smoothing = float(config.get("label_smoothing") or 0.0)
    if smoothing:
        return SmoothedSparseLogitsCrossentropy(smoothing)
    return keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="mean_with_sample_weight"
    )


def compile_sequence_model(
    model: keras.Model, config: dict, steps_per_epoch: int | None, *, jit_compile: bool | str
) -> None:
    """Adam with `clipnorm` on the config's learning-rate schedule; `sequence_loss`; token
    accuracy weighted alike (padding excluded)."""
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=learning_rate_schedule(config, steps_per_epoch),
            clipnorm=config["clipnorm"],
        ),
        loss=sequence_loss(config),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
    )
