"""How an image classifier is compiled: optimizer, losses and metrics (Keras only).

`ImageClassificationRecipe.compile` uses it on every backend (`zoo train` on TensorFlow, or
on JAX over prepared arrays, where TensorFlow need not be installed).
"""

from __future__ import annotations

import keras
from keras import ops

from training.schedules import learning_rate_schedule
from zoo.tasks.image_classifier import PROBABILITIES

#: Variables left out of weight decay (matched in variable names): biases and the
#: batch-norm offsets and scales.
NO_WEIGHT_DECAY = ["bias", "beta", "gamma"]


class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy of integer labels against probabilities, with label
    smoothing (Keras' sparse cross-entropy has none)."""

    def __init__(self, label_smoothing: float, name: str = "sparse_categorical_crossentropy"):
        super().__init__(name=name)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        labels = ops.cast(y_true, "int32")
        if len(labels.shape) == len(y_pred.shape):
            labels = ops.squeeze(labels, axis=-1)
        one_hot = ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, label_smoothing=self.label_smoothing
        )

    def get_config(self) -> dict:
        return {"label_smoothing": self.label_smoothing, "name": self.name}


def classification_loss(config: dict) -> keras.losses.Loss | str:
    """Cross-entropy of integer labels, smoothed when `label_smoothing` is set."""
    if config.get("label_smoothing"):
        return SmoothedSparseCrossentropy(float(config["label_smoothing"]))
    return "sparse_categorical_crossentropy"


def sgd_or_adamw(config: dict, steps_per_epoch: int | None) -> keras.optimizers.Optimizer:
    """`optimizer` "sgd" (with `momentum`) or "adamw" on the config's learning-rate
    schedule, with decoupled `weight_decay` on kernels only (not biases or batch-norm
    scales and offsets) and Polyak averaging when `ema_momentum` is set."""
    decay = float(config.get("weight_decay") or 0.0)
    ema = float(config.get("ema_momentum") or 0.0)
    common = dict(
        learning_rate=learning_rate_schedule(config, steps_per_epoch),
        use_ema=ema > 0,
        ema_momentum=ema or 0.99,
    )
    if config["optimizer"] == "sgd":
        optimizer = keras.optimizers.SGD(
            momentum=float(config["momentum"]), weight_decay=decay or None, **common
        )
    elif config["optimizer"] == "adamw":
        optimizer = keras.optimizers.AdamW(weight_decay=decay, **common)
    else:
        raise ValueError(f"Unknown optimizer {config['optimizer']!r}; use 'sgd' or 'adamw'")
    if decay:
        optimizer.exclude_from_weight_decay(var_names=NO_WEIGHT_DECAY)
    return optimizer


def compile_classifier(
    model: keras.Model,
    config: dict,
    optimizer: keras.optimizers.Optimizer,
    output_names: list[str] | None,
    *,
    jit_compile: bool | str,
) -> None:
    """Cross-entropy (`classification_loss`) and top-1 / top-5 accuracy of the main head.
    With `output_names` (a dict output: the main head and auxiliary heads), every head
    learns the same label and each auxiliary loss carries `aux_loss_weight` (0.3)."""
    k = min(5, int(config["num_classes"]))
    metrics = ["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(k, name="top5_accuracy")]
    loss, loss_weights = classification_loss(config), None
    if output_names:
        aux_weight = float(config.get("aux_loss_weight", 0.3))
        loss = {name: classification_loss(config) for name in output_names}
        loss_weights = {name: 1.0 if name == PROBABILITIES else aux_weight for name in output_names}
        metrics = {PROBABILITIES: metrics}
    model.compile(
        optimizer=optimizer,
        loss=loss,
        loss_weights=loss_weights,
        metrics=metrics,
        jit_compile=jit_compile,
    )
