"""TF Serving's own test models through the official gRPC stubs and plain HTTP."""

from __future__ import annotations

import gzip
import json
import socket

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tests.server_process import start_server

MAX_MESSAGE = 1 << 20


@pytest.fixture(scope="module")
def server(testdata, tmp_path_factory):
    text = (testdata / "good_model_config.txt").read_text()
    text = text.replace(
        "${TEST_HALF_PLUS_TWO_DIR}", str(testdata / "saved_model_half_plus_two_cpu")
    )
    text = text.replace(
        "${TEST_HALF_PLUS_THREE_DIR}", str(testdata / "saved_model_half_plus_three")
    )
    cfg = tmp_path_factory.mktemp("cfg") / "models.config"
    cfg.write_text(text)
    srv = start_server(
        f"--model_config_file={cfg}",
        "--monitoring_config_file",
        str(testdata / "monitoring_config.txt"),
        f"--grpc_max_message_size={MAX_MESSAGE}",
        "--enable_grpc_healthcheck_service",
        "--rest_api_enable_cors_support",
        f"--grpc_socket_path={cfg.parent / 'grpc.sock'}",
        # tensorflow_model_server_test.py testGoodGrpcChannelArgs
        "--grpc_channel_arguments=grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb",
    )
    srv.socket_path = cfg.parent / "grpc.sock"
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture(scope="module")
def stub(server):
    with server.channel() as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _predict(stub, model, value, signature="", **spec):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for k, v in spec.items():
        setattr(
            request.model_spec, k, v
        ) if k != "version" else request.model_spec.version.SetInParent()
        if k == "version":
            request.model_spec.version.value = v
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(value, dtype=tf.float32))
    return stub.Predict(request, timeout=30)


def _examples(*xs) -> list[example_pb2.Example]:
    return [
        example_pb2.Example(
            features=feature_pb2.Features(
                feature={"x": feature_pb2.Feature(float_list=feature_pb2.FloatList(value=[x]))}
            )
        )
        for x in xs
    ]


def test_grpc_predict_half_plus_two_and_three(stub):
    response = _predict(stub, "half_plus_two", [2.0])  # shape [1] for a [-1,1] signature
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [3.0]
    assert list(response.outputs["y"].float_val) == [3.0]  # typed field, as TF Serving
    assert response.model_spec.name == "half_plus_two"
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "serving_default"
    response = _predict(stub, "half_plus_three", [[2.0], [4.0]])
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [[4.0], [5.0]]


def test_grpc_predict_output_filter(stub):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "regress_x2_to_y3"
    request.inputs["inputs"].CopyFrom(tf.make_tensor_proto([[1.0]], dtype=tf.float32))
    request.output_filter.append("outputs")
    response = stub.Predict(request, timeout=30)
    assert list(response.outputs) == ["outputs"]
    request.output_filter[:] = ["nope"]
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "output tensor alias not found in signature: nope" in err.value.details()


def test_grpc_classify_regress_multi_inference(stub):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "classify_x_to_y"
    request.input.example_list.examples.extend(_examples(2.0, 4.0))
    response = stub.Classify(request, timeout=30)
    scores = [[c.score for c in cl.classes] for cl in response.result.classifications]
    assert scores == [[3.0], [4.0]]
    assert response.model_spec.version.value == 123

    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "regress_x_to_y2"  # y2 = 0.5x + 3
    request.input.example_list.examples.extend(_examples(2.0))
    response = stub.Regress(request, timeout=30)
    assert [r.value for r in response.result.regressions] == [4.0]
    assert response.model_spec.signature_name == "regress_x_to_y2"

    request = inference_pb2.MultiInferenceRequest()
    for sig, method in (
        ("regress_x_to_y", "tensorflow/serving/regress"),
        ("classify_x_to_y", "tensorflow/serving/classify"),
    ):
        task = request.tasks.add()
        task.model_spec.name = "half_plus_two"
        task.model_spec.signature_name = sig
        task.method_name = method
    request.input.example_list.examples.extend(_examples(2.0))
    response = stub.MultiInference(request, timeout=30)
    assert response.results[0].regression_result.regressions[0].value == 3.0
    assert response.results[1].classification_result.classifications[0].classes[0].score == 3.0
    assert response.results[0].model_spec.version.value == 123


def test_grpc_metadata_and_status(server, stub, testdata):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "half_plus_two"
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, timeout=30)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(sig_map)
    assert set(sig_map.signature_def) == {
        "serving_default", "classify_x_to_y", "regress_x_to_y", "regress_x_to_y2", "regress_x2_to_y3",
    }  # fmt: skip
    assert sig_map.signature_def["serving_default"].inputs["x"].name == "x:0"
    assert response.model_spec.version.value == 123

    with server.channel() as channel:
        model_stub = model_service_pb2_grpc.ModelServiceStub(channel)
        status_req = get_model_status_pb2.GetModelStatusRequest()
        status_req.model_spec.name = "half_plus_three"
        status = model_stub.GetModelStatus(status_req, timeout=30)
        assert [(s.version, s.state) for s in status.model_version_status] == [
            (123, get_model_status_pb2.ModelVersionStatus.AVAILABLE)
        ]
        status_req.model_spec.name = "nope"
        with pytest.raises(grpc.RpcError) as err:
            model_stub.GetModelStatus(status_req, timeout=30)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_rest_predict_row_and_columnar(server):
    status, body = server.http(
        "POST", "/v1/models/half_plus_two:predict", {"instances": [2.0, 3.0, 4.0]}
    )
    assert (status, body) == (200, {"predictions": [3.0, 3.5, 4.0]})
    status, body = server.http(
        "POST", "/v1/models/half_plus_three/versions/123:predict", {"inputs": {"x": [[2.0], [3.0]]}}
    )
    assert (status, body) == (200, {"outputs": [[4.0], [4.5]]})
    status, body = server.http("POST", "/v1/models/half_plus_two:predict", {"inputs": [1.0]})
    assert (status, body) == (200, {"outputs": [2.5]})


def test_rest_output_filter_and_gzip(server):
    body = {"signature_name": "regress_x2_to_y3", "inputs": [[2.0]], "output_filter": ["outputs"]}
    status, out = server.http("POST", "/v1/models/half_plus_two:predict", body)
    assert (status, out) == (200, {"outputs": [[4.0]]})  # y3 = 0.5 x + 3
    raw = gzip.compress(json.dumps({"instances": [2.0]}).encode())
    status, out = server.http(
        "POST", "/v1/models/half_plus_two:predict", raw, {"Content-Encoding": "gzip"}
    )
    assert (status, out) == (200, {"predictions": [3.0]})


def test_rest_classify_regress(server):
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}, {"x": 4.0}]}
    status, out = server.http("POST", "/v1/models/half_plus_two:classify", body)
    assert (status, out) == (200, {"results": [[["", 3.0]], [["", 4.0]]]})
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}], "context": {"z": "a"}}
    status, out = server.http("POST", "/v1/models/half_plus_two:regress", body)
    assert (status, out) == (200, {"results": [3.0]})


def test_rest_metadata_matches_golden(server, testdata):
    status, body = server.http("GET", "/v1/models/half_plus_two/metadata")
    assert status == 200
    golden = json.loads((testdata / "half_plus_two_model_metadata.json").read_text())
    assert body["metadata"] == golden["metadata"]
    assert body["model_spec"] == {**golden["model_spec"], "name": "half_plus_two"}


def test_rest_status(server):
    status, body = server.http("GET", "/v1/models/half_plus_two")
    assert status == 200
    assert body == {
        "model_version_status": [
            {
                "version": "123",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    status, body = server.http("GET", "/v1/models/half_plus_two/versions/123")
    assert status == 200 and body["model_version_status"][0]["version"] == "123"


BAD_REST = [
    ("/v1/models/half_plus_two:predict", b'{"instances": [1.0', 400, "JSON Parse error"),
    ("/v1/models/half_plus_two:predict", b"", 400, "JSON Parse error"),
    ("/v1/models/half_plus_two:predict", b"{}", 400, "exactly one of 'instances'"),
    ("/v1/models/half_plus_two:predict", b'{"instances": []}', 400, "non-empty"),
    ("/v1/models/half_plus_two:predict", b'{"instances": ["a"]}', 400, "expects DT_FLOAT values but got strings"),
    ("/v1/models/half_plus_two:predict", b'{"instances": [[1.0], [1.0, 2.0]]}', 400, "ragged"),
    ("/v1/models/half_plus_two:predict", b'{"inputs": {"z": [1.0]}}', 400, "Sent extra: {z}. Missing but required: {x}"),
    ("/v1/models/nope:predict", b'{"instances": [1.0]}', 404, "Servable not found for request: Latest(nope)"),
    ("/v1/models/half_plus_two/versions/99:predict", b'{"instances": [1.0]}', 404, "Specific(half_plus_two, 99)"),
    ("/v1/models/half_plus_two/labels/foo:predict", b'{"instances": [1.0]}', 400, "Unrecognized servable version label: foo"),
    ("/v1/models/half_plus_two:predict", b'{"instances": [1.0], "signature_name": "zz"}', 400, 'Serving signature name: \\"zz\\" not found'),
    ("/v1/models/half_plus_two:classify", b'{"examples": [{"x": 1.0}]}', 400, "Expected classify signature method_name"),
    # http_rest_api_handler.cc ProcessRequest: anything under /v1/ it cannot parse is
    # INVALID_ARGUMENT "Malformed request: POST /v1/models:predict" (400)
    ("/v1/models:predict", b"{}", 400, "Malformed request: POST /v1/models:predict"),
    ("/v1/models/half_plus_two:explain", b"{}", 400, "Malformed request"),
    # kPredictionApiGegex: versions are digits; the verb is compared case-sensitively
    ("/v1/models/half_plus_two/versions/abc:predict", b"{}", 400, "Malformed request"),
    ("/v1/models/half_plus_two:PREDICT", b'{"instances": [1.0]}', 400, "Malformed request"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "body", "code", "message"), BAD_REST)
def test_rest_bad_requests(server, path, body, code, message):
    status, out = server.http("POST", path, body)
    assert status == code, out
    assert message in json.dumps(out) if '\\"' in message else message in out["error"]
    assert server.http("POST", "/v1/models/half_plus_two:predict", {"instances": [2.0]})[0] == 200


def test_rest_oversize_and_missing_model_name(server):
    big = b'{"instances": [' + b"1.0," * (MAX_MESSAGE // 4) + b"1.0]}"
    status, out = server.http("POST", "/v1/models/half_plus_two:predict", big)
    assert status == 413 and "exceeds the limit" in out["error"]
    status, out = server.http("GET", "/v1/models")
    assert (status, out) == (400, {"error": "Missing model name in request."})


def test_grpc_bad_requests(stub):
    cases = [
        (dict(model="nope", value=[1.0]), grpc.StatusCode.NOT_FOUND, "Latest(nope)"),
        (dict(model="half_plus_two", value=[1.0], version=99), grpc.StatusCode.NOT_FOUND, "Specific"),
        (dict(model="half_plus_two", value=[1.0], version_label="x"), grpc.StatusCode.INVALID_ARGUMENT, "label"),
        (dict(model="half_plus_two", value=[1.0], signature="zz"), grpc.StatusCode.FAILED_PRECONDITION, "zz"),
    ]  # fmt: skip
    for kwargs, code, message in cases:
        with pytest.raises(grpc.RpcError) as err:
            _predict(stub, **kwargs)
        assert err.value.code() == code, kwargs
        assert message in err.value.details()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0]], dtype=tf.float64))
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "dtype float64" in err.value.details() and "x: DT_FLOAT" in err.value.details()
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.zeros(MAX_MESSAGE // 2, np.float32)))
    with pytest.raises(grpc.RpcError) as err:
        stub.Predict(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _predict(stub, "half_plus_two", [2.0]).outputs["y"].float_val == [3.0]


def test_grpc_garbage_then_healthy(server, stub):
    with socket.create_connection(("127.0.0.1", server.grpc_port), timeout=10) as sock:
        sock.sendall(b"\x00\xffGARBAGE not http2 at all" * 100)
        try:
            sock.recv(1024)
        except OSError:
            pass
    with server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=30
        )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert _predict(stub, "half_plus_two", [2.0]).outputs["y"].float_val == [3.0]


def test_health_service_names(server):
    """server.cc:415-424: with --enable_grpc_healthcheck_service, gRPC's default health
    service answers "" and the short names "ModelService" and "PredictionService"."""
    with server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "ModelService", "PredictionService"):
            response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
            assert response.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as err:
            health.Check(
                health_pb2.HealthCheckRequest(service="tensorflow.serving.PredictionService"),
                timeout=30,
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpc_over_unix_socket(server):
    """server.cc:383-389 listens on `unix:<--grpc_socket_path>` too; TF Serving's own
    testPredictUDS predicts half_plus_two through it."""
    with grpc.insecure_channel(f"unix:{server.socket_path}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert _predict(stub, "half_plus_two", [2.0]).outputs["y"].float_val == [3.0]


def _metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_prometheus_metric_labels(server, stub):
    """Labels as servables/tensorflow/util.cc declares them and as the front ends record them:
    gRPC Predict (prediction_service_impl.cc:53-59) counts every request and times the
    successful ones under API="Predict"; REST (http_server.cc:194-201) under the URL's verb;
    MultiInference records request_example_counts{model} (multi_inference.cc:98, util.cc:54-63)."""
    name = ":tensorflow:serving:request_latency_count"
    grpc_ok = f'{name}{{model_name="half_plus_three",API="Predict",entrypoint="GRPC"}}'
    rest_ok = f'{name}{{model_name="half_plus_three",API="predict",entrypoint="REST"}}'
    failed = ':tensorflow:serving:request_count{model_name="half_plus_three",status="NOT_FOUND"}'
    _, before = server.http("GET", "/monitoring/prometheus/metrics")
    _predict(stub, "half_plus_three", [1.0])
    with pytest.raises(grpc.RpcError):
        _predict(stub, "half_plus_three", [1.0], version=7)
    server.http("POST", "/v1/models/half_plus_three:predict", {"instances": [1.0]})
    request = inference_pb2.MultiInferenceRequest()
    task = request.tasks.add(method_name="tensorflow/serving/regress")
    task.model_spec.name = "half_plus_two"
    task.model_spec.signature_name = "regress_x_to_y"
    request.input.example_list.examples.extend(_examples(1.0, 2.0, 3.0))
    stub.MultiInference(request, timeout=30)
    status, text = server.http("GET", "/monitoring/prometheus/metrics")
    assert status == 200
    assert _metric(text, grpc_ok) == _metric(before, grpc_ok) + 1  # the failed one not timed
    assert _metric(text, rest_ok) == _metric(before, rest_ok) + 1
    assert _metric(text, failed) == _metric(before, failed) + 1
    assert 'API="predict",entrypoint="GRPC"' not in text
    assert (
        _metric(text, ':tensorflow:serving:request_example_count_total{model="half_plus_two"}') >= 3
    )
    assert ':tensorflow:serving:request_example_counts_bucket{model="half_plus_two",le="4"}' in text
    assert (
        ':tensorflow:serving:runtime_latency_count{model_name="half_plus_three",API="Predict",runtime="TF1"}'
        in text
    )
    assert ":tensorflow:cc:saved_model:load_attempt_count" in text


def test_classify_and_regress_count_their_examples(server, stub):
    """classifier.cc / regressor.cc RunClassify / RunRegress record the request's example
    count too, over gRPC and REST alike (util.cc RecordRequestExampleCount)."""
    total = ':tensorflow:serving:request_example_count_total{model="half_plus_two"}'
    _, before = server.http("GET", "/monitoring/prometheus/metrics")
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "classify_x_to_y"
    request.input.example_list.examples.extend(_examples(1.0, 2.0))
    stub.Classify(request, timeout=30)
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "regress_x_to_y"
    request.input.example_list.examples.extend(_examples(1.0, 2.0, 3.0))
    stub.Regress(request, timeout=30)
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}] * 4}
    assert server.http("POST", "/v1/models/half_plus_two:regress", body)[0] == 200
    _, after = server.http("GET", "/monitoring/prometheus/metrics")
    assert _metric(after, total) == _metric(before, total) + 2 + 3 + 4


def _raw_http(server, request: bytes) -> tuple[int, dict, bytes]:
    """Send raw bytes; (status, headers, body) of the answer."""
    import http.client

    sock = socket.create_connection(("127.0.0.1", server.rest_port), timeout=30)
    try:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        sock.close()


def test_rest_chunked_request_body(server):
    """evhttp reads a chunked body in full (http_server.cc ProcessRequest reads every
    chunk); http.client sends an iterable body chunked."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    try:
        parts = [b'{"instances"', b": [2.0, ", b"4.0]}"]
        conn.request(
            "POST", "/v1/models/half_plus_two:predict", body=iter(parts), encode_chunked=True
        )
        response = conn.getresponse()
        assert (response.status, json.loads(response.read())) == (200, {"predictions": [3.0, 4.0]})
    finally:
        conn.close()
    body = b'{"instances": [6.0]}'
    status, _, out = _raw_http(
        server,
        b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: x\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + b"%x\r\n%s\r\n0\r\n\r\n"
        % (len(body), body),
    )
    assert (status, json.loads(out)) == (200, {"predictions": [5.0]})


def test_rest_cors_and_options(server):
    """http_server.cc:170-186: OPTIONS is a CORS preflight, OK when the Origin header is
    http(s):// else FAILED_PRECONDITION (400), with an empty body; with
    --rest_api_enable_cors_support every answer carries http_rest_api_util.cc AddCORSHeaders."""
    cors = {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Allow-Methods": "POST, GET",
        "Access-Control-Allow-Headers": "Content-Type",
    }
    path = b"/v1/models/half_plus_two:predict"
    status, headers, body = _raw_http(
        server,
        b"OPTIONS " + path + b" HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n"
        b"Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n",
    )
    assert (status, body) == (200, b"")
    assert cors.items() <= headers.items()
    status, headers, body = _raw_http(
        server, b"OPTIONS " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert (status, body) == (400, b"")
    assert cors.items() <= headers.items()
    for request in (
        b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 18\r\n"
        b"Connection: close\r\n\r\n" + b'{"instances": [2]}',
        b"GET /v1/models/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ):
        status, headers, _ = _raw_http(server, request)
        assert status in (200, 404)
        assert cors.items() <= headers.items()


def test_model_server_config_parses(testdata):
    from serving.repository import parse_model_server_config

    config = parse_model_server_config((testdata / "good_model_config.txt").read_text())
    assert [m.name for m in config.model_config_list.config] == ["half_plus_two", "half_plus_three"]
    assert text_format.MessageToString(config).count("base_path") == 2
