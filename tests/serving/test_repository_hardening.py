"""Storage problems stay with their model, on one real server: base paths that cannot be
listed (a symlink loop, a file, a directory without permissions) and dangling version
symlinks are logged once and leave the other models serving; a reload that adds such a base
path, or that the config-file poll cannot decode, is refused whole; a reload adding a version
that cannot load answers the load error; a config file that is not UTF-8 fails the start.

TF Serving (9d981c5): file_system_storage_path_source.cc PollFileSystemForServable (an
absent base path is no error; a poll error is logged on every poll), server_core.cc
ReloadConfig/WaitUntilModelsAvailable (a reload answers the new models' load errors),
main.cc + server.cc (ParseProtoTextFile: "Invalid protobuf file", exit status 255).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import grpc
import pytest
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from tests.conftest import free_port
from tests.server_process import start_server
from tests.serving.conftest import copy_model, launch, wait_for

LOOP_REASON = "Too many levels of symbolic links"
#: chmod 000 does not stop root from listing a directory
CAN_DENY = os.geteuid() != 0


def _config_text(models: dict[str, Path]) -> str:
    entries = "".join(
        f'  config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" }}\n'
        for name, path in models.items()
    )
    return f"model_config_list {{\n{entries}}}\n"


@pytest.fixture(scope="module")
def env(testdata, tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening")
    hp2 = root / "hp2"
    hp2.mkdir()
    copy_model(testdata / "saved_model_half_plus_two_cpu" / "00000123", hp2 / "123")
    loop = root / "loop"
    loop.symlink_to(loop)
    afile = root / "afile"
    afile.write_text("a file where a base path should be")
    dangling = root / "dangling"
    (dangling / "2").mkdir(parents=True)
    (dangling / "1").symlink_to(root / "nowhere")
    (dangling / "2" / "saved_model.pb").symlink_to(root / "nowhere.pb")
    models = {"hp2": hp2, "loop": loop, "afile": afile, "dangling": dangling}
    denied = root / "denied"
    if CAN_DENY:
        denied.mkdir(mode=0)
        models["denied"] = denied
    config_file = root / "models.config"
    config_file.write_text(_config_text(models))
    time.sleep(0.6)  # versions must settle before the repository offers them
    srv = start_server(
        f"--model_config_file={config_file}",
        "--model_config_file_poll_wait_seconds=1",
        "--file_system_poll_wait_seconds=1",
        "--max_num_load_retries=0",
    )
    with srv.channel() as channel:
        yield {
            "server": srv,
            "root": root,
            "models": models,
            "config_file": config_file,
            "channel": channel,
        }
    if CAN_DENY:
        denied.chmod(0o755)  # let tmp_path cleanup remove it
    assert srv.stop() == 0, srv.log()


def _predict(env) -> list:
    status, body = env["server"].http(
        "POST", "/v1/models/hp2:predict", {"instances": [[2.0], [4.0]]}
    )
    assert status == 200, body
    return body["predictions"]


def _status_error(env, name: str) -> tuple[grpc.StatusCode, str]:
    stub = model_service_pb2_grpc.ModelServiceStub(env["channel"])
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetModelStatus(request, timeout=30)
    return caught.value.code(), caught.value.details()


def _reload(env, models: dict[str, Path]) -> model_management_pb2.ReloadConfigResponse:
    config = model_server_config_pb2.ModelServerConfig()
    for name, path in models.items():
        config.model_config_list.config.add(
            name=name, base_path=str(path), model_platform="tensorflow"
        )
    stub = model_service_pb2_grpc.ModelServiceStub(env["channel"])
    return stub.HandleReloadConfigRequest(
        model_management_pb2.ReloadConfigRequest(config=config), timeout=120
    )


def _count(env, text: str, start: int = 0) -> int:
    return sum(text in line for line in env["server"].lines[start:])


def test_unlistable_base_paths_are_confined_to_their_model(env):
    """The server starts; the good model serves; each bad one is NOT_FOUND with its reason,
    and its problem is logged once, without a traceback, however many polls pass."""
    assert _predict(env) == [[3.0], [4.0]]
    expected = {"loop": LOOP_REASON, "afile": "Not a directory"}
    if CAN_DENY:
        expected["denied"] = "Permission denied"
    for name, reason in expected.items():
        path = env["models"][name]
        assert _status_error(env, name) == (
            grpc.StatusCode.NOT_FOUND,
            f"Could not find any versions of model {name}: base path {path}: {reason}",
        )
    time.sleep(2.5)  # a few filesystem polls
    for name, reason in expected.items():
        line = f"Model {name}: base path {env['models'][name]}: {reason}"
        assert _count(env, line) == 1, env["server"].log()
    assert _count(env, "Traceback") == 0, env["server"].log()


def test_dangling_version_symlinks_are_logged_once(env):
    """A dangling version directory and a dangling saved_model.pb are skipped, once each in
    the log; the model has no versions."""
    dangling = env["models"]["dangling"]
    lines = [
        f"Model dangling: skipping version 1: {dangling / '1'} is a dangling symbolic link",
        "Model dangling: skipping version 2: "
        f"{dangling / '2' / 'saved_model.pb'} is a dangling symbolic link",
    ]
    time.sleep(2.5)  # a few filesystem polls
    assert [_count(env, line) for line in lines] == [1, 1], env["server"].log()
    code, message = _status_error(env, "dangling")
    assert (code, message) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model dangling",
    )


def test_reload_adding_a_symlink_loop_is_refused_whole(env):
    """The reload answers INVALID_ARGUMENT with a readable message and changes nothing: the
    model it drops keeps serving and the model it adds is not configured."""
    server = env["server"]
    start = len(server.lines)
    response = _reload(env, {"hp3": env["models"]["hp2"], "loop2": env["models"]["loop"]})
    assert response.status.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert response.status.error_message == (
        f"model loop2: base path {env['models']['loop']}: {LOOP_REASON}"
    )
    assert _predict(env) == [[3.0], [4.0]]
    assert _status_error(env, "hp3") == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model hp3",
    )
    time.sleep(3)  # filesystem and config-file polls
    assert _count(env, LOOP_REASON, start) == 0, server.log()
    assert _count(env, "Traceback", start) == 0, server.log()


def test_config_file_poll_failures_are_logged_once_and_keep_the_old_config(env):
    """A polled config file adding a symlink loop, then one that is not UTF-8: each failure
    is logged once over several polls, and the old config keeps serving."""
    server, config_file = env["server"], env["config_file"]
    original = config_file.read_bytes()
    start = len(server.lines)
    try:
        config_file.write_text(
            _config_text({"hp2": env["models"]["hp2"], "loop3": env["models"]["loop"]})
        )
        refused = (
            "PollFilesystemAndReloadConfig failed to ReloadConfig: "
            f"model loop3: base path {env['models']['loop']}: {LOOP_REASON}"
        )
        wait_for(lambda: _count(env, refused, start), timeout=15)
        time.sleep(2.5)
        assert _count(env, refused, start) == 1, server.log()
        config_file.write_bytes(original.replace(b'"hp2"', b'"hp\xe92"'))
        undecodable = "Failed to read ModelServerConfig file: 2:21 : Invalid UTF-8 byte 0xe9"
        wait_for(lambda: _count(env, undecodable, start), timeout=15)
        time.sleep(2.5)
        assert _count(env, undecodable, start) == 1, server.log()
        assert _count(env, "Traceback", start) == 0, server.log()
        assert _predict(env) == [[3.0], [4.0]]
        assert _status_error(env, "loop3")[0] == grpc.StatusCode.NOT_FOUND
    finally:
        config_file.write_bytes(original)


def test_reload_with_an_unloadable_new_version_answers_the_load_error(env):
    """A version written just before the reload is waited for (it is still settling), its
    load error answered as TF Serving's WaitUntilModelsAvailable does; hp2 keeps serving."""
    broken = env["root"] / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "1" / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    response = _reload(env, {"hp2": env["models"]["hp2"], "broken": broken})
    assert response.status.error_code == grpc.StatusCode.UNKNOWN.value[0]
    assert response.status.error_message.startswith(
        "1 model(s) did not become available: {{{name: broken version: 1} due to error: "
        "UNKNOWN: Failed to load version 1 of model broken: "
    )
    assert _predict(env) == [[3.0], [4.0]]
    assert _reload(env, {"hp2": env["models"]["hp2"]}).status.error_code == 0
    assert _predict(env) == [[3.0], [4.0]]


def test_config_file_that_is_not_utf8_fails_the_start(tmp_path):
    """Like any config file that does not parse: the parser's complaint, then
    "Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '...'", 255."""
    config_file = tmp_path / "models.config"
    config_file.write_bytes(
        b'model_config_list {\n  config { name: "caf\xe9" base_path: "/x" }\n}\n'
    )
    proc, lines, reader = launch(
        f"--port={free_port()}",
        f"--model_config_file={config_file}",
        ready="Failed to start server",
        timeout=120,
    )
    assert proc.wait(timeout=120) == 255
    reader.join(timeout=10)
    assert (
        "Error parsing text-format tensorflow.serving.ModelServerConfig: "
        "2:22 : Invalid UTF-8 byte 0xe9"
    ) in lines
    assert (
        f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{config_file}'"
        in lines
    )
    assert not any("Traceback" in line for line in lines)
