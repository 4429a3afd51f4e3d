"""Version policies, labels, polling, corrupt versions, swaps under load, config reloads."""

from __future__ import annotations

import shutil
import threading
import time
import types

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from serving import repository
from tests.server_process import start_server
from tests.serving.conftest import copy_model, wait_for

CONFIG = """
model_config_list {
  config {
    name: "hp2"
    base_path: "%(all)s"
    model_platform: "tensorflow"
    model_version_policy { all {} }
    version_labels { key: "stable" value: 123 }
    version_labels { key: "canary" value: 124 }
  }
  config {
    name: "swap"
    base_path: "%(swap)s"
    model_platform: "tensorflow"
  }
}
"""


@pytest.fixture(scope="module")
def env(testdata, tmp_path_factory):
    root = tmp_path_factory.mktemp("versions")
    src = testdata / "saved_model_half_plus_two_2_versions"
    all_dir = copy_model(src, root / "all")
    swap_dir = root / "swap"
    swap_dir.mkdir()
    copy_model(src / "00000123", swap_dir / "00000123")
    cfg = root / "models.config"
    cfg.write_text(CONFIG % {"all": all_dir, "swap": swap_dir})
    srv = start_server(
        f"--model_config_file={cfg}",
        "--file_system_poll_wait_seconds=1",
        "--model_config_file_poll_wait_seconds=1",
        "--max_num_load_retries=1",
        "--load_retry_interval_micros=200000",
    )
    yield {"server": srv, "src": src, "all": all_dir, "swap": swap_dir, "cfg": cfg}
    assert srv.stop() == 0, srv.log()


def _grpc_version(channel, model, **spec) -> int:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if "version" in spec:
        request.model_spec.version.value = spec["version"]
    if "label" in spec:
        request.model_spec.version_label = spec["label"]
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[2.0]], dtype=tf.float32))
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
        request, timeout=30
    )
    assert list(response.outputs["y"].float_val) == [3.0]
    return response.model_spec.version.value


def _status(server, model) -> dict[int, tuple[str, str]]:
    code, body = server.http("GET", f"/v1/models/{model}")
    assert code == 200, body
    return {
        int(s["version"]): (s["state"], s["status"]["error_message"])
        for s in body["model_version_status"]
    }


def test_policy_all_and_labels(env):
    server = env["server"]
    with server.channel() as ch:
        assert _grpc_version(ch, "hp2") == 124
        assert _grpc_version(ch, "hp2", version=123) == 123
        assert _grpc_version(ch, "hp2", label="stable") == 123
        assert _grpc_version(ch, "hp2", label="canary") == 124
    code, body = server.http("POST", "/v1/models/hp2/labels/stable:predict", {"instances": [2.0]})
    assert (code, body) == (200, {"predictions": [3.0]})
    assert _status(server, "hp2") == {124: ("AVAILABLE", ""), 123: ("AVAILABLE", "")}
    assert _status(server, "swap") == {123: ("AVAILABLE", "")}


def test_new_version_is_served_within_poll_interval(env):
    """A version copied in is found by the file system poll (every second here) and served,
    with no reload asked for. The 60 s bound (60 poll intervals) only keeps a poller that
    never finds it from hanging the test; how fast a loaded machine gets there is not the
    behaviour under test."""
    server = env["server"]
    copy_model(env["src"] / "00000124", env["all"] / "125")
    with server.channel() as ch:
        wait_for(lambda: _grpc_version(ch, "hp2") == 125, timeout=60)


def test_corrupt_version_leaves_old_serving(env):
    server = env["server"]
    bad = env["swap"] / "00000130"
    bad.mkdir()
    (bad / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    status = wait_for(
        lambda: _status(server, "swap").get(130, ("", ""))[0] == "END" and _status(server, "swap"),
        60,
    )
    assert status[123] == ("AVAILABLE", "")
    assert "Failed to load version 130" in status[130][1]
    with server.channel() as ch:
        assert _grpc_version(ch, "swap") == 123
    shutil.rmtree(bad)


def test_swap_under_load_has_no_failures(env):
    """16 clients keep asking while version 124 replaces 123: no request fails. The swap
    starts once every kind of client has been answered (by 123) and the load ends once as
    many more requests have been answered after 123 was unloaded: events, not sleeps."""
    server = env["server"]
    stop = threading.Event()
    failures: list[str] = []
    seen: set[int] = set()
    counts = [0]
    lock = threading.Lock()

    def client(i: int) -> None:
        with server.channel() as ch:
            while not stop.is_set():
                try:
                    if i % 2:
                        seen.add(_grpc_version(ch, "swap"))
                    else:
                        code, body = server.http(
                            "POST", "/v1/models/swap:predict", {"instances": [2.0]}
                        )
                        if (code, body) != (200, {"predictions": [3.0]}):
                            failures.append(f"{code} {body}")
                    with lock:
                        counts[0] += 1
                except Exception as e:  # every failure is recorded, none is allowed
                    failures.append(repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: counts[0] >= 32 and seen == {123}, 60)  # under load, before the swap
        at_copy = counts[0]
        copy_model(env["src"] / "00000124", env["swap"] / "00000124")
        wait_for(lambda: 124 in seen and _status(server, "swap").get(123, ("",))[0] == "END", 60)
        swapped = counts[0]
        wait_for(lambda: counts[0] >= swapped + 32, 60)  # and after it
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:5]
    assert seen == {123, 124} and counts[0] > 50
    assert swapped > at_copy  # requests were answered while the versions changed over


def test_reload_config_request_replaces_model_list(env):
    server = env["server"]
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add(name="only", base_path=str(env["all"]))
    model.model_platform = "tensorflow"
    model.model_version_policy.specific.versions.append(123)
    with server.channel() as ch:
        stub = model_service_pb2_grpc.ModelServiceStub(ch)
        response = stub.HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest(config=config), timeout=60
        )
        assert response.status.error_code == 0, response.status.error_message
        assert _grpc_version(ch, "only") == 123
        with pytest.raises(grpc.RpcError) as err:
            _grpc_version(ch, "hp2")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        # removed models keep their versions, as END (ServableStateMonitor keeps kEnd states;
        # get_model_status_impl.cc reports them)
        removed = _status(server, "hp2")
        assert {123, 124} <= set(removed) and set(removed.values()) == {("END", "")}
        bad = model_server_config_pb2.ModelServerConfig()
        bad.CopyFrom(config)
        bad.model_config_list.config[0].version_labels["x"] = 999
        response = stub.HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest(config=bad), timeout=60
        )
        assert response.status.error_code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        assert "not currently available" in response.status.error_message
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "only"
        status = stub.GetModelStatus(request, timeout=30)
        assert [s.version for s in status.model_version_status] == [123]


def test_config_file_polling(env):
    server = env["server"]
    entry = f'name: "polled" base_path: "{env["swap"]}" model_platform: "tensorflow"'
    env["cfg"].write_text("model_config_list { config { " + entry + " } }")
    with server.channel() as ch:
        assert wait_for(lambda: _grpc_version(ch, "polled") == 124, timeout=60)


def test_repository_discovery_and_policies(tmp_path, monkeypatch):
    for name in ("00000123", "7", "abc", "99"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "saved_model.pb").write_bytes(b"x")
    (tmp_path / "200").mkdir()  # half-copied: no saved_model.pb yet
    time.sleep(0.6)  # the versions above are at least 0.6 s old from here on
    (tmp_path / "300").mkdir()
    (tmp_path / "300" / "saved_model.pb").write_bytes(b"x")  # still being written
    # the scan's clock stopped right after 300 was written: 300 is younger than the 0.5 s
    # settle time however long this machine takes to reach the scan, the others older
    now = time.time()
    monkeypatch.setattr(repository, "time", types.SimpleNamespace(time=lambda: now))
    found = repository.list_versions(tmp_path, settle_seconds=0.5)
    monkeypatch.undo()
    assert [v.version for v in found] == [7, 99, 123]
    cfg = model_server_config_pb2.ModelConfig(name="m", base_path=str(tmp_path))
    assert [v.version for v in repository.aspired_versions(cfg, found)] == [123]
    cfg.model_version_policy.latest.num_versions = 2
    assert [v.version for v in repository.aspired_versions(cfg, found)] == [99, 123]
    cfg.model_version_policy.specific.versions.extend([7, 8])
    assert [v.version for v in repository.aspired_versions(cfg, found)] == [7]
    cfg.model_version_policy.all.SetInParent()
    assert len(repository.aspired_versions(cfg, found)) == 3
    time.sleep(0.6)
    assert [v.version for v in repository.list_versions(tmp_path, 0.5)] == [7, 99, 123, 300]
