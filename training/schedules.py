"""Learning-rate schedules named in a config, shared by every epoch-based recipe.

Config keys:
    learning_rate: the peak rate.
    lr_schedule: "constant" (the default), "step" (multiply by `lr_decay_factor` every
        `lr_decay_epochs` epochs; with `lr_decay_start_epochs`, after that many epochs at
        the peak and never below `min_learning_rate`) or "cosine" (from `learning_rate` down to `min_learning_rate`
        over the `epochs` left after the warm-up).
    warmup_epochs: linear warm-up from 0 over this many epochs (fractions allowed), with the
        "step" or "cosine" schedule. "step": the rate is the stepped curve times
        min(1, step / warm-up steps), so with `lr_decay_start_epochs` at least the warm-up
        it climbs from 0 to the peak and is then held and stepped at the same epochs as
        without a warm-up. "cosine": the cosine starts where the warm-up ends.

Schedules count optimizer steps, and the step counter is saved in every checkpoint, so a
resumed run continues on exactly the curve an uninterrupted one follows. The rate is a
pure function of the config, unlike a plateau rule, so two runs of one command anneal alike.
(GPT keeps nanoGPT's iteration-based schedule and key names in its own recipe.)
"""

from __future__ import annotations

import keras
from keras import ops

SCHEDULES = ("constant", "step", "cosine")


def learning_rate_schedule(
    config: dict, steps_per_epoch: int | None
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The config's schedule in optimizer steps; the constant peak rate when
    `steps_per_epoch` is unknown (evaluation and export, where the rate is never used)."""
    peak = float(config["learning_rate"])
    kind = config.get("lr_schedule") or "constant"
    if kind not in SCHEDULES:
        raise ValueError(f"Unknown lr_schedule {kind!r}; use one of {', '.join(SCHEDULES)}")
    warmup_epochs = float(config.get("warmup_epochs") or 0)
    if warmup_epochs and kind == "constant":
        raise ValueError("warmup_epochs needs the step or cosine schedule")
    if kind == "constant" or not steps_per_epoch:
        return peak
    warmup = int(round(warmup_epochs * steps_per_epoch))
    if kind == "step":
        if config.get("lr_decay_start_epochs"):
            stepped = _held_then_stepped(config, peak, steps_per_epoch)
        else:
            stepped = keras.optimizers.schedules.ExponentialDecay(
                peak,
                decay_steps=int(config["lr_decay_epochs"]) * steps_per_epoch,
                decay_rate=float(config["lr_decay_factor"]),
                staircase=True,
            )
        return LinearWarmup(stepped, warmup) if warmup else stepped
    total = int(config["epochs"]) * steps_per_epoch
    floor = float(config.get("min_learning_rate") or 0.0)
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else peak,
        decay_steps=max(1, total - warmup),
        alpha=floor / peak if peak else 0.0,  # a rate of 0: a frozen fine-tune
        warmup_target=peak if warmup else None,
        warmup_steps=warmup,
    )


def _held_then_stepped(config: dict, peak: float, steps_per_epoch: int):
    """The peak rate for `lr_decay_start_epochs`, then x `lr_decay_factor` every
    `lr_decay_epochs` until `epochs`, never below `min_learning_rate`."""
    start, every = int(config["lr_decay_start_epochs"]), int(config["lr_decay_epochs"])
    factor, floor = float(config["lr_decay_factor"]), float(config.get("min_learning_rate") or 0)
    cuts = list(range(start, max(int(config["epochs"]), start + 1), every))
    values = [max(peak * factor**i, floor) if i else peak for i in range(len(cuts) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        [epoch * steps_per_epoch for epoch in cuts], values
    )


@keras.saving.register_keras_serializable(package="tfzoo")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """`schedule`'s rate times min(1, step / `warmup_steps`): from 0 at step 0 up to the
    wrapped curve at the end of the warm-up, then that curve unchanged (in the same
    optimizer steps, so a resumed run stays on it)."""

    def __init__(self, schedule, warmup_steps: int):
        if isinstance(schedule, dict):
            schedule = keras.optimizers.schedules.deserialize(schedule)
        self.schedule = schedule
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        rate = ops.cast(self.schedule(step), "float32")
        ramp = ops.cast(step, "float32") / float(max(1, self.warmup_steps))
        return rate * ops.minimum(ramp, 1.0)

    def get_config(self) -> dict:
        return {
            "schedule": keras.optimizers.schedules.serialize(self.schedule),
            "warmup_steps": self.warmup_steps,
        }
