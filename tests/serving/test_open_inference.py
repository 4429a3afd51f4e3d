"""The Open Inference Protocol (KServe V2) through NVIDIA's own clients (`tritonclient`, HTTP
and gRPC), on the same ports and predict core as TF Serving's API: the answers must be the ones
TF Serving's API gives, for half_plus_two (TF Serving's test model), a JPEG classifier (raw
image bytes as BYTES) and a text model made here. Readiness follows the loads.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import tensorflow as tf
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving import v2_protos
from serving.card import CARD_PATH
from tests.server_process import start_server
from tests.serving import tf2_model
from tests.serving.conftest import copy_model, wait_for


class TextModel(tf.Module):
    """sentences -> upper-cased sentences and their lengths in bytes."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="sentences")])
    def serve(self, sentences):
        return {"upper": tf.strings.upper(sentences), "length": tf.strings.length(sentences)}


@pytest.fixture(scope="module")
def env(testdata, tmp_path_factory):
    root = tmp_path_factory.mktemp("v2")
    tf2_model.export(root / "img" / "1")
    text = TextModel()
    tf.saved_model.save(text, str(root / "text" / "1"), signatures={"serving_default": text.serve})
    (root / "later").mkdir()
    # a model card as `zoo pull` installs it, and one too broken to show
    card = {
        "artifact": "img/test@3",
        "metric": "accuracy 50.0%",
        "parameters": 12,
        "restricted": True,
    }
    (root / "img" / "1" / CARD_PATH).parent.mkdir(exist_ok=True)
    (root / "img" / "1" / CARD_PATH).write_text(json.dumps(card))
    (root / "text" / "1" / CARD_PATH).parent.mkdir(exist_ok=True)
    (root / "text" / "1" / CARD_PATH).write_text('{"nested": {"not": "flat"}}')
    models = {
        "half_plus_two": testdata / "saved_model_half_plus_two_cpu",
        "img": root / "img",
        "text": root / "text",
        "later": root / "later",  # no version yet: the server is not ready until it has one
    }
    cfg = root / "models.config"
    cfg.write_text(
        "model_config_list {"
        + "".join(
            f' config {{ name: "{n}" base_path: "{p}" model_platform: "tensorflow" }}'
            for n, p in models.items()
        )
        + " }"
    )
    srv = start_server(f"--model_config_file={cfg}", "--file_system_poll_wait_seconds=1")
    http = httpclient.InferenceServerClient(f"127.0.0.1:{srv.rest_port}")
    grpc_ = grpcclient.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
    yield {"server": srv, "http": http, "grpc": grpc_, "root": root, "testdata": testdata}
    http.close()
    grpc_.close()
    srv.stop()


def _tfs_predict(server, model: str, name: str, values, dtype) -> dict[str, np.ndarray]:
    """TF Serving's own gRPC Predict, for the expected answers."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs[name].CopyFrom(tf.make_tensor_proto(values, dtype=dtype))
    with server.channel() as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, timeout=30
        )
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def _infer(client, module, model: str, name: str, array: np.ndarray, datatype: str,
           outputs: list[str], binary: bool = True):  # fmt: skip
    tensor = module.InferInput(name, list(array.shape), datatype)
    if module is httpclient:
        tensor.set_data_from_numpy(array, binary_data=binary)
        requested = [module.InferRequestedOutput(o, binary_data=binary) for o in outputs]
    else:
        tensor.set_data_from_numpy(array)
        requested = [module.InferRequestedOutput(o) for o in outputs]
    return client.infer(model, [tensor], outputs=requested)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_half_plus_two(env, protocol):
    client, module = env[protocol], httpclient if protocol == "http" else grpcclient
    x = np.array([[1.0], [2.0], [5.0]], np.float32)
    result = _infer(client, module, "half_plus_two", "x", x, "FP32", ["y"])
    want = _tfs_predict(env["server"], "half_plus_two", "x", x, tf.float32)["y"]
    np.testing.assert_array_equal(result.as_numpy("y"), want)
    assert want.tolist() == [[2.5], [3.0], [4.5]]
    response = result.get_response()
    version = response["model_version"] if protocol == "http" else response.model_version
    assert version == "123"


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_jpeg_bytes(env, protocol):
    client, module = env[protocol], httpclient if protocol == "http" else grpcclient
    images = np.array([tf2_model.jpeg(i) for i in range(3)], dtype=object)
    result = _infer(client, module, "img", "image_bytes", images, "BYTES", ["class_ids", "classes"])
    want = _tfs_predict(env["server"], "img", "image_bytes", list(images), tf.string)
    np.testing.assert_array_equal(result.as_numpy("class_ids"), want["class_ids"])
    assert result.as_numpy("classes").tolist() == want["classes"].tolist()
    # TF Serving's REST API with b64 images gives the same classes
    body = {"instances": [{"b64": base64.b64encode(b).decode()} for b in images]}
    code, out = env["server"].http("POST", "/v1/models/img:predict", body)
    assert code == 200
    assert [p["class_ids"] for p in out["predictions"]] == want["class_ids"].tolist()


@pytest.mark.parametrize(("protocol", "binary"), [("http", True), ("http", False), ("grpc", True)])
def test_text(env, protocol, binary):
    client, module = env[protocol], httpclient if protocol == "http" else grpcclient
    sentences = np.array(["She sells seashells.", "héllo"], dtype=object)
    result = _infer(client, module, "text", "sentences", sentences, "BYTES", ["upper", "length"],
                    binary)  # fmt: skip
    want = _tfs_predict(env["server"], "text", "sentences", list(sentences), tf.string)
    upper = [u.encode() if isinstance(u, str) else u for u in result.as_numpy("upper").tolist()]
    assert upper == want["upper"].tolist()  # (JSON BYTES come back to the client as str)
    np.testing.assert_array_equal(result.as_numpy("length"), want["length"])
    assert want["length"].tolist() == [20, 6]


def test_all_outputs_when_none_requested_and_a_named_signature(env):
    tensor = httpclient.InferInput("x", [1, 1], "FP32")
    tensor.set_data_from_numpy(np.array([[4.0]], np.float32), binary_data=False)
    result = env["http"].infer("half_plus_two", [tensor])
    assert result.as_numpy("y").tolist() == [[4.0]]
    tensor = httpclient.InferInput("inputs", [1, 1], "FP32")
    tensor.set_data_from_numpy(np.array([[4.0]], np.float32), binary_data=False)
    result = env["http"].infer(
        "half_plus_two", [tensor], parameters={"signature_name": "regress_x2_to_y3"}
    )
    assert result.as_numpy("outputs").tolist() == [[5.0]]  # y3 = 0.5 x + 3


def test_metadata_and_errors(env):
    meta = env["http"].get_model_metadata("half_plus_two")
    assert meta == {
        "name": "half_plus_two",
        "versions": ["123"],
        "platform": "tensorflow_savedmodel",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
    }
    grpc_meta = env["grpc"].get_model_metadata("img", as_json=True)
    assert grpc_meta["name"] == "img"
    assert {t["name"] for t in grpc_meta["inputs"]} == {"image_bytes"}
    server = env["http"].get_server_metadata()
    assert server["name"] == "tfzoo" and "binary_tensor_data" in server["extensions"]
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="Servable not found"):
        env["http"].get_model_metadata("nope")
    x = np.array([[1.0]], np.float32)
    with pytest.raises(InferenceServerException, match="Missing but required: {x}"):
        _infer(env["grpc"], grpcclient, "half_plus_two", "z", x, "FP32", ["y"])


def test_repository_index_and_model_config_carry_the_cards(env):
    """Triton's repository index lists every configured model version with its state; the
    model configuration carries the version's card as string parameters (none when the card
    is unusable); the page is off without --enable_web_ui."""
    http = env["http"]
    index = {(e["name"], e.get("version")): e for e in http.get_model_repository_index()}
    assert index[("half_plus_two", "123")]["state"] == "READY"
    assert index[("img", "1")] == {"name": "img", "version": "1", "state": "READY", "reason": ""}
    if ("later", None) in index:  # no version yet (the readiness test may have added one)
        assert index[("later", None)]["state"] == "UNAVAILABLE"
    status, ready = env["server"].http("POST", "/v2/repository/index", {"ready": True})
    assert status == 200 and all(e["state"] == "READY" for e in ready)
    assert {e["name"] for e in ready} >= {"half_plus_two", "img", "text"}
    config = http.get_model_config("img")
    assert config["name"] == "img" and config["platform"] == "tensorflow_savedmodel"
    assert config["parameters"] == {
        "artifact": {"string_value": "img/test@3"},
        "metric": {"string_value": "accuracy 50.0%"},
        "parameters": {"string_value": "12"},
        "restricted": {"string_value": "true"},
    }
    assert http.get_model_config("text")["parameters"] == {}
    assert http.get_model_config("half_plus_two", "123")["parameters"] == {}
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="Servable not found"):
        http.get_model_config("nope")
    status, body = env["server"].http("POST", "/v2/repository/index", {"ready": "yes"})
    assert status == 400 and "'ready'" in body["error"]
    assert env["server"].http("GET", "/")[0] == 404
    assert env["server"].http("GET", "/ui/app.js")[0] == 404


def test_readiness_follows_the_loads(env):
    """/v2/health/ready is true once every configured model has a version AVAILABLE; live
    always; a model's own readiness by name and version."""
    http, grpc_ = env["http"], env["grpc"]
    assert http.is_server_live() and grpc_.is_server_live()
    assert http.is_model_ready("half_plus_two") and grpc_.is_model_ready("half_plus_two", "123")
    assert not http.is_model_ready("half_plus_two", "7") and not http.is_model_ready("nope")
    assert not http.is_server_ready() and not grpc_.is_server_ready()  # "later" has none yet
    assert env["server"].http("GET", "/v2/health/ready")[0] == 400
    copy_model(env["testdata"] / "saved_model_half_plus_two_cpu" / "00000123",
               env["root"] / "later" / "1")  # fmt: skip
    wait_for(lambda: http.is_server_ready() and grpc_.is_server_ready(), timeout=20)
    assert env["server"].http("GET", "/v2/health/ready")[0] == 200
    assert env["server"].http("GET", "/v2/health/live")[0] == 200


def test_grpc_messages_match_tritonclients():
    """serving/v2_protos.py builds the messages by hand: same names, numbers and types as the
    ones NVIDIA's client was generated from."""
    from tritonclient.grpc import service_pb2

    def fields(descriptor) -> list:
        out = [(descriptor.full_name, sorted(
            (f.name, f.number, f.type, f.is_repeated,
             f.message_type.full_name if f.message_type else "",
             f.containing_oneof.name if f.containing_oneof else "")
            for f in descriptor.fields))]  # fmt: skip
        for nested in descriptor.nested_types:
            out += fields(nested)
        return sorted(out)

    for request, response in v2_protos.METHODS.values():
        for cls in (request, response):
            theirs = getattr(service_pb2, cls.DESCRIPTOR.name).DESCRIPTOR
            assert fields(cls.DESCRIPTOR) == fields(theirs)
    service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == v2_protos.SERVICE
    assert set(v2_protos.METHODS) <= {m.name for m in service.methods}


def test_unusable_cards_are_ignored_without_reading_past_the_limit(tmp_path):
    from serving.card import MAX_CARD_BYTES, read_card

    path = tmp_path / CARD_PATH
    path.parent.mkdir(parents=True)
    assert read_card(tmp_path) == {}  # none at all
    path.write_text(json.dumps({"artifact": "x@1", "note": "n" * MAX_CARD_BYTES}))
    assert read_card(tmp_path) == {}  # too large
    for broken in ("{not json", "[1, 2]", '{"a": null}', '{"a": [1]}'):
        path.write_text(broken)
        assert read_card(tmp_path) == {}, broken
    path.write_text('{"artifact": "x@1", "size": 3, "restricted": false}')
    assert read_card(tmp_path) == {"artifact": "x@1", "size": "3", "restricted": "false"}
