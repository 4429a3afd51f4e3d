"""The asynchronous front ends: requests waiting for a batch hold no thread, so batches grow
past the number of worker threads (the old thread-per-request front end capped every batch at
--grpc_max_threads / --rest_api_num_threads), and the batching metrics show it."""

from __future__ import annotations

import http.client
import json
import re
import threading

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.server_process import start_server

THREADS = 2  # worker threads per front end
CLIENTS = 32
BATCHING = """
max_batch_size { value: 32 }
batch_timeout_micros { value: 300000 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 1 }
allowed_batch_sizes: 8
allowed_batch_sizes: 32
"""
METRIC = ":tensorflow:serving:batching_session:"


@pytest.fixture(scope="module")
def server(testdata, tmp_path_factory):
    cfg = tmp_path_factory.mktemp("batching-front")
    (cfg / "batching.txt").write_text(BATCHING)
    (cfg / "monitoring.txt").write_text('prometheus_config { enable: true, path: "/metrics" }\n')
    srv = start_server(
        "--model_name=half",
        f"--model_base_path={testdata / 'saved_model_half_plus_two_cpu'}",
        "--enable_batching",
        f"--batching_parameters_file={cfg / 'batching.txt'}",
        f"--monitoring_config_file={cfg / 'monitoring.txt'}",
        f"--grpc_max_threads={THREADS}",
        f"--rest_api_num_threads={THREADS}",
    )
    yield srv
    srv.stop()


def histogram(text: str, name: str) -> dict[float, int]:
    """upper bound -> cumulative count of one batching histogram (model half)."""
    pattern = rf'{re.escape(METRIC + name)}_bucket\{{model_name="half",signature="serving_default",le="([^"]+)"\}} (\d+)'
    return {float(le): int(n) for le, n in re.findall(pattern, text)}


def batches(text: str) -> int:
    """How many batches have run (processed_batch_size's count)."""
    return max(histogram(text, "processed_batch_size").values(), default=0)


def metrics_text(server) -> str:
    status, text = server.http("GET", "/metrics")
    assert status == 200
    return text


def test_grpc_batches_grow_past_the_worker_threads(server):
    before = batches(metrics_text(server))
    values = np.arange(CLIENTS, dtype=np.float32)
    with server.channel() as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        calls = []
        for v in values:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "half"
            # x is declared [-1, 1]: one row each, so that requests batch
            request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[v]], np.float32)))
            calls.append(stub.Predict.future(request, 60))
        answers = [tf.make_ndarray(c.result().outputs["y"]).tolist() for c in calls]
    assert answers == [[[v / 2 + 2]] for v in values]
    text = metrics_text(server)
    # rows per batch (padding aside): more than the threads could ever have held
    assert CLIENTS / (batches(text) - before) > THREADS, text
    # 32 rows of 1: no request is counted twice, and each ran in some batch
    inputs = histogram(text, "input_batch_size")
    assert inputs[1.0] >= CLIENTS
    assert re.search(rf"{re.escape(METRIC)}queuing_latency_count\{{[^}}]*\}} (\d+)", text)


def test_rest_batches_grow_past_the_worker_threads(server):
    before = batches(metrics_text(server))
    answers: dict[int, object] = {}
    barrier = threading.Barrier(CLIENTS)

    def call(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=60)
        body = json.dumps({"instances": [[float(i)]]})
        barrier.wait()
        conn.request("POST", "/v1/models/half:predict", body)
        response = conn.getresponse()
        answers[i] = (response.status, json.loads(response.read()))
        conn.close()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == {i: (200, {"predictions": [[i / 2 + 2]]}) for i in range(CLIENTS)}
    text = metrics_text(server)
    assert CLIENTS / (batches(text) - before) > THREADS, text
    # every batch records its padding up to an allowed size (8 or 32), at most 24 rows
    padding = histogram(text, "padding_size")
    assert max(padding.values()) == max(histogram(text, "processed_batch_size").values())
    assert padding[32.0] == max(padding.values())
