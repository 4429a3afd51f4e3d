"""End to end with a real zoo model: the CIFAR convnet trained on real CIFAR images (tiny preset,
the test process's one tiny run, `cifar_tiny_run` in tests/conftest.py), exported by the zoo,
served by `zoo serve` (the test process's one server, `zoo_server`), and queried over REST and
gRPC with real CIFAR JPEGs; every answer must equal the SavedModel called in-process on the
same bytes."""

from __future__ import annotations

import base64
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.harness import export_tiny_run

MODEL = "cifar_convnet"
ATOL = 1e-5


@pytest.fixture(scope="module")
def exported(cifar_tiny_run) -> Path:
    """base path of a zoo export of the tiny CIFAR convnet trained on real images."""
    version_dir = export_tiny_run(cifar_tiny_run[0], MODEL)
    assert version_dir.name == "1"
    return version_dir.parent


@pytest.fixture(scope="module")
def images(shared_data: Path) -> list[bytes]:
    """Four real CIFAR test JPEGs of different classes."""
    root = shared_data / "cifar10" / "test"
    return [sorted((root / c).iterdir())[0].read_bytes() for c in ("ship", "cat", "frog", "truck")]


@pytest.fixture(scope="module")
def in_process(exported: Path, images: list[bytes]) -> dict[str, dict[str, np.ndarray]]:
    """What the SavedModel itself answers on the same bytes (and their decoded pixels)."""
    loaded = tf.saved_model.load(str(exported / "1"))
    by_bytes = loaded.signatures["serving_default"](image_bytes=tf.constant(images))
    pixels = tf.cast(tf.stack([tf.io.decode_jpeg(b, channels=3) for b in images]), tf.float32)
    by_pixels = loaded.signatures["predict_pixels"](pixels=pixels)
    return {
        "bytes": {k: v.numpy() for k, v in by_bytes.items()},
        "pixels": {"pixels": pixels.numpy(), **{k: v.numpy() for k, v in by_pixels.items()}},
    }


@pytest.fixture(scope="module")
def server(exported: Path, zoo_server):
    return zoo_server.serve(MODEL, exported)


def _b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


def test_jpeg_b64_over_rest_rows_and_columns(server, images, in_process):
    want = in_process["bytes"]
    code, out = server.http(
        "POST", f"/v1/models/{MODEL}:predict", {"instances": [_b64(im) for im in images]}
    )
    assert code == 200, out
    rows = out["predictions"]
    assert [r["classes"] for r in rows] == [[c.decode() for c in row] for row in want["classes"]]
    assert [r["class_ids"] for r in rows] == want["class_ids"].tolist()
    np.testing.assert_allclose([r["probabilities"] for r in rows], want["probabilities"], atol=ATOL)
    code, out = server.http(
        "POST", f"/v1/models/{MODEL}:predict", {"inputs": {"image_bytes": [_b64(images[1])]}}
    )
    assert code == 200, out
    assert out["outputs"]["classes"] == [[c.decode() for c in want["classes"][1]]]
    np.testing.assert_allclose(
        out["outputs"]["probabilities"], want["probabilities"][1:2], atol=ATOL
    )


def test_jpeg_string_tensor_over_grpc(server, images, in_process):
    want = in_process["bytes"]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string))
    with server.channel() as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, timeout=60
        )
    assert response.model_spec.name == MODEL and response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    classes = tf.make_ndarray(response.outputs["classes"])
    assert classes.shape == want["classes"].shape and classes.tolist() == want["classes"].tolist()
    assert tf.make_ndarray(response.outputs["class_ids"]).tolist() == want["class_ids"].tolist()
    np.testing.assert_allclose(
        tf.make_ndarray(response.outputs["probabilities"]), want["probabilities"], atol=ATOL
    )


def test_predict_pixels_over_rest(server, in_process):
    want = in_process["pixels"]
    body = {"signature_name": "predict_pixels", "instances": want["pixels"][:2].tolist()}
    code, out = server.http("POST", f"/v1/models/{MODEL}:predict", body)
    assert code == 200, out
    np.testing.assert_allclose(out["predictions"], want["probabilities"][:2], atol=ATOL)
    # the same images as bytes and as pixels give the same probabilities (bytes: the top 5)
    by_bytes = in_process["bytes"]
    np.testing.assert_allclose(
        np.take_along_axis(want["probabilities"], by_bytes["class_ids"], -1),
        by_bytes["probabilities"],
        atol=ATOL,
    )


def test_metadata_lists_the_signatures(server):
    code, out = server.http("GET", f"/v1/models/{MODEL}/metadata")
    assert code == 200, out
    assert out["model_spec"]["name"] == MODEL and out["model_spec"]["version"] == "1"
    sigs = out["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "predict_pixels", "features"} <= set(sigs)
    image_input = sigs["serving_default"]["inputs"]["image_bytes"]
    assert image_input["dtype"] == "DT_STRING"
    outputs = sigs["serving_default"]["outputs"]
    assert set(outputs) == {"probabilities", "class_ids", "classes"}
    for output in outputs.values():  # top 5 per image
        assert [int(d["size"]) for d in output["tensor_shape"]["dim"]] == [-1, 5]
    pixels = sigs["predict_pixels"]["inputs"]["pixels"]
    assert pixels["dtype"] == "DT_FLOAT"
    assert [int(d["size"]) for d in pixels["tensor_shape"]["dim"]] == [-1, 32, 32, 3]


def test_garbage_image_is_400_and_server_still_answers(server, images, in_process):
    body = {"instances": [_b64(b"this is not an image at all")]}
    code, out = server.http("POST", f"/v1/models/{MODEL}:predict", body)
    assert code == 400, out
    message = out["error"]
    assert "image" in message.lower() and "format" in message.lower(), message
    assert "image_bytes: DT_STRING [-1]" in message
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([b"\x89garbage"], dtype=tf.string))
    with server.channel() as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(request, timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    code, out = server.http("POST", f"/v1/models/{MODEL}:predict", {"instances": [_b64(images[0])]})
    assert code == 200 and out["predictions"][0]["classes"][0] == (
        in_process["bytes"]["classes"][0][0].decode()
    )
