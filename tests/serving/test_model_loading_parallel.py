"""Models load in parallel, as in TF Serving, and a load that fails still fails as before.

The initial models load with ServerCore's `num_initial_load_threads` threads (4 x CPUs: the
zoo's `--num_initial_load_threads`), later ones with `--num_load_threads`
(server_core.h:109-120; load_servables_fast.cc ConnectSourcesWithFastInitialLoad). Each
"gate" model here, when its warmup request runs, writes a marker file and then waits, in its
graph, until the test creates a release file (or for a minute): two gates are loading at the
same time exactly when both markers exist before either is released. Loaded one at a time,
the second marker would appear only after the first gate gave up waiting.

Sources (tensorflow/serving at 9d981c5): model_servers/server_core.h (thread counts),
server_core.cc WaitUntilModelsAvailable (the error of a config whose model fails),
core/loader_harness.cc with util/retrier.cc (retries), load_servables_fast.cc (the start
fails: "N servable(s) did not become available").
"""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from serving.layout import WARMUP_PATH
from serving.main import STARTUP_FAILED
from tests.conftest import free_port
from tests.serving import tf2_model
from tests.serving.conftest import copy_model, launch, stop, wait_for

HOLD_SECONDS = 60.0  # how long a gate waits for its release at most
WAIT = 30.0  # how long the test waits for a marker (well under HOLD_SECONDS)


class Gate(tf.Module):
    """y = x + 1; its first call writes `started`, then waits for `release` to exist."""

    def __init__(self, started: Path, release: Path):
        super().__init__()
        self.started, self.release = str(started), str(release)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x):
        wrote = tf.io.write_file(self.started, "loading")
        with tf.control_dependencies([wrote]):
            deadline = tf.timestamp() + HOLD_SECONDS

        def waiting(i):
            # the pattern depends on `i` so that no graph optimisation runs it only once
            pattern = tf.strings.substr(
                tf.strings.join([self.release, tf.strings.as_string(i)]), 0, len(self.release)
            )
            released = tf.size(tf.io.matching_files(pattern)) > 0
            return tf.logical_and(tf.logical_not(released), tf.timestamp() < deadline)

        (turns,) = tf.while_loop(waiting, lambda i: i + 1, [tf.constant(0)])
        return {"y": x + 1.0 + 0.0 * tf.cast(turns, tf.float32)}


def _gate(root: Path, name: str) -> tuple[Path, Path]:
    """Export gate model `name` under `root` (version 1, with one warmup record); returns
    (its marker, its release file)."""
    started, release = root / f"{name}.started", root / f"{name}.release"
    version = root / name / "1"
    tf.saved_model.save(Gate(started, release), str(version))
    (version / WARMUP_PATH).parent.mkdir()
    with tf.io.TFRecordWriter(str(version / WARMUP_PATH)) as writer:
        writer.write(tf2_model.warmup_record("serving_default", "x", np.ones([1], np.float32)))
    return started, release


def _broken(root: Path) -> None:
    (root / "broken" / "1").mkdir(parents=True)
    (root / "broken" / "1" / "saved_model.pb").write_bytes(b"this is not a SavedModel")


def _config(root: Path, *names: str) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    for name in names:
        config.model_config_list.config.add(
            name=name, base_path=str(root / name), model_platform="tensorflow"
        )
    return config


def _write_config(root: Path, *names: str) -> Path:
    path = root / "models.config"
    path.write_text(str(_config(root, *names)))
    return path


def _both_loading(markers: list[Path], releases: list[Path], lines: list[str]) -> None:
    """Wait until every marker exists (each gate's warmup has started) while none is
    released yet, then release them all."""
    try:
        wait_for(lambda: all(m.exists() for m in markers), WAIT, interval=0.05)
        assert not any("Successfully loaded servable version {name: gate" in x for x in lines)
    finally:
        for release in releases:
            release.touch()


def test_initial_models_load_together_and_a_failed_one_still_fails_the_start(tmp_path):
    """Two initial models with slow warmups are loading at the same time; a third that cannot
    load is retried and fails the start as it did when loads ran one at a time."""
    a, b = _gate(tmp_path, "gate_a"), _gate(tmp_path, "gate_b")
    _broken(tmp_path)
    config = _write_config(tmp_path, "gate_a", "broken", "gate_b")
    proc, lines, reader = launch(
        f"--port={free_port()}",
        f"--model_config_file={config}",
        "--num_initial_load_threads=2",
        "--max_num_load_retries=1",
        "--load_retry_interval_micros=0",
        ready="Loading servable",
    )
    try:
        _both_loading([a[0], b[0]], [a[1], b[1]], lines)
        assert proc.wait(timeout=120) == STARTUP_FAILED
    finally:
        stop(proc)
    reader.join(10)
    text = "\n".join(lines)
    assert "Retrying of Loading servable: {name: broken version: 1} retry: 1" in text
    assert "Retrying of Loading servable: {name: broken version: 1} exhausted" in text
    for gate in ("gate_a", "gate_b"):  # the others loaded (warmup included) all the same
        assert f"Successfully loaded servable version {{name: {gate} version: 1}}" in text
    assert (
        "Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available: "
        "{{{name: broken version: 1} due to error: UNKNOWN: Failed to load version 1" in text
    )
    assert not any("Running gRPC ModelServer" in line for line in lines)


def _status(channel, model: str) -> list:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    return list(stub.GetModelStatus(request, timeout=30).model_version_status)


def _predict(channel, model: str, x: list) -> float:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x, dtype=tf.float32))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return stub.Predict(request, timeout=30).outputs["y"].float_val[0]


def test_reloaded_models_load_together_with_num_load_threads(tmp_path, testdata):
    """--num_load_threads=2: two models a config reload adds are loading at the same time,
    each stays LOADING (not served) until its warmup has run, and a model of the same reload
    that cannot load is answered as the reload's error, as when loads ran one at a time."""
    copy_model(testdata / "saved_model_half_plus_two_cpu" / "00000123", tmp_path / "hp2" / "1")
    c, d = _gate(tmp_path, "gate_c"), _gate(tmp_path, "gate_d")
    _broken(tmp_path)
    port = free_port()
    proc, lines, reader = launch(
        f"--port={port}",
        f"--model_config_file={_write_config(tmp_path, 'hp2')}",
        "--num_load_threads=2",
        "--max_num_load_retries=1",
        "--load_retry_interval_micros=0",
    )
    answer: list = []
    try:
        assert proc.poll() is None, "\n".join(lines)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            request = model_management_pb2.ReloadConfigRequest(
                config=_config(tmp_path, "hp2", "gate_c", "broken", "gate_d")
            )
            reload = threading.Thread(
                target=lambda: answer.append(stub.HandleReloadConfigRequest(request, timeout=120))
            )
            reload.start()
            try:
                wait_for(lambda: c[0].exists() and d[0].exists(), WAIT, interval=0.05)
                for gate in ("gate_c", "gate_d"):  # warming up: loading, not served
                    (status,) = _status(channel, gate)
                    assert status.state == get_model_status_pb2.ModelVersionStatus.LOADING
                    try:
                        _predict(channel, gate, [2.0])
                        raise AssertionError(f"{gate} answered before its warmup ended")
                    except grpc.RpcError as err:
                        assert err.code() == grpc.StatusCode.NOT_FOUND
            finally:
                c[1].touch(), d[1].touch()
                reload.join(120)
            (response,) = answer
            assert response.status.error_code == grpc.StatusCode.UNKNOWN.value[0]
            assert response.status.error_message.startswith(
                "1 model(s) did not become available: {{{name: broken version: 1} due to error: "
                "UNKNOWN: Failed to load version 1"
            )
            for gate in ("gate_c", "gate_d"):
                (status,) = _status(channel, gate)
                assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
                assert _predict(channel, gate, [2.0]) == 3.0
            assert _predict(channel, "hp2", [[2.0]]) == 3.0  # still serving
        text = "\n".join(lines)
        assert "Retrying of Loading servable: {name: broken version: 1} retry: 1" in text
    finally:
        assert stop(proc) == 0, "\n".join(lines[-40:])
    reader.join(10)
