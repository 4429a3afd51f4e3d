"""A TF2 SavedModel with string/JPEG inputs: b64 over REST, string tensors over gRPC, shape
errors, warmup, dynamic batching shared by both protocols, and graceful shutdown."""

from __future__ import annotations

import base64
import re
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.batching import BatchingOptions
from serving.errors import ServingError
from serving.servable import Servable
from tests.server_process import start_server
from tests.serving import tf2_model

BATCHING = """
max_batch_size { value: 8 }
batch_timeout_micros { value: 5000 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 2 }
allowed_batch_sizes: 2
allowed_batch_sizes: 4
allowed_batch_sizes: 8
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tf2")
    tf2_model.export(root / "img" / "1")
    return root


@pytest.fixture(scope="module")
def expected(models):
    loaded = tf.saved_model.load(str(models / "img" / "1"))
    fn = loaded.signatures["serving_default"]
    images = [tf2_model.jpeg(i) for i in range(4)]
    out = fn(image_bytes=tf.constant(images))
    return images, {k: v.numpy() for k, v in out.items()}


@pytest.fixture(scope="module")
def server(models, tmp_path_factory, testdata):
    cfg_dir = tmp_path_factory.mktemp("tf2cfg")
    (cfg_dir / "batching.txt").write_text(BATCHING)
    (cfg_dir / "models.config").write_text(
        "model_config_list {\n"
        f'  config {{ name: "img" base_path: "{models / "img"}" model_platform: "tensorflow" }}\n'
        "}\n"
    )
    srv = start_server(
        f"--model_config_file={cfg_dir / 'models.config'}",
        "--enable_batching",
        f"--batching_parameters_file={cfg_dir / 'batching.txt'}",
        f"--monitoring_config_file={testdata / 'monitoring_config.txt'}",
    )
    yield srv
    srv.stop()


def _grpc_predict(channel, images: list[bytes], signature: str = ""):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "img"
    request.model_spec.signature_name = signature
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return stub.Predict(request, timeout=60)


def test_jpeg_as_b64_over_rest(server, expected):
    images, want = expected
    body = {"instances": [{"b64": base64.b64encode(im).decode()} for im in images[:2]]}
    code, out = server.http("POST", "/v1/models/img:predict", body)
    assert code == 200, out
    rows = out["predictions"]
    assert [r["class_ids"] for r in rows] == want["class_ids"][:2].tolist()
    assert [r["classes"] for r in rows] == [c.decode() for c in want["classes"][:2]]
    np.testing.assert_allclose(
        [r["probabilities"] for r in rows], want["probabilities"][:2], rtol=1e-5
    )
    # web-safe base64 (rejected by TF Serving) works too
    body = {"inputs": [{"b64": base64.urlsafe_b64encode(images[0]).decode().rstrip("=")}]}
    code, out = server.http("POST", "/v1/models/img:predict", body)
    assert code == 200 and out["outputs"]["class_ids"] == [int(want["class_ids"][0])]


def test_jpeg_as_string_tensor_over_grpc(server, expected):
    images, want = expected
    with server.channel() as ch:
        response = _grpc_predict(ch, images)
    assert response.model_spec.signature_name == "serving_default"
    assert tf.make_ndarray(response.outputs["class_ids"]).tolist() == want["class_ids"].tolist()
    assert list(response.outputs["classes"].string_val) == list(want["classes"])
    np.testing.assert_allclose(
        tf.make_ndarray(response.outputs["probabilities"]), want["probabilities"], rtol=1e-5
    )


def test_wrong_shape_and_garbage_image_get_clear_errors(server):
    code, out = server.http(
        "POST", "/v1/models/img:predict",
        {"signature_name": "predict_pixels", "instances": np.zeros([1, 32, 32]).tolist()},
    )  # fmt: skip
    assert code == 400
    assert "'pixels' has shape [1, 32, 32]" in out["error"]
    assert "pixels: DT_FLOAT [-1,32,32,3]" in out["error"]
    code, out = server.http("POST", "/v1/models/img:predict", {"instances": ["not a jpeg"]})
    assert code == 400 and "image_bytes: DT_STRING [-1]" in out["error"]
    with server.channel() as ch:
        with pytest.raises(grpc.RpcError) as err:
            _grpc_predict(ch, [b"\x00\x01garbage"])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert server.http("GET", "/v1/models/img")[0] == 200


def test_warmup_replayed(server):
    """(A failing warmup fails the load: tests/serving/test_model_reload.py.)"""
    assert any("Number of warmup records read: 1" in line for line in server.lines)


def test_batching_shares_one_queue_across_grpc_and_rest(server, expected):
    images, want = expected
    failures: list[str] = []

    def client(i: int) -> None:
        k = i % 4
        for _ in range(6):
            try:
                if i % 2:
                    with server.channel() as ch:
                        ids = tf.make_ndarray(_grpc_predict(ch, [images[k]]).outputs["class_ids"])
                        got = ids.tolist()
                else:
                    body = {"instances": [{"b64": base64.b64encode(images[k]).decode()}]}
                    code, out = server.http("POST", "/v1/models/img:predict", body)
                    got = [r["class_ids"] for r in out["predictions"]] if code == 200 else out
                if got != [int(want["class_ids"][k])]:
                    failures.append(f"{i}: {got}")
            except Exception as e:  # recorded, then asserted empty
                failures.append(repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:5]
    _, text = server.http("GET", "/monitoring/prometheus/metrics")
    sizes = re.findall(
        r'processed_batch_size_bucket\{model_name="img",signature="serving_default",le="([0-9.]+)"\} (\d+)',
        text,
    )
    at_most_one = next(int(n) for le, n in sizes if float(le) == 1.0)
    total = int(
        re.search(
            r'processed_batch_size_count\{model_name="img",signature="serving_default"\} (\d+)',
            text,
        )[1]
    )
    assert total < 96 and total > at_most_one  # some requests were merged into bigger batches


def test_graceful_shutdown_finishes_in_flight_request(server):
    result = {}

    def slow_request() -> None:
        body = {"signature_name": "slow", "instances": [3000]}
        result["response"] = server.http("POST", "/v1/models/img:predict", body)

    thread = threading.Thread(target=slow_request)
    thread.start()
    time.sleep(0.5)
    assert server.stop() == 0, server.log()
    thread.join()
    assert result["response"] == (200, {"predictions": [128.0]})


def test_full_batch_queue_is_unavailable(models):
    servable = Servable("img", 1, models / "img" / "1")
    servable.batching = BatchingOptions(
        max_batch_size=1, max_enqueued_batches=1, num_batch_threads=1, batch_timeout_micros=0
    )
    sig = servable.signature("slow")
    outcomes: list[object] = []

    def call() -> None:
        try:
            outcomes.append(servable.run(sig, {"n": np.array([300], np.int32)}, ("total",)))
        except ServingError as e:
            outcomes.append(e)

    try:
        threads = [threading.Thread(target=call) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        servable.close()
    errors = [o for o in outcomes if isinstance(o, ServingError)]
    assert errors and all(
        e.code == grpc.StatusCode.UNAVAILABLE and e.http_status == 503 for e in errors
    )
    assert "queue" in errors[0].message
    assert any(isinstance(o, dict) and o["total"].tolist() == [128.0] for o in outcomes)


def test_batching_parameters_parse_and_validate(testdata):
    opts = BatchingOptions.from_text((testdata / "batching_config.txt").read_text())
    assert (opts.max_batch_size, opts.batch_timeout_micros, opts.num_batch_threads) == (128, 0, 8)
    assert BatchingOptions.from_text(BATCHING).allowed_batch_sizes == (2, 4, 8)
    with pytest.raises(ServingError, match="must match max_batch_size"):
        BatchingOptions.from_text("max_batch_size { value: 8 } allowed_batch_sizes: 4")
    with pytest.raises(ServingError, match="Invalid batching parameters"):
        BatchingOptions.from_text("max_batch_size: oops")
