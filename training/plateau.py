"""Learning-rate decay on a validation plateau, replayed from the run's history on resume.

Keras' `ReduceLROnPlateau` keeps its "best so far" and "epochs without improvement" in
Python attributes, so a run resumed from a checkpoint forgets them. Here the rate is a
pure function of the per-epoch history (`history.json`): at the start of training the
callback replays the history to find the current rate, so an interrupted run continues
on exactly the schedule an uninterrupted one would have followed.
"""

from __future__ import annotations

import keras


def rate_after(
    values: list[float], base: float, factor: float, patience: int, floor: float, min_delta: float
) -> float:
    """The learning rate after epochs whose monitored values are `values` (lower is better).

    The rate is multiplied by `factor` each time `patience + 1` epochs in a row fail to
    beat the best value by more than `min_delta`; it never goes below `floor`.
    """
    rate, best, wait = base, float("inf"), 0
    for value in values:
        if value < best - min_delta:
            best, wait = value, 0
            continue
        wait += 1
        if wait > patience:
            rate, wait = max(rate * factor, floor), 0
    return rate


class PlateauDecay(keras.callbacks.Callback):
    """Multiply the optimizer's learning rate by `factor` when `monitor` stops improving."""

    def __init__(
        self,
        base_rate: float,
        history: list[dict],
        monitor: str = "val_loss",
        factor: float = 0.5,
        patience: int = 0,
        floor: float = 0.0,
        min_delta: float = 0.0,
    ):
        super().__init__()
        self.base_rate = float(base_rate)
        self.monitor = monitor
        self.factor, self.patience = float(factor), int(patience)
        self.floor, self.min_delta = float(floor), float(min_delta)
        self.values = [float(h[monitor]) for h in history if monitor in h]

    def current_rate(self) -> float:
        """The rate the history so far calls for."""
        return rate_after(
            self.values, self.base_rate, self.factor, self.patience, self.floor, self.min_delta
        )

    def on_train_begin(self, logs: dict | None = None) -> None:
        rate = self.model.optimizer._learning_rate  # public getter hides schedules
        if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
            raise ValueError(
                "lr_plateau_factor needs a constant learning rate, but this recipe's optimizer "
                f"follows a schedule ({type(rate).__name__}); drop one of the two"
            )
        self.model.optimizer.learning_rate = self.current_rate()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        logs["learning_rate"] = float(self.model.optimizer.learning_rate)  # the rate just used
        if self.monitor in logs:
            self.values.append(float(logs[self.monitor]))
        self.model.optimizer.learning_rate = self.current_rate()


def from_config(config: dict, history: list[dict]) -> list[keras.callbacks.Callback]:
    """The plateau callback a config asks for (`lr_plateau_factor` set), else none."""
    factor = config.get("lr_plateau_factor")
    if not factor:
        return []
    return [
        PlateauDecay(
            base_rate=float(config["learning_rate"]),
            history=history,
            monitor=config.get("checkpoint_monitor", "val_loss"),
            factor=float(factor),
            patience=int(config.get("lr_plateau_patience", 0)),
            floor=float(config.get("min_learning_rate", 0.0)),
        )
    ]
