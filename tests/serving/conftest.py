"""Start the real model server as a subprocess on free loopback ports, and talk to it."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def testdata(shared_data: Path) -> Path:
    """TF Serving's own test models."""
    path = shared_data / "tfserving_testdata"
    if not path.is_dir():
        pytest.skip("tfserving_testdata not found")
    return path


def copy_model(src: Path, dst: Path) -> Path:
    """A writable copy of a test model directory (fresh ctimes, so it counts as settled later)."""
    shutil.copytree(src, dst)
    for root, dirs, _files in os.walk(dst):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
    os.chmod(dst, 0o755)
    return dst


def wait_for(predicate, timeout: float, interval: float = 0.2):
    """Poll until predicate() is truthy; returns its value or fails."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as e:  # keep polling through transient errors
            last = e
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


def launch(*args: str, ready: str = "Running gRPC ModelServer at", timeout: float = 180):
    """`python -m serving` with exactly these flags (tests.server_process always adds
    --port/--rest_api_port); waits for `ready` in its output, or for it to exit.

    Returns (process, output lines so far, a thread that keeps reading them).
    """
    import subprocess
    import sys
    import threading

    from tests.conftest import REPO_ROOT

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    seen = threading.Event()

    def pump() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip())
            if ready in line:
                seen.set()
        seen.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    seen.wait(timeout)
    return proc, lines, reader


def stop(proc) -> int:
    """SIGTERM, then SIGKILL after 30 s; the exit status."""
    import signal
    import subprocess

    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
