"""TF Serving's behaviour where `zoo serve` used to differ, each pinned to the source it follows
(tensorflow/serving at 9d981c5): flags and startup, gRPC deadlines, full batch queues,
padding of variable-length inputs, the health service, and failed initial loads.

One server for the module, started with exactly the flags a user would type (no
--rest_api_port), serving a TF2 model with a slow signature behind a one-slot batch queue.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.batching import BatchingOptions, pad_to_common_shape
from serving.errors import ServingError
from serving.main import STARTUP_FAILED
from serving.servable import Servable
from tests.conftest import free_port
from tests.serving import tf2_model
from tests.serving.conftest import launch, stop, wait_for
from tests.serving.test_tf2_model import Gate, export_gate

ENDLESS = 10**8  # matmul loop iterations: minutes of work unless cancelled
ONE_SLOT = """
max_batch_size { value: 1 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 1 }
num_batch_threads { value: 1 }
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fidelity")
    tf2_model.export(root / "img" / "1")
    export_gate(root / "gate" / "1")
    (root / "batching.txt").write_text(ONE_SLOT)
    (root / "models.config").write_text(
        "model_config_list { "
        + "".join(
            f'config {{ name: "{m}" base_path: "{root / m}" model_platform: "tensorflow" }} '
            for m in ("img", "gate")
        )
        + "}"
    )
    port = free_port()
    proc, lines, _ = launch(
        f"--port={port}",
        f"--model_config_file={root / 'models.config'}",
        "--model_name=ignored",
        "--model_base_path=/does/not/exist",
        "--no_such_flag=1",
        "--enable_batching",
        f"--batching_parameters_file={root / 'batching.txt'}",
    )
    if proc.poll() is not None:
        raise RuntimeError("server did not start:\n" + "\n".join(lines[-40:]))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield {"proc": proc, "lines": lines, "channel": channel}
    channel.close()
    assert stop(proc) == 0, "\n".join(lines[-40:])


def _slow(n: int, model: str = "img") -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "slow"
    request.inputs["n"].CopyFrom(tf.make_tensor_proto([n], dtype=tf.int32))
    return request


def _gated(gate: Gate) -> predict_pb2.PredictRequest:
    """A request to the gate model: it runs until `gate` opens (tests.serving.test_tf2_model)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "gate"
    request.inputs["gate"].CopyFrom(tf.make_tensor_proto([gate.value], dtype=tf.string))
    return request


def test_unknown_flag_is_reported_and_the_server_starts(server):
    """main.cc:333-335: `if (argc != 1) std::cout << "unknown argument: " << argv[1]` and
    then BuildAndStart: unknown flags do not stop the server."""
    assert "unknown argument: --no_such_flag=1" in server["lines"]
    assert server["proc"].poll() is None


def test_config_file_wins_over_model_name_and_base_path(server):
    """server.cc:212-218: with --model_config_file the config is read and
    --model_name/--model_base_path are ignored (main.cc:131-150 says so in the help)."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(server["channel"])
    assert list(stub.Predict(_slow(3), timeout=30).outputs["total"].float_val) == [128.0]


def test_rest_is_off_by_default(server):
    """server.h:51 `http_port = 0`; server.cc:437 exports REST only when it is non-zero."""
    assert not any("Exporting HTTP/REST API" in line for line in server["lines"])


def test_health_service_is_off_by_default(server):
    """server.cc:415-424: EnableDefaultHealthCheckService(enable_grpc_healthcheck_service),
    false by default (server.h:107)."""
    with pytest.raises(grpc.RpcError) as err:
        health_pb2_grpc.HealthStub(server["channel"]).Check(
            health_pb2.HealthCheckRequest(), timeout=30
        )
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_grpc_deadline_cancels_the_run_and_frees_the_batch_slot(server):
    """prediction_service_impl.cc Predict: `run_options.set_timeout_in_ms(
    DeadlineToTimeoutMillis(context->raw_deadline()))`: a deadline stops an endless graph run.
    The queue has one slot and one batch thread, so the quick request after it succeeds only
    if the endless runs were really stopped and their slot given back.

    A 50 ms deadline can expire while the request still waits in the batch queue on a loaded
    machine, which TF Serving answers with RESOURCE_EXHAUSTED (batching_session.cc); either
    answer comes back within the deadline's reach. A 1 s deadline lets the idle batch thread
    start the run, so that one must be stopped mid-run: DEADLINE_EXCEEDED."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(server["channel"])
    expired = {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
    for timeout, codes in (
        (0.05, expired),
        (0.05, expired),
        (1.0, {grpc.StatusCode.DEADLINE_EXCEEDED}),
    ):
        start = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(_slow(ENDLESS), timeout=timeout)
        assert err.value.code() in codes, (timeout, err.value.code(), err.value.details())
        assert time.monotonic() - start < 3 + timeout
    start = time.monotonic()
    assert list(stub.Predict(_slow(3), timeout=30).outputs["total"].float_val) == [128.0]
    assert time.monotonic() - start < 5


def test_full_batch_queue_is_unavailable(server, tmp_path):
    """The batch scheduler refuses a task when its queue is full with UNAVAILABLE "The batch
    scheduling queue to which this task was submitted is full" (shared_batch_scheduler.h);
    REST maps UNAVAILABLE to 503 (http_server.cc ToHTTPStatusCode).

    The only batch thread runs a request held at a gate the test keeps shut; of two more
    requests (whichever the server sees first) one takes the queue's only slot and the
    other is refused at once. No ordering rests on a sleep."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(server["channel"])
    held = Gate(tmp_path / "held")
    opened = [Gate(tmp_path / f"open{i}", opened=True) for i in range(2)]
    running = stub.Predict.future(_gated(held), timeout=120)
    try:
        wait_for(held.started.exists, timeout=60)  # taken off the queue by the batch thread
        pair = [(stub.Predict.future(_gated(g), timeout=120), g) for g in opened]
        wait_for(lambda: any(f.done() for f, _ in pair), timeout=60)
        (refused, refused_gate), (queued, queued_gate) = pair if pair[0][0].done() else pair[::-1]
        assert not queued.done()  # it waits in the slot behind the running request
    finally:
        held.open()
    with pytest.raises(grpc.RpcError) as err:
        refused.result()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "queue to which this task was submitted is full" in err.value.details()
    assert ServingError(grpc.StatusCode.UNAVAILABLE, "x").http_status == 503
    # the running request was stopped only by its gate, then the queued one ran
    assert list(running.result().outputs["total"].float_val) == [128.0]
    assert list(queued.result().outputs["total"].float_val) == [128.0]
    assert queued_gate.started.exists() and not refused_gate.started.exists()


def _variable_length_model(path):
    """A TF1 model `x` [None, None] -> `y` = x (echo) and `rows` = sum over dim 1."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, None], name="x")
        y = tf.identity(x)
        total = tf.reduce_sum(x, axis=1)
        with tf.compat.v1.Session(graph=graph) as session:
            builder = tf.compat.v1.saved_model.Builder(str(path))
            sig = tf.compat.v1.saved_model.predict_signature_def({"x": x}, {"y": y, "rows": total})
            builder.add_meta_graph_and_variables(
                session, ["serve"], signature_def_map={"serving_default": sig}
            )
            builder.save()


@pytest.mark.parametrize("pad", [True, False])
def test_pad_variable_length_inputs(tmp_path, pad):
    """batching_util.cc AddPadding/PadTensor: with pad_variable_length_inputs, inputs of one
    batch are padded at the end of each dimension past the first to the batch's largest size,
    with the tensor's own first value (`T pad_value(input.flat<T>()(0))`), and the padded
    outputs are split by rows only. Without it, different lengths never share a batch."""
    _variable_length_model(tmp_path / "1")
    servable = Servable("v", 1, tmp_path / "1")
    servable.batching = BatchingOptions(
        max_batch_size=2,
        batch_timeout_micros=500_000,
        max_enqueued_batches=4,
        num_batch_threads=1,
        pad_variable_length_inputs=pad,
    )
    sig = servable.signature("")
    rows = [np.array([[5.0, 1.0]], np.float32), np.array([[1.0, 2.0, 3.0]], np.float32)]
    try:
        with ThreadPoolExecutor(2) as pool:
            short, long = pool.map(lambda x: servable.run(sig, {"x": x}, ("rows", "y")), rows)
    finally:
        servable.close()
    assert long["y"].tolist() == [[1.0, 2.0, 3.0]]
    if pad:
        assert short["y"].tolist() == [[5.0, 1.0, 5.0]]  # padded with its first value
        assert short["rows"].tolist() == [11.0]
    else:
        assert short["y"].tolist() == [[5.0, 1.0]]
        assert short["rows"].tolist() == [6.0]
    strings = pad_to_common_shape([np.array([[b"a"]], object), np.array([[b"b", b"c"]], object)])
    assert strings[0].tolist() == [[b"a", b"a"]]


def test_failed_initial_load_fails_the_start_after_retries(tmp_path):
    """A model that cannot load is retried --max_num_load_retries times, each try logged as
    "Retrying of Loading servable: {name: .. version: ..} retry: N" (loader_harness.cc:81-85,
    retrier.cc:27-53), then the start fails: "N servable(s) did not become available"
    (load_servables_fast.cc:90-116, with ServableId::DebugString "{name: n version: v}"
    inside its own braces), "Failed to start server. Error: ..." and -1 (main.cc:343)."""
    bad = tmp_path / "broken" / "1"
    bad.mkdir(parents=True)
    (bad / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    time.sleep(0.6)  # the repository waits for a version to settle
    proc, lines, reader = launch(
        f"--port={free_port()}",
        "--model_name=broken",
        f"--model_base_path={tmp_path / 'broken'}",
        "--max_num_load_retries=2",
        "--load_retry_interval_micros=100000",
    )
    assert proc.wait(timeout=120) == STARTUP_FAILED
    reader.join(10)
    text = "\n".join(lines)
    assert "Retrying of Loading servable: {name: broken version: 1} retry: 2" in text
    assert "exhausted max_num_retries: 2" in text
    assert (
        "Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available: "
        "{{{name: broken version: 1} due to error: UNKNOWN: Failed to load version 1" in text
    )
    assert not any("Running gRPC ModelServer" in line for line in lines)


class _HalfPlusTwo(tf.Module):
    """`serving_default`: y = x / 2 + 2, and `calls`: how many times it has run (a variable
    the signature increments), so a test can count real runs."""

    def __init__(self):
        super().__init__()
        self.calls = tf.Variable(0, dtype=tf.int64)

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def serve(self, x):
        calls = self.calls.assign_add(1)
        return {"y": x / 2.0 + 2.0, "calls": tf.fill(tf.shape(x)[:1], calls)}


@pytest.fixture(scope="module")
def half_plus_two(tmp_path_factory) -> Path:
    """A real TF2 SavedModel of `_HalfPlusTwo` (a version directory)."""
    path = tmp_path_factory.mktemp("half_plus_two") / "1"
    model = _HalfPlusTwo()
    tf.saved_model.save(model, str(path), signatures={"serving_default": model.serve})
    return path


def _labelled_config(base, labels: dict[str, int]):
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add(name="m", base_path=str(base))
    model.model_platform = "tensorflow"
    model.model_version_policy.all.SetInParent()
    for label, version in labels.items():
        model.version_labels[label] = version
    return config


@pytest.mark.parametrize("allow", [False, True])
def test_labels_for_unavailable_versions(tmp_path, allow, half_plus_two):
    """server_core.cc:549-588 UpdateModelVersionLabelMap: a label may point at a version that
    is not AVAILABLE only with --allow_version_labels_for_unavailable_models (and then not
    move an existing label elsewhere); otherwise FAILED_PRECONDITION."""
    import shutil

    from serving import inference
    from serving.manager import Manager

    shutil.copytree(half_plus_two, tmp_path / "1")
    manager = Manager(
        lambda name, version, path: Servable(name, version, path),
        settle_seconds=0,
        allow_version_labels_for_unavailable_models=allow,
    )
    try:
        config = _labelled_config(tmp_path, {"stable": 1, "canary": 2})
        if not allow:
            with pytest.raises(ServingError) as err:
                manager.set_config(config)
            assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert "version 2 of model m, which is not currently available" in err.value.message
            return
        manager.set_config(config)
        with manager.acquire("m", label="stable") as servable:
            assert servable.version == 1
            _, out = inference.predict(servable, "", {"x": np.array([[3.0]], np.float32)})
            assert out["y"].tolist() == [[3.5]]  # the real model behind the label answers
        with pytest.raises(ServingError, match=r"Specific\(m, 2\)"):
            with manager.acquire("m", label="canary"):
                pass
        with pytest.raises(ServingError) as err:  # moving an existing label: still refused
            manager.set_config(_labelled_config(tmp_path, {"stable": 3, "canary": 2}))
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        manager.stop()


def test_saved_model_tags_and_warmup_iterations(testdata, half_plus_two, tmp_path):
    """--saved_model_tags picks the MetaGraph by its tag set (server.cc:281-285); warmup runs
    each record --num_request_iterations_for_warmup times (server.cc:288-292)."""
    import shutil

    from serving import inference, warmup

    path = testdata / "saved_model_half_plus_two_cpu" / "00000123"
    with pytest.raises(ValueError, match="no MetaGraph tagged"):
        Servable("hp2", 123, path, tags=("serve", "tpu"))
    servable = Servable("hp2", 123, path, tags=("serve",))
    try:
        _, out = inference.predict(servable, "", {"x": np.array([[1.0]], np.float32)})
        assert out["y"].tolist() == [[2.5]]  # the MetaGraph tagged "serve" runs
    finally:
        servable.close()
    # warmup on a real model that counts its runs
    copy = shutil.copytree(half_plus_two, tmp_path / "1")
    (copy / "assets.extra").mkdir()
    with tf.io.TFRecordWriter(str(copy / "assets.extra" / "tf_serving_warmup_requests")) as w:
        w.write(tf2_model.warmup_record("", "x", np.array([[1.0]], np.float32)))
    servable = Servable("m", 1, copy)
    try:
        assert warmup.replay(servable, iterations=3) == 1
        _, out = inference.predict(servable, "", {"x": np.array([[1.0]], np.float32)})
    finally:
        servable.close()
    assert out["calls"].tolist() == [4]  # three warmup runs of the one record, then this one
    assert out["y"].tolist() == [[2.5]]
