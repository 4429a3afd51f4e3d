"""Shared fixtures: the offline datasets in ../shared/data (skipped when absent), free ports,
the expensive things a test process builds once (a tiny CIFAR run, a `zoo serve`), and one
JAX compilation cache for the whole test run."""

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


@pytest.fixture(scope="session")
def cifar_small(shared_data, tmp_path_factory) -> Path:
    """20 train + 20 test images per class of the real CIFAR-10 folder (symlinks)."""
    from tests.helpers import small_image_folder

    if not (shared_data / "cifar10").is_dir():
        pytest.skip("cifar10 not found in shared data")
    return small_image_folder(shared_data / "cifar10", tmp_path_factory.mktemp("cifar"), 20)


@pytest.fixture(scope="session")
def cifar_tiny_run(cifar_small, tmp_path_factory):
    """(run dir, metrics) of the CIFAR convnet's tiny preset trained for 2 epochs on
    `cifar_small`: one per test process, for every test that needs a trained tiny run of it
    and only reads it (tests/training/test_cifar_convnet.py, tests/serving/test_zoo_cifar.py).
    Its export is `tests.harness.export_tiny_run(run_dir, "cifar_convnet")`."""
    from training import train

    run_dir = tmp_path_factory.mktemp("run") / "tiny"
    metrics = train.run("cifar_convnet", "tiny", run_dir, str(cifar_small), epochs=2, verbose=0)
    return run_dir, metrics


@pytest.fixture(scope="session")
def zoo_server(tmp_path_factory):
    """One `zoo serve` for this test process's end-to-end tests (`tests.harness.SharedServer`):
    `zoo_server.serve(name, base_path)` adds a model and returns the running server."""
    from tests.harness import SharedServer

    server = SharedServer.start(tmp_path_factory.mktemp("zoo_server"))
    yield server
    assert server.stop() == 0, server.server.log()


#: Ports handed out, below the kernel's ephemeral range (32768-60999 on Linux), so no
#: outgoing connection is ever given one of them.
PORTS = range(20000, 32000)
_LOCKS = Path(os.environ.get("TMPDIR", "/tmp")) / "tfzoo-test-ports"
_held: list = []  # the open lock files: a port stays reserved while this process lives


def free_port() -> int:
    """A loopback TCP port reserved for this process until it exits.

    Binding port 0 and closing it races: another test process can be handed the same port
    before the server binds it. Here each port has a lock file that the process holds
    (`flock`, released by the kernel when the process exits), and the ports come from below
    the ephemeral range, so neither another test process nor an outgoing connection takes it.
    """
    import fcntl
    import random

    _LOCKS.mkdir(exist_ok=True)
    start = random.randrange(len(PORTS))
    for i in range(len(PORTS)):
        port = PORTS[(start + i) % len(PORTS)]
        lock = open(_LOCKS / str(port), "a")  # noqa: SIM115 (held open on purpose)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # in use by something that does not take these locks
                lock.close()
                continue
        _held.append(lock)
        return port
    raise RuntimeError(f"no free port left in {PORTS}")


#: the JAX compilation cache this process made for the test run (removed when it ends)
_jax_cache: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    """One JAX compilation cache for every JAX process of this test run: the test subprocesses
    that run JAX (tests/zoo/test_jax_backend.py, `zoo train` under JAX, ...) build and train
    the same tiny models, and a program one of them compiled is loaded by the others instead
    of compiled again (the cache key is the program with its compile options, so what runs is
    the same). Set here, before pytest-xdist starts its workers, which inherit the setting and
    pass it on to their subprocesses; an explicit $JAX_COMPILATION_CACHE_DIR wins.

    And XLA compiles without its expensive CPU passes (`tests.helpers.FAST_XLA`), for JAX
    and for TensorFlow's `jit_compile`: the suite's programs are tiny models run for a few
    steps, where compiling costs more than it saves (GoogLeNet's tiny run under JAX: 73 s
    with them, 50 s without). An explicit $XLA_FLAGS wins."""
    from tests.helpers import FAST_XLA

    os.environ.setdefault("XLA_FLAGS", FAST_XLA)
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    import tempfile

    _jax_cache.append(tempfile.mkdtemp(prefix="tfzoo-test-jax-cache-"))
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _jax_cache[0]
    # every program, however quick to compile: most here are small (one op, one initializer)
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"


def pytest_unconfigure(config: pytest.Config) -> None:
    import shutil

    for path in _jax_cache:
        shutil.rmtree(path, ignore_errors=True)


#: Layers whose test files take longest, first: `make test` hands whole files to its workers
#: (pytest-xdist, --dist loadfile) in collection order (`--no-loadscope-reorder`: xdist
#: would otherwise order files by their number of tests), so the many short serving files
#: fill the end of the run instead of one long family file running alone.
LAYER_ORDER = ("training", "deploy", "zoo", "serving")

#: The longest files, longest first (seconds each in one `make test` here: 285, 126, 117,
#: 95, 62, 60, 58, 55), before their layer: the four-test fine-tuning comparison, handed
#: out by its number of tests, started at 347 s and ran alone to the end.
LONGEST_FIRST = (
    "training/test_prepared_training.py",
    "training/test_captioner.py",
    "training/test_finetune_compare.py",
    "training/test_seq2seq.py",
    "training/test_pretrained.py",
    "zoo/test_jax_backend.py",
    "training/test_googlenet.py",
    "training/test_gpt.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the collected tests: `LONGEST_FIRST`, then by layer (`LAYER_ORDER`), keeping
    the order within each."""

    def rank(item: pytest.Item) -> tuple[int, int]:
        path = Path(item.fspath).relative_to(REPO_ROOT / "tests")
        if path.as_posix() in LONGEST_FIRST:
            return (0, LONGEST_FIRST.index(path.as_posix()))
        layer = path.parts[0]
        return (1, LAYER_ORDER.index(layer) if layer in LAYER_ORDER else len(LAYER_ORDER))

    items.sort(key=rank)
