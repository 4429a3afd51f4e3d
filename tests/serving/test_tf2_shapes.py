"""TF2 signatures are as lenient as TF Serving: an input of shape [k] sent to a signature declared
[-1, k] is handed to the graph (TF Serving's own tests send x of shape [1] to [-1, 1] and expect
3.0); when the graph itself cannot take it, the answer is a clear INVALID_ARGUMENT, not a crash."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf

from serving import inference
from serving.batching import BatchingOptions
from serving.errors import ServingError
from serving.servable import Servable


class HalfPlusTwo(tf.Module):
    """TF2 twin of TF Serving's half_plus_two, plus a signature whose graph needs rank 2."""

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def half_plus_two(self, x):
        return {"y": 0.5 * x + 2.0}

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def row_sums(self, x):
        return {"y": tf.matmul(x, tf.ones([3, 1]))}


@pytest.fixture(scope="module", params=["direct", "batching"])
def servable(request, tmp_path_factory):
    path: Path = tmp_path_factory.mktemp("tf2shapes") / "1"
    module = HalfPlusTwo()
    tf.saved_model.save(
        module,
        str(path),
        signatures={"serving_default": module.half_plus_two, "row_sums": module.row_sums},
    )
    loaded = Servable("hp2", 1, path)
    if request.param == "batching":
        loaded.batching = BatchingOptions(max_batch_size=8, num_batch_threads=1)
    yield loaded
    loaded.close()


def test_rank_1_input_to_declared_minus_1_by_1_reaches_the_graph(servable):
    _, out = inference.predict(servable, "", {"x": np.array([2.0], np.float32)})
    assert out["y"].tolist() == [3.0]
    _, out = inference.predict(servable, "", {"x": np.array([[2.0], [4.0]], np.float32)})
    assert out["y"].tolist() == [[3.0], [4.0]]


def test_shape_the_graph_refuses_is_a_clear_invalid_argument(servable):
    with pytest.raises(ServingError) as err:
        inference.predict(servable, "row_sums", {"x": np.array([1.0, 2.0, 3.0], np.float32)})
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'x' has shape [3] but x: DT_FLOAT [-1,3]" in err.value.message
    assert "Graph execution error" not in err.value.message
    _, out = inference.predict(servable, "row_sums", {"x": np.ones([2, 3], np.float32)})
    assert out["y"].tolist() == [[3.0], [3.0]]
