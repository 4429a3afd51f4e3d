"""The shared learning-rate schedules: their curves, and clear errors for bad configs."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from training.schedules import LinearWarmup, learning_rate_schedule


def _rates(schedule, steps):
    return [float(keras.ops.convert_to_numpy(schedule(step))) for step in steps]


def test_cosine_decays_to_the_floor_over_the_epochs():
    config = {"learning_rate": 0.01, "lr_schedule": "cosine", "epochs": 3,
              "min_learning_rate": 2e-4}  # fmt: skip
    rates = _rates(learning_rate_schedule(config, 10), (0, 15, 30, 60))
    np.testing.assert_allclose(rates, [0.01, 0.0051, 0.0002, 0.0002], rtol=0.02)


def test_cosine_warms_up_linearly_first():
    config = {"learning_rate": 0.1, "lr_schedule": "cosine", "epochs": 10, "warmup_epochs": 2}
    rates = _rates(learning_rate_schedule(config, 5), (0, 5, 10, 50))
    np.testing.assert_allclose(rates, [0.0, 0.05, 0.1, 0.0], atol=1e-6)


def test_step_multiplies_every_n_epochs():
    config = {"learning_rate": 0.01, "lr_schedule": "step", "lr_decay_epochs": 8,
              "lr_decay_factor": 0.96}  # fmt: skip
    rates = _rates(learning_rate_schedule(config, 10), (0, 79, 80, 160))
    np.testing.assert_allclose(rates, [0.01, 0.01, 0.0096, 0.009216], rtol=1e-5)


def test_constant_and_unknown_steps_give_the_peak_rate():
    assert learning_rate_schedule({"learning_rate": 0.01}, 10) == pytest.approx(0.01)
    cosine = {"learning_rate": 0.01, "lr_schedule": "cosine", "epochs": 3}
    assert learning_rate_schedule(cosine, None) == pytest.approx(0.01)  # evaluate / export


def test_a_rate_of_zero_stays_zero():  # a frozen fine-tune
    config = {"learning_rate": 0.0, "lr_schedule": "cosine", "epochs": 2,
              "min_learning_rate": 1e-5}  # fmt: skip
    assert _rates(learning_rate_schedule(config, 4), (0, 4, 8)) == [0.0, 0.0, 0.0]


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="lr_schedule"):
        learning_rate_schedule({"learning_rate": 0.01, "lr_schedule": "linear"}, 10)
    with pytest.raises(ValueError, match="warmup_epochs"):
        learning_rate_schedule({"learning_rate": 0.01, "lr_schedule": "constant",
                                "warmup_epochs": 1}, 10)  # fmt: skip


def test_step_can_hold_the_peak_first_and_stops_at_the_floor():
    config = {"learning_rate": 0.01, "lr_schedule": "step", "lr_decay_start_epochs": 3,
              "lr_decay_epochs": 1, "lr_decay_factor": 0.5, "epochs": 6,
              "min_learning_rate": 0.002}  # fmt: skip
    rates = _rates(learning_rate_schedule(config, 10), (0, 30, 31, 41, 51, 80))
    np.testing.assert_allclose(rates, [0.01, 0.01, 0.005, 0.0025, 0.002, 0.002], rtol=1e-5)


HELD_THEN_HALVED = {"learning_rate": 0.01, "lr_schedule": "step", "lr_decay_start_epochs": 3,
                    "lr_decay_epochs": 1, "lr_decay_factor": 0.5, "epochs": 6,
                    "min_learning_rate": 0.002, "warmup_epochs": 1}  # fmt: skip


def test_step_warms_up_linearly_then_holds_and_steps_at_the_same_epochs():
    schedule = learning_rate_schedule(HELD_THEN_HALVED, 10)
    rates = _rates(schedule, (0, 1, 5, 10, 20, 30, 31, 41, 51, 80))
    np.testing.assert_allclose(
        rates, [0.0, 0.001, 0.005, 0.01, 0.01, 0.01, 0.005, 0.0025, 0.002, 0.002], atol=1e-7
    )
    # without the warm-up, the curve after it is unchanged
    plain = learning_rate_schedule({**HELD_THEN_HALVED, "warmup_epochs": 0}, 10)
    assert _rates(plain, (10, 20, 30, 31, 41, 51, 80)) == pytest.approx(rates[3:])


def test_step_without_a_hold_warms_up_too():
    config = {"learning_rate": 0.01, "lr_schedule": "step", "lr_decay_epochs": 2,
              "lr_decay_factor": 0.5, "warmup_epochs": 0.5}  # fmt: skip
    rates = _rates(learning_rate_schedule(config, 10), (0, 2, 5, 19, 20))
    np.testing.assert_allclose(rates, [0.0, 0.004, 0.01, 0.01, 0.005], atol=1e-7)


def test_step_warm_up_round_trips_through_its_config():
    schedule = learning_rate_schedule(HELD_THEN_HALVED, 10)
    assert isinstance(schedule, LinearWarmup)
    config = keras.optimizers.schedules.serialize(schedule)
    again = keras.optimizers.schedules.deserialize(config)
    assert isinstance(again, LinearWarmup) and again.warmup_steps == 10
    steps = (0, 3, 10, 31, 41, 80)
    assert _rates(again, steps) == pytest.approx(_rates(schedule, steps))
    direct = LinearWarmup.from_config(schedule.get_config())
    assert _rates(direct, steps) == pytest.approx(_rates(schedule, steps))
    # and inside an optimizer's config, as a saved model holds it
    optimizer = keras.optimizers.Adam(learning_rate=schedule)
    restored = keras.optimizers.Adam.from_config(optimizer.get_config())
    assert isinstance(restored._learning_rate, LinearWarmup)
    assert _rates(restored._learning_rate, steps) == pytest.approx(_rates(schedule, steps))
