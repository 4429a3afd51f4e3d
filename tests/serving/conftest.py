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
