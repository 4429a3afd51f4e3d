"""--rest_api_timeout_in_ms: a request that runs past it is answered 504 DEADLINE_EXCEEDED with
{"error": ...}, the graph is really stopped (TF2 cancellation, TF1 session timeout), a request
waiting in a batch queue gives up at its deadline, and the server stays healthy."""

from __future__ import annotations

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
from tests.serving.conftest import wait_for
from tests.serving.test_tf2_model import Gate, export_gate

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
    export_gate(root / "gate" / "1")
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


def _runnable_seconds(pid: int) -> float:
    """Time the process's threads have spent on a CPU or waiting in a run queue for one
    (/proc/PID/task/*/schedstat): a thread that wants to compute adds up a second per second
    of wall time however loaded the machine is, an idle one adds nothing."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            on_cpu, waiting, _ = stat.read_text().split()
        except (OSError, ValueError):  # the thread ended meanwhile
            continue
        total += int(on_cpu) + int(waiting)
    return total / 1e9


def _wait_until_idle(server, window: float = 0.4) -> None:
    """Wait for a `window` in which the server's threads want under a quarter of one CPU.

    An endless graph loop that was not stopped wants a whole CPU for hours (ENDLESS
    iterations), so the server never gets there; once the loops are stopped it gets there
    at once. The 60 s timeout is generous on purpose: nothing here depends on speed."""
    pid = server.proc.pid

    def idle() -> bool:
        start = _runnable_seconds(pid)
        time.sleep(window)
        return _runnable_seconds(pid) - start < window / 4

    wait_for(idle, timeout=60, interval=0)


@pytest.mark.parametrize("model", ["img", "tf1slow"])
def test_slow_request_is_504_and_server_stays_healthy(server, model):
    body = {"signature_name": "slow" if model == "img" else "", "instances": [ENDLESS]}
    code, out = server.http("POST", f"/v1/models/{model}:predict", body)
    assert code == 504, out
    assert set(out) == {"error"} and "Deadline exceeded" in out["error"]
    assert f"{TIMEOUT_MS} ms" in out["error"]
    # the loop was stopped, not run to the end: the 504 itself is sent at the deadline
    # whether or not the graph goes on, so watch the server's CPU instead
    _wait_until_idle(server)
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
    _wait_until_idle(server)  # all four loops were stopped
    code, out = server.http(
        "POST", "/v1/models/img:predict", {"signature_name": "slow", "instances": [3]}
    )
    assert code == 200 and out == {"predictions": [128.0]}


def test_request_waiting_in_batch_queue_gives_up_at_deadline(models, tmp_path):
    """The only batch thread runs a request that waits on a gate the test holds shut, so a
    second request can only wait in the queue: it must give up at its own 100 ms deadline
    while the first still runs (not when the batch thread frees up), and never run."""
    servable = Servable("gate", 1, models / "gate" / "1")
    servable.batching = BatchingOptions(
        max_batch_size=1, max_enqueued_batches=10, num_batch_threads=1, batch_timeout_micros=0
    )
    sig = servable.signature("serving_default")
    held, never = Gate(tmp_path / "held"), Gate(tmp_path / "never", opened=True)
    outcome: dict[str, object] = {}

    def run(gate: Gate) -> dict:
        return servable.run(sig, {"gate": np.array([gate.value], object)}, ("total",))

    def blocker() -> None:  # occupies the only batch thread until the gate opens
        outcome["blocker"] = run(held)

    def queued() -> None:
        try:
            with deadline.scope(100):
                outcome["queued"] = run(never)
        except ServingError as e:
            outcome["queued"] = e
        outcome["blocker_done_then"] = "blocker" in outcome

    try:
        thread = threading.Thread(target=blocker)
        thread.start()
        wait_for(held.started.exists, timeout=60)  # the batch thread is running the blocker
        waiter = threading.Thread(target=queued)
        waiter.start()
        # a generous bound, only so that a request that never gives up fails the test
        # instead of hanging it (the gate stays shut until then)
        waiter.join(60)
        assert not waiter.is_alive(), "the queued request did not give up at its deadline"
    finally:
        held.open()
        thread.join(60)
        servable.close()
    err = outcome["queued"]
    assert isinstance(err, ServingError), err
    assert err.code == grpc.StatusCode.DEADLINE_EXCEEDED and err.http_status == 504
    assert outcome["blocker_done_then"] is False  # it gave up while the blocker still ran
    assert outcome["blocker"]["total"].tolist() == [128.0]
    assert not servable.batchers["serving_default"]._tasks  # the abandoned request left the queue
    assert not never.started.exists()  # and never ran


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
