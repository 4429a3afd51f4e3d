"""Config reloads that go wrong, and request logs, on one server: a model that cannot load is
retried, then answered as an error while the others keep serving; a failing warmup fails its
load; and a request log taken under load replays as a warmup file.

Sources (tensorflow/serving at 9d981c5): server_core.cc ReloadConfig (lines 476-547) and
WaitUntilModelsAvailable (328-365); loader_harness.cc Load (74-110) with util/retrier.cc Retry
(27-53); model_service_impl.cc HandleReloadConfigRequest (errors in the response's status);
core/server_request_logger.cc + config/logging_config.proto (per-model logging_config,
sampling_rate); servables/tensorflow/saved_model_warmup_util.cc (warmup records are
PredictionLogs; a failing one fails the load).
"""

from __future__ import annotations

import shutil
import threading
import time

import grpc
import pytest
import tensorflow as tf
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from serving.layout import WARMUP_PATH
from tests.server_process import start_server
from tests.serving import tf2_model
from tests.serving.conftest import copy_model, wait_for

RETRIES = 2


@pytest.fixture(scope="module")
def env(testdata, tmp_path_factory):
    root = tmp_path_factory.mktemp("reload")
    hp2 = root / "hp2"
    hp2.mkdir()
    copy_model(testdata / "saved_model_half_plus_two_cpu" / "00000123", hp2 / "123")
    broken = root / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    tf2_model.export(root / "badwarm" / "1", warmup_input="not_an_input")
    time.sleep(0.6)  # versions must settle before the repository offers them
    srv = start_server(
        "--model_name=hp2",
        f"--model_base_path={hp2}",
        f"--max_num_load_retries={RETRIES}",
        "--load_retry_interval_micros=100000",
    )
    with srv.channel() as channel:
        yield {"server": srv, "root": root, "channel": channel, "testdata": testdata}
    assert srv.stop() == 0, srv.log()


def _config(env, *names: str, logging: dict | None = None):
    config = model_server_config_pb2.ModelServerConfig()
    for name in names:
        model = config.model_config_list.config.add(
            name=name, base_path=str(env["root"] / name), model_platform="tensorflow"
        )
        if logging and name in logging:
            collector_type, prefix, rate = logging[name]
            model.logging_config.log_collector_config.type = collector_type
            model.logging_config.log_collector_config.filename_prefix = prefix
            model.logging_config.sampling_config.sampling_rate = rate
    return config


def _reload(env, config) -> model_management_pb2.ReloadConfigResponse:
    stub = model_service_pb2_grpc.ModelServiceStub(env["channel"])
    return stub.HandleReloadConfigRequest(
        model_management_pb2.ReloadConfigRequest(config=config), timeout=120
    )


def _predict(env, model: str, x: float) -> float:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[x]], dtype=tf.float32))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(env["channel"])
    return stub.Predict(request, timeout=30).outputs["y"].float_val[0]


def _status(env, model: str):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    stub = model_service_pb2_grpc.ModelServiceStub(env["channel"])
    return stub.GetModelStatus(request, timeout=30).model_version_status


def test_reload_with_models_that_cannot_load(env):
    """ReloadConfig waits for the new models (WaitUntilModelsAvailable) and answers UNKNOWN
    "N model(s) did not become available: {{<id>} due to error: ...}, }" after each load was
    retried max_num_load_retries times; the model already serving keeps serving, and the
    failed ones report END with their error (get_model_status_impl.cc)."""
    server = env["server"]
    start = len(server.lines)
    response = _reload(env, _config(env, "hp2", "broken", "badwarm"))
    assert response.status.error_code == grpc.StatusCode.UNKNOWN.value[0]
    message = response.status.error_message
    assert message.startswith("2 model(s) did not become available: {")
    assert "{{name: broken version: 1} due to error: UNKNOWN: Failed to load version 1" in message
    assert "{{name: badwarm version: 1} due to error: " in message
    assert "warmup failed" in message and "not_an_input" in message
    expected = [
        f"Retrying of Loading servable: {{name: {name} version: 1}} {what}"
        for name in ("broken", "badwarm")
        for what in [*(f"retry: {attempt}" for attempt in range(1, RETRIES + 1)), "exhausted"]
    ]

    def missing() -> list[str]:
        # the server's output reaches us through a pipe, possibly after the gRPC answer
        log = "\n".join(server.lines[start:])
        return [line for line in expected if line not in log]

    deadline = time.monotonic() + 10
    while missing() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert missing() == []
    assert _predict(env, "hp2", 2.0) == 3.0
    (status,) = _status(env, "broken")
    assert status.state == get_model_status_pb2.ModelVersionStatus.END
    assert "Failed to load version 1" in status.status.error_message
    # a config without them is fine again
    assert _reload(env, _config(env, "hp2")).status.error_code == 0


def test_unknown_log_collector_is_refused(env):
    """log_collector.cc Create: NOT_FOUND "Cannot find LogCollector::Factory for type: ..."."""
    response = _reload(env, _config(env, "hp2", logging={"hp2": ("nope", "/tmp/x", 1.0)}))
    assert response.status.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert "Cannot find LogCollector::Factory for type: nope" in response.status.error_message
    assert _predict(env, "hp2", 2.0) == 3.0


def _examples(*xs):
    return [
        example_pb2.Example(
            features=feature_pb2.Features(
                feature={"x": feature_pb2.Feature(float_list=feature_pb2.FloatList(value=[x]))}
            )
        )
        for x in xs
    ]


def test_request_log_taken_under_load_replays_as_warmup(env, tmp_path):
    """Every request to a model with sampling_rate 1 is logged as a PredictionLog (predict
    over gRPC and REST, classify, regress); the log file, copied into a new version's
    assets.extra/tf_serving_warmup_requests, is replayed when that version loads."""
    server = env["server"]
    prefix = str(tmp_path / "logs" / "hp2")
    config = _config(env, "hp2", logging={"hp2": ("tfrecord", prefix, 1.0)})
    assert _reload(env, config).status.error_code == 0
    stub = prediction_service_pb2_grpc.PredictionServiceStub(env["channel"])
    failures: list[str] = []
    per_thread = 5

    def client(i: int) -> None:
        for j in range(per_thread):
            try:
                if i % 4 == 0:
                    assert _predict(env, "hp2", float(j)) == j / 2 + 2
                elif i % 4 == 1:
                    code, out = server.http(
                        "POST", "/v1/models/hp2:predict", {"instances": [[float(j)]]}
                    )
                    assert (code, out) == (200, {"predictions": [[j / 2 + 2]]})
                elif i % 4 == 2:
                    request = classification_pb2.ClassificationRequest()
                    request.model_spec.name = "hp2"
                    request.model_spec.signature_name = "classify_x_to_y"
                    request.input.example_list.examples.extend(_examples(float(j)))
                    stub.Classify(request, timeout=30)
                else:
                    request = regression_pb2.RegressionRequest()
                    request.model_spec.name = "hp2"
                    request.model_spec.signature_name = "regress_x_to_y"
                    request.input.example_list.examples.extend(_examples(float(j)))
                    stub.Regress(request, timeout=30)
            except Exception as e:  # recorded, then asserted empty
                failures.append(repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    (log_file,) = (tmp_path / "logs").glob("hp2-*.tfrecord")
    records = [
        prediction_log_pb2.PredictionLog.FromString(r)
        for r in tf.compat.v1.io.tf_record_iterator(str(log_file))
    ]
    assert len(records) == 8 * per_thread
    kinds = {r.WhichOneof("log_type") for r in records}
    assert kinds == {"predict_log", "classify_log", "regress_log"}
    assert all(r.log_metadata.model_spec.name == "hp2" for r in records)
    assert all(r.log_metadata.sampling_config.sampling_rate == 1.0 for r in records)

    replayed = env["root"] / "replayed"
    copy_model(env["testdata"] / "saved_model_half_plus_two_cpu" / "00000123", replayed / "1")
    (replayed / "1" / WARMUP_PATH).parent.mkdir()
    shutil.copy(log_file, replayed / "1" / WARMUP_PATH)
    time.sleep(0.6)
    start = len(server.lines)
    assert _reload(env, _config(env, "hp2", "replayed")).status.error_code == 0
    wait_for(
        lambda: any(
            f"Number of warmup records read: {len(records)}." in line
            for line in server.lines[start:]
        ),
        timeout=10,
    )
    assert _predict(env, "replayed", 4.0) == 4.0
