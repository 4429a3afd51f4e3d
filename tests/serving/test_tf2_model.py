"""A TF2 SavedModel with string/JPEG inputs: b64 over REST, string tensors over gRPC, shape
errors, warmup, dynamic batching shared by both protocols, and graceful shutdown."""

from __future__ import annotations

import base64
import re
import signal
import threading
from pathlib import Path

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
from tests.serving.conftest import wait_for

BATCHING = """
max_batch_size { value: 8 }
batch_timeout_micros { value: 5000 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 2 }
allowed_batch_sizes: 2
allowed_batch_sizes: 4
allowed_batch_sizes: 8
"""


class GateModel(tf.Module):
    """`serving_default`: `gate` [N] strings, each a folder (only the first is read). The
    run writes <folder>/started as it begins, then polls until <folder>/release exists, and
    answers `total` = 128.0 per row: a request that is provably running, for as long as the
    test wants (the other serving tests import it)."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="gate")])
    def wait(self, gate):
        folder = gate[0]
        started = tf.io.write_file(tf.strings.join([folder, "/started"]), "")
        with tf.control_dependencies([started]):
            first = tf.identity(0)

        def closed(i):
            # the pattern depends on the loop variable (an empty suffix), so no graph
            # optimisation can hoist the file check out of the loop
            suffix = tf.strings.substr(tf.strings.as_string(i), 0, 0)
            pattern = tf.strings.join([folder, "/release", suffix])
            return tf.equal(tf.size(tf.io.matching_files(pattern)), 0)

        (polls,) = tf.while_loop(closed, lambda i: (i + 1,), (first,))
        total = tf.cast(tf.minimum(polls, 0), tf.float32) + 128.0
        return {"total": tf.fill(tf.shape(gate), total)}


def export_gate(path: Path) -> Path:
    """Save `GateModel` to `path` (a version dir)."""
    model = GateModel()
    tf.saved_model.save(model, str(path), signatures={"serving_default": model.wait})
    return path


class Gate:
    """One folder for a `GateModel` request: `started` once it runs, `open()` lets it end."""

    def __init__(self, folder: Path, opened: bool = False):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.started = folder, folder / "started"
        if opened:
            self.open()

    def open(self) -> None:
        (self.folder / "release").write_text("")

    @property
    def value(self) -> str:
        return str(self.folder)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tf2")
    tf2_model.export(root / "img" / "1")
    export_gate(root / "gate" / "1")
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
        + "".join(
            f'  config {{ name: "{m}" base_path: "{models / m}" model_platform: "tensorflow" }}\n'
            for m in ("img", "gate")
        )
        + "}\n"
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


def _batch_histograms(server) -> dict[str, dict]:
    """The batching histograms of img/serving_default: per metric, the cumulative bucket
    counts by upper bound, the sum and the count."""
    _, text = server.http("GET", "/monitoring/prometheus/metrics")
    labels = 'model_name="img",signature="serving_default"'
    out = {}
    for name in ("processed_batch_size", "input_batch_size", "padding_size"):
        prefix = re.escape(f":tensorflow:serving:batching_session:{name}")
        buckets = re.findall(prefix + r"_bucket\{" + labels + r',le="([^"]+)"\} (\d+)', text)
        total = re.search(prefix + r"_sum\{" + labels + r"\} ([0-9.e+]+)", text)
        count = re.search(prefix + r"_count\{" + labels + r"\} (\d+)", text)
        out[name] = {
            "le": {float(le): int(n) for le, n in buckets},
            "sum": float(total[1]) if total else 0.0,
            "count": int(count[1]) if count else 0,
        }
    return out


def _delta(after: dict, before: dict) -> dict:
    """after - before, histogram by histogram (a histogram absent before counts as zeros)."""
    out = {}
    for name, hist in after.items():
        prior = before.get(name, {"le": {}, "sum": 0.0, "count": 0})
        out[name] = {
            "le": {le: n - prior["le"].get(le, 0) for le, n in hist["le"].items()},
            "sum": hist["sum"] - prior["sum"],
            "count": hist["count"] - prior["count"],
        }
    return out


def test_batching_shares_one_queue_across_grpc_and_rest(server, expected):
    images, want = expected
    failures: list[str] = []
    clients, calls = 16, 6

    def client(i: int) -> None:
        k = i % 4
        for _ in range(calls):
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

    before = _batch_histograms(server)  # earlier tests of the module ran batches too
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:5]
    d = _delta(_batch_histograms(server), before)
    requests = clients * calls  # one row each
    processed, padding, inputs = d["processed_batch_size"], d["padding_size"], d["input_batch_size"]
    # every request entered the queue once, with its one row
    assert inputs["count"] == requests and inputs["sum"] == requests, inputs
    # every row ran exactly once: the rows of the batches less their padding
    assert processed["sum"] - padding["sum"] == requests, (processed, padding)
    # each batch ran at an allowed size (2, 4 or 8): none of one row, none over 8, and the
    # sizes add up to the buckets' upper bounds exactly (a batch of 3 would count as 4)
    le = processed["le"]
    assert le[1.0] == 0 and le[8.0] == processed["count"], le
    ran = {size: le[size] - le[size / 2] for size in (2.0, 4.0, 8.0)}
    assert sum(size * n for size, n in ran.items()) == processed["sum"], (ran, processed)
    assert padding["count"] == processed["count"]
    # some requests were merged into bigger batches: fewer batches than requests, and
    # fewer than padding each request alone to 2 rows would make
    assert processed["count"] < requests and processed["sum"] < 2 * requests, ran


def test_graceful_shutdown_finishes_in_flight_request(server, tmp_path):
    """SIGTERM while a request is provably running (its graph has started and waits on a
    file the test controls): the server logs its shutdown, the request is still unanswered
    then, and once let go it is answered 200 before the server exits with status 0."""
    gate = Gate(tmp_path / "gate")
    result = {}

    def gated_request() -> None:
        try:
            result["response"] = server.http(
                "POST", "/v1/models/gate:predict", {"instances": [gate.value]}
            )
        except Exception as e:  # asserted below: the request must be answered
            result["response"] = repr(e)

    thread = threading.Thread(target=gated_request)
    thread.start()
    try:
        wait_for(gate.started.exists, timeout=60)  # the request is in the graph now
        server.proc.send_signal(signal.SIGTERM)
        shutting = "Shutting down: finishing in-flight requests"
        wait_for(lambda: any(shutting in line for line in server.lines), timeout=60)
        assert "response" not in result  # still in flight while the server shuts down
        assert server.proc.poll() is None  # and the server waits for it
    finally:
        gate.open()
        thread.join(60)
    assert server.proc.wait(timeout=60) == 0, server.log()
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
