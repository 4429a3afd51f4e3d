"""Plateau learning-rate decay (replayed from history on resume) and the best checkpoint."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from training import checkpoints
from training.plateau import PlateauDecay, rate_after


def test_rate_halves_after_each_epoch_without_improvement():
    values = [3.0, 2.0, 2.5, 1.9, 1.95, 1.96, 1.0]
    rates = [rate_after(values[:n], 1.0, 0.5, 0, 0.0, 0.0) for n in range(len(values) + 1)]
    assert rates == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.125, 0.125]


def test_patience_and_floor():
    values = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5]
    assert rate_after(values, 1.0, 0.5, 1, 0.0, 0.0) == 0.25  # epochs 3 and 5 decay
    assert rate_after(values, 1.0, 0.1, 0, 1e-3, 0.0) == 1e-3
    # within min_delta of the best is not an improvement
    assert rate_after([1.0, 0.99], 1.0, 0.5, 0, 0.0, 0.05) == 0.5


def _model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, "relu"), keras.layers.Dense(1)]
    )
    model.compile(keras.optimizers.SGD(learning_rate=0.01), "mse")
    return model


def _data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, x @ np.array([1.0, -2.0, 0.5, 3.0], "float32")[:, None]


def test_resumed_run_starts_at_the_rate_its_history_calls_for(tmp_path):
    model = _model()
    history = [{"epoch": 1, "val_loss": 1.0}, {"epoch": 2, "val_loss": 2.0}]  # one plateau
    decay = PlateauDecay(0.01, history, factor=0.5)
    x, y = _data(64, 1)
    logs = model.fit(x, y, epochs=1, validation_data=_data(32, 2), callbacks=[decay], verbose=0)
    assert logs.history["learning_rate"][0] == pytest.approx(0.005)


def test_best_checkpoint_holds_the_epoch_with_the_lowest_val_loss(tmp_path):
    model = _model()
    x, y = _data(256, 1)
    # labels unrelated to the inputs: val loss wanders, so the best epoch is not the last
    val_x, _ = _data(64, 2)
    val_y = np.random.default_rng(3).normal(size=(64, 1)).astype("float32") * 10
    saver = checkpoints.EpochCheckpoint(tmp_path, keep=100, monitor="val_loss")
    model.fit(x, y, epochs=8, validation_data=(val_x, val_y), callbacks=[saver], verbose=0)
    history = json.loads((tmp_path / "history.json").read_text())
    best_epoch = min(history, key=lambda h: h["val_loss"])["epoch"]
    assert [h["epoch"] for h in history if h.get("best")][-1] == best_epoch
    best = checkpoints.best_checkpoint(tmp_path / "checkpoints")
    assert best is not None
    a, b = _model(1), _model(2)
    a.load_weights(best)
    b.load_weights(tmp_path / "checkpoints" / f"ckpt-{best_epoch:04d}.weights.h5")
    for va, vb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(va, vb)


def test_no_monitor_means_no_best_checkpoint(tmp_path):
    model = _model()
    x, y = _data(64, 1)
    saver = checkpoints.EpochCheckpoint(tmp_path)
    model.fit(x, y, epochs=2, validation_data=_data(32, 2), callbacks=[saver], verbose=0)
    assert checkpoints.best_checkpoint(tmp_path / "checkpoints") is None
    assert (tmp_path / "checkpoints" / "ckpt-0002.weights.h5").exists()


def test_plateau_decay_refuses_an_optimizer_on_a_schedule():
    model = _model()
    schedule = keras.optimizers.schedules.InverseTimeDecay(0.01, 1, 1e-3)
    model.compile(keras.optimizers.SGD(learning_rate=schedule), "mse")
    x, y = _data(32, 1)
    with pytest.raises(ValueError, match="constant learning rate"):
        model.fit(x, y, epochs=1, callbacks=[PlateauDecay(0.01, [])], verbose=0)
