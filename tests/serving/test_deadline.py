"""--rest_api_timeout_in_ms: a request that runs past it is answered 504 DEADLINE_EXCEEDED with
{"error": ...}, the graph is really stopped (TF2 cancellation, TF1 session timeout), a request
waiting in a batch queue gives up at its deadline, and the server stays healthy."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf

from serving import deadline
from serving.batching import BatchingOptions
from serving.errors import ServingError
from serving.servable import Servable
from tests.server_process import start_server
from tests.serving import tf2_model

TIMEOUT_MS = 300
ENDLESS = 10**8  # matmul loop iterations: minutes of work unless cancelled


def export_tf1_slow(path: Path) -> Path:
    """A legacy TF1 SavedModel whose `serving_default` loops `n[0]` times over a matmul."""
    graph = tf.Graph()
    with graph.as_default():
        n = tf.compat.v1.placeholder(tf.int32, [None], name="n")
        m = tf.ones([128, 128]) / 128.0
        _, acc = tf.while_loop(lambda i, _: i < n[0], lambda i, a: (i + 1, a @ m), [0, m])
        total = tf.fill(tf.shape(n), tf.reduce_sum(acc))
        with tf.compat.v1.Session(graph=graph) as session:
            builder = tf.compat.v1.saved_model.Builder(str(path))
            signature = tf.compat.v1.saved_model.predict_signature_def({"n": n}, {"total": total})
            builder.add_meta_graph_and_variables(
                session, ["serve"], signature_def_map={"serving_default": signature}
            )
            builder.save()
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("deadline")
    tf2_model.export(root / "img" / "1")
    export_tf1_slow(root / "tf1slow" / "1")
    return root


@pytest.fixture(scope="module")
def server(models: Path, tmp_path_factory):
    config = tmp_path_factory.mktemp("deadline_cfg") / "models.config"
    config.write_text(
        "model_config_list {\n"
        + "".join(
            f'  config {{ name: "{m}" base_path: "{models / m}" model_platform: "tensorflow" }}\n'
            for m in ("img", "tf1slow")
        )
        + "}\n"
    )
    srv = start_server(
        f"--model_config_file={config}",
        f"--rest_api_timeout_in_ms={TIMEOUT_MS}",
        "--enable_grpc_healthcheck_service",
    )
    yield srv
    srv.stop()


@pytest.mark.parametrize("model", ["img", "tf1slow"])
def test_slow_request_is_504_and_server_stays_healthy(server, model):
    body = {"signature_name": "slow" if model == "img" else "", "instances": [ENDLESS]}
    start = time.monotonic()
    code, out = server.http("POST", f"/v1/models/{model}:predict", body)
    elapsed = time.monotonic() - start
    assert code == 504, out
    assert set(out) == {"error"} and "Deadline exceeded" in out["error"]
    assert f"{TIMEOUT_MS} ms" in out["error"]
    assert elapsed < 10, elapsed  # the loop was stopped, not run to the end
    # short work under the same timeout still succeeds, the server answers everything else
    body["instances"] = [3]
    assert server.http("POST", f"/v1/models/{model}:predict", body) == (
        200,
        {"predictions": [128.0]},
    )
    assert server.http("GET", f"/v1/models/{model}")[0] == 200
    with server.channel() as channel:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=30
        )
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_slow_requests_do_not_pile_up(server):
    """Several timed-out requests at once: each 504s, none keeps a core busy afterwards."""
    body = {"signature_name": "slow", "instances": [ENDLESS]}
    codes: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: codes.append(server.http("POST", "/v1/models/img:predict", body)[0])
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [504] * 4
    start = time.monotonic()
    code, out = server.http(
        "POST", "/v1/models/img:predict", {"signature_name": "slow", "instances": [3]}
    )
    assert code == 200 and out == {"predictions": [128.0]}
    assert time.monotonic() - start < 5


def _batch_thread_running(servable: Servable, signature: str) -> bool:
    """Whether the signature's (only) batch thread is inside a session run right now."""
    queue = servable.batchers.get(signature)
    if queue is None:
        return False
    frame = sys._current_frames().get(queue._threads[0].ident)
    while frame is not None:
        if frame.f_code.co_name == "_run_merged":
            return True
        frame = frame.f_back
    return False


def test_request_waiting_in_batch_queue_gives_up_at_deadline(models):
    servable = Servable("img", 1, models / "img" / "1")
    servable.batching = BatchingOptions(
        max_batch_size=1, max_enqueued_batches=10, num_batch_threads=1, batch_timeout_micros=0
    )
    sig = servable.signature("slow")
    outcome: dict[str, object] = {}

    def blocker() -> None:  # occupies the only batch thread for ~1-2 s
        outcome["blocker"] = servable.run(sig, {"n": np.array([2000], np.int32)}, ("total",))

    try:
        thread = threading.Thread(target=blocker)
        thread.start()
        # wait until the batch thread is running the blocker (an empty queue alone also
        # holds before the blocker is enqueued, and a fixed sleep races on a loaded machine)
        limit = time.monotonic() + 30
        while time.monotonic() < limit and not _batch_thread_running(servable, "slow"):
            time.sleep(0.01)
        assert thread.is_alive(), "the blocking request finished before the test could queue"
        start = time.monotonic()
        with deadline.scope(100):
            with pytest.raises(ServingError) as err:
                servable.run(sig, {"n": np.array([1], np.int32)}, ("total",))
        waited = time.monotonic() - start
        thread.join()
    finally:
        servable.close()
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and err.value.http_status == 504
    assert waited < 1.0, waited
    assert outcome["blocker"]["total"].tolist() == [128.0]
    assert not servable.batchers["slow"]._tasks  # the abandoned request left the queue


def test_deadline_scope_is_per_thread():
    seen: dict[str, object] = {}
    with deadline.scope(1000) as outer:
        worker = threading.Thread(target=lambda: seen.update(other=deadline.current()))
        worker.start()
        worker.join()
        seen["here"] = deadline.current()
    assert seen["here"] is outer and outer.timeout_ms == 1000
    assert seen["other"] is None and deadline.current() is None
    with deadline.scope(0) as none:
        assert none is None and deadline.current() is None
