"""Memory and threads stay flat across many loads and unloads (TF1 sessions, TF2 SavedModels,
batch queues): the server process's VmRSS after many reload cycles is within a bound of what it
was after the first few."""

from __future__ import annotations

import base64
from pathlib import Path

import tensorflow as tf
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from tests.server_process import start_server
from tests.serving import tf2_model

WARM_CYCLES = 5
CYCLES = 20  # each cycle unloads two models and loads two (one TF1, one TF2)
RSS_GROWTH_BOUND_MB = 12.0  # before the fix it grew ~1.3 MB per cycle


def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS (kB) and Threads of a process, from /proc/<pid>/status."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            out[key] = int(value.split()[0])
    return out


def _config(models: dict[str, Path]) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    for name, path in models.items():
        entry = config.model_config_list.config.add(name=name, base_path=str(path))
        entry.model_platform = "tensorflow"
    return config


def test_rss_and_threads_flat_across_reloads(testdata, tmp_path):
    tf2_model.export(tmp_path / "img" / "1")
    hp2 = testdata / "saved_model_half_plus_two_cpu"
    hp3 = testdata / "saved_model_half_plus_three"
    configs = [
        _config({"tf1_a": hp2, "tf2_a": tmp_path / "img"}),
        _config({"tf1_b": hp3, "tf2_b": tmp_path / "img"}),
    ]
    expected_y = {"tf1_a": 3.0, "tf1_b": 4.0}
    (tmp_path / "batching.txt").write_text(
        "max_batch_size { value: 8 } batch_timeout_micros { value: 1000 }\n"
        "num_batch_threads { value: 2 }\n"
    )
    (tmp_path / "models.config").write_text(
        f"model_config_list {{ config {{ name: 'tf1_a' base_path: '{hp2}' }} }}"
    )
    server = start_server(
        f"--model_config_file={tmp_path / 'models.config'}",
        "--enable_batching",
        f"--batching_parameters_file={tmp_path / 'batching.txt'}",
        "--file_system_poll_wait_seconds=0",
    )
    samples: list[dict[str, int]] = []
    jpeg = {"b64": base64.b64encode(tf2_model.jpeg(0)).decode()}
    try:
        with server.channel() as channel:
            models = model_service_pb2_grpc.ModelServiceStub(channel)
            predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for cycle in range(CYCLES):
                config = configs[cycle % 2]
                response = models.HandleReloadConfigRequest(
                    model_management_pb2.ReloadConfigRequest(config=config), timeout=120
                )
                assert response.status.error_code == 0, response.status.error_message
                tf1, tf2 = (m.name for m in config.model_config_list.config)
                request = predict_pb2.PredictRequest()
                request.model_spec.name = tf1
                request.inputs["x"].CopyFrom(tf.make_tensor_proto([[2.0]], dtype=tf.float32))
                y = predict.Predict(request, timeout=60).outputs["y"].float_val
                assert list(y) == [expected_y[tf1]]
                code, out = server.http(
                    "POST", f"/v1/models/{tf2}:predict", {"instances": [jpeg, jpeg]}
                )
                assert code == 200 and len(out["predictions"]) == 2, out
                samples.append(_proc_status(server.proc.pid))
    finally:
        assert server.stop() == 0, server.log()
    warm, last = samples[WARM_CYCLES - 1], samples[-1]
    growth_mb = (last["VmRSS"] - warm["VmRSS"]) / 1024
    trace = [round(s["VmRSS"] / 1024) for s in samples]
    print(f"VmRSS MB per cycle: {trace}; threads {warm['Threads']} -> {last['Threads']}")
    assert growth_mb < RSS_GROWTH_BOUND_MB, f"RSS grew {growth_mb:.1f} MB: {trace}"
    # the unloaded versions' batch threads are gone (no thread per unloaded servable left)
    assert last["Threads"] <= warm["Threads"] + 4, (warm, last)
