"""Which runtime a SavedModel gets: a session (as TF Serving) when its import restores every
variable and it declares no generator, else TF2 eager signature functions; both give the same
answers."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from serving import inference
from serving.cost import write_costs
from serving.servable import Servable
from training.export import track_keras_variables


def _save(path, track: bool) -> np.ndarray:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, kernel_initializer="ones")])
    module = tf.Module()
    module.model = model
    if track:
        track_keras_variables(module)

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def serve(x):
        return {"y": module.model(x)}

    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    return x, model(x).numpy()


def assert_runs_in(path, runtime: str, x: np.ndarray, expected: np.ndarray) -> None:
    """The SavedModel at `path` loads into `runtime` and answers `expected` for `x`."""
    servable = Servable("m", 1, path)
    try:
        assert servable.runtime == runtime
        _, out = inference.predict(servable, "", {"x": x})
        np.testing.assert_allclose(out["y"], expected, atol=1e-6)
    finally:
        servable.close()


def test_keras_export_with_tracked_variables_runs_in_a_session(tmp_path):
    x, expected = _save(tmp_path / "1", track=True)
    assert_runs_in(tmp_path / "1", "session", x, expected)


def test_keras_export_the_session_cannot_restore_falls_back_to_eager(tmp_path):
    x, expected = _save(tmp_path / "1", track=False)
    assert_runs_in(tmp_path / "1", "eager", x, expected)


def test_a_model_that_declares_a_generator_runs_its_functions(tmp_path):
    """A generating signature must be cancellable, which a session run is not: a model that
    declares one (serving.cost) runs its TF2 signature functions, with the same answers."""
    x, expected = _save(tmp_path / "1", track=True)
    write_costs(tmp_path / "1", {"serving_default": {"inputs": {}, "new_tokens": 8}})
    assert_runs_in(tmp_path / "1", "eager", x, expected)
