"""Shared fixtures: the offline datasets in ../shared/data (skipped when absent), free ports."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """Where the offline datasets live: $ZOO_SHARED_DATA or ../shared/data beside the repo."""
    return Path(os.environ.get("ZOO_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder; tests that need it skip when it is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}")
    return path


def free_port() -> int:
    """A TCP port that was free on loopback a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: Layers whose test files take longest, first: `make test` hands whole files to two workers
#: (pytest-xdist, --dist loadfile) in collection order, so the many short serving files
#: fill the end of the run instead of one long family file running alone.
LAYER_ORDER = ("training", "zoo", "serving")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the collected tests by layer (`LAYER_ORDER`), keeping the order within each."""

    def layer(item: pytest.Item) -> int:
        parts = Path(item.fspath).relative_to(REPO_ROOT / "tests").parts
        return LAYER_ORDER.index(parts[0]) if parts[0] in LAYER_ORDER else len(LAYER_ORDER)

    items.sort(key=layer)
