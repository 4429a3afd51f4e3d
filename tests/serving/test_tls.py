"""TLS: gRPC through --ssl_config_file (TF Serving's SSLConfig: server_key, server_cert,
custom_ca, client_verify; server.cc BuildServerCredentials, lines 117-149, and
config/ssl_config.proto) and REST through the zoo's --rest_api_ssl_config_file (the same
format; TF Serving has no TLS on REST, its #1503). Certificates are made in the test.
"""

from __future__ import annotations

import http.client
import json
import ssl

import grpc
import pytest
import tensorflow as tf
import trustme
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.server_process import start_server


def _ssl_config(path, key: str, cert: str, ca: str = "", client_verify: bool = False):
    def quoted(text: str) -> str:
        return json.dumps(text)  # a JSON string is a valid text-proto string literal here

    lines = [f"server_key: {quoted(key)}", f"server_cert: {quoted(cert)}"]
    if ca:
        lines.append(f"custom_ca: {quoted(ca)}")
    if client_verify:
        lines.append("client_verify: true")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def tls(testdata, tmp_path_factory):
    root = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server_cert = ca.issue_cert("localhost", "127.0.0.1")
    key = server_cert.private_key_pem.bytes().decode()
    chain = "".join(blob.bytes().decode() for blob in server_cert.cert_chain_pems)
    grpc_cfg = _ssl_config(root / "grpc_ssl.txt", key, chain)
    client = ca.issue_cert("client@example")
    rest_cfg = _ssl_config(
        root / "rest_ssl.txt", key, chain, ca.cert_pem.bytes().decode(), client_verify=True
    )
    srv = start_server(
        "--model_name=half_plus_two",
        f"--model_base_path={testdata / 'saved_model_half_plus_two_cpu'}",
        f"--ssl_config_file={grpc_cfg}",
        f"--rest_api_ssl_config_file={rest_cfg}",
    )
    yield {"server": srv, "ca": ca, "client": client, "root": root}
    srv.stop()


def _request() -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[2.0]], dtype=tf.float32))
    return request


def test_grpc_tls_client_gets_answers(tls):
    credentials = grpc.ssl_channel_credentials(root_certificates=tls["ca"].cert_pem.bytes())
    with grpc.secure_channel(f"localhost:{tls['server'].grpc_port}", credentials) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert list(stub.Predict(_request(), timeout=30).outputs["y"].float_val) == [3.0]


def test_grpc_plaintext_client_is_refused(tls):
    with tls["server"].channel() as channel:  # insecure
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(_request(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def _https(tls, with_client_cert: bool) -> tuple[int, dict]:
    context = ssl.create_default_context()
    tls["ca"].configure_trust(context)
    if with_client_cert:
        tls["client"].configure_cert(context)
    conn = http.client.HTTPSConnection(
        "localhost", tls["server"].rest_port, context=context, timeout=30
    )
    try:
        conn.request("POST", "/v1/models/half_plus_two:predict", body=b'{"instances": [2.0]}')
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_rest_over_tls_with_client_certificate(tls):
    assert _https(tls, with_client_cert=True) == (200, {"predictions": [3.0]})


def test_rest_refuses_plaintext_and_clients_without_certificate(tls):
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        _https(tls, with_client_cert=False)
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        tls["server"].http("POST", "/v1/models/half_plus_two:predict", {"instances": [2.0]})
    # the server keeps answering after refusing them
    assert _https(tls, with_client_cert=True)[0] == 200
