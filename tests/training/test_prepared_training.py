"""One training path on every backend: `zoo prepare` writes a family's arrays and
`zoo train --data` trains on them under JAX in a process where importing TensorFlow raises;
`zoo export`'s steps (TensorFlow, in the test process) export that run, and the export passes
the harness's end-to-end steps (fresh-process load, gRPC and REST) like a TensorFlow-trained
one. A resumed JAX run continues where it stopped, and two JAX devices split the global
batch. Each family is prepared and trained once here (`jax_run`); the GPT's run is also the
one-device run that the resumed and the data-parallel runs must follow.

A family joins with a `PREPARED_CASE` (`tests.harness.PreparedCase`: its tiny data and a
request for its signature) in its own test module, found here by name.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_data_dir
from tests.harness import FamilyEndToEnd, PreparedCase
from tests.helpers import FAST_XLA, REPO_ROOT, subprocess_env
from zoo import registry


def _prepared_cases() -> dict[str, PreparedCase]:
    """`PREPARED_CASE` of every family's test module (`tests/training/test_<family>.py`)."""
    cases = {}
    for family in registry.names():
        module = importlib.import_module(f"tests.training.test_{family}")
        if isinstance(case := getattr(module, "PREPARED_CASE", None), PreparedCase):
            cases[family] = case
    return cases


CASES = _prepared_cases()


def zoo_without_tensorflow(*args: str, env: dict[str, str] | None = None, timeout=600):
    """`zoo ARGS` under JAX in a process where `import tensorflow` raises."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.no_tensorflow", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(KERAS_BACKEND="jax", **(env or {})),
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, f"zoo {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _sets(pairs: tuple[str, ...]) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


def prepare(family: str, tmp: Path, shared: Path) -> Path:
    """`zoo prepare FAMILY --preset tiny` without TensorFlow; the prepared folder."""
    case = CASES[family]
    out = tmp / "prepared"
    data_dir = case.data(tmp, shared)
    zoo_without_tensorflow(
        "prepare",
        family,
        "--preset",
        "tiny",
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
        *_sets(case.prepare),
    )
    return out


def train_on(family: str, data: Path, run: Path, *extra: str, env=None) -> dict:
    """`zoo train FAMILY --data DATA` without TensorFlow; its metrics.json."""
    zoo_without_tensorflow(
        "train",
        family,
        "--data",
        str(data),
        "--model-dir",
        str(run),
        "--verbose",
        "0",
        *_sets(CASES[family].train),
        *extra,
        env=env,
    )
    return json.loads((run / "metrics.json").read_text())


_PREPARED: dict[str, Path] = {}
_RUNS: dict[str, tuple[Path, dict]] = {}


def prepared_once(family: str, tmp_path_factory) -> Path:
    """`family`'s tiny data prepared by `zoo prepare`, once per test process."""
    if family not in _PREPARED:
        _PREPARED[family] = prepare(family, tmp_path_factory.mktemp(family), shared_data_dir())
    return _PREPARED[family]


def jax_run(family: str, tmp_path_factory) -> tuple[Path, dict]:
    """(run dir, metrics) of `family`'s tiny `zoo train --data` on one JAX device, once per
    test process; tests only read it."""
    if family not in _RUNS:
        data = prepared_once(family, tmp_path_factory)
        run = tmp_path_factory.mktemp(f"{family}-jax") / "run"
        _RUNS[family] = run, train_on(family, data, run)
    return _RUNS[family]


def _family_class(family: str) -> type:
    case = CASES[family]

    class TrainedUnderJax(FamilyEndToEnd):
        signature = case.signature
        atol = case.atol

        @pytest.fixture(scope="class")
        def tiny_run(self, tmp_path_factory):
            return jax_run(family, tmp_path_factory)

        @pytest.fixture(scope="class")
        def request_inputs(self):
            return case.request(shared_data_dir()) if callable(case.request) else case.request

        def test_run_records_jax_on_the_cpu(self, tiny_run):
            run_dir, metrics = tiny_run
            assert metrics["backend"] == "jax" and metrics["strategy"] == "OneDevice"
            info = json.loads((run_dir / "run.json").read_text())
            (segment,) = info["training"]["segments"]
            assert segment["environment"]["backend"] == "jax"
            assert segment["environment"]["devices"] == [{"count": 1, "kind": "CPU", "name": "cpu"}]
            assert "tensorflow" not in segment["environment"]["framework_versions"]
            assert segment["command"].startswith(f"zoo train {family} --data ")
            assert info["prepared_data"].startswith(f"zoo prepare {family} --preset tiny")

    TrainedUnderJax.family = family
    TrainedUnderJax.__name__ = TrainedUnderJax.__qualname__ = f"Test{family.title()}UnderJax"
    return TrainedUnderJax


for _family in CASES:
    globals()[f"Test{_family.title()}UnderJax"] = _family_class(_family)


def _checkpoint(path: Path) -> dict[str, np.ndarray]:
    """Every array of a `.weights.h5` checkpoint (model and optimizer) by its path."""
    import h5py

    arrays: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: arrays.update({name: obj[()]}) if hasattr(obj, "shape") else None
        )
    return arrays


@pytest.fixture(scope="module")
def gpt_prepared(tmp_path_factory) -> Path:
    return prepared_once("gpt", tmp_path_factory)


@pytest.fixture(scope="module")
def gpt_one_device(tmp_path_factory) -> tuple[Path, dict]:
    """The tiny GPT's one-device run (the JAX class's run): (run dir, metrics)."""
    return jax_run("gpt", tmp_path_factory)


def test_a_resumed_jax_run_continues_where_it_stopped(gpt_prepared, gpt_one_device, tmp_path):
    """One epoch, then a second start of the same command resumes from its checkpoint and
    ends where an uninterrupted run ends: step counter, schedule, optimizer moments, data
    order and weights."""
    straight_dir, straight = gpt_one_device
    train_on("gpt", gpt_prepared, tmp_path / "resumed", "--epochs", "1")
    first = _checkpoint(tmp_path / "resumed" / "checkpoints" / "ckpt-0001.weights.h5")
    resumed = train_on("gpt", gpt_prepared, tmp_path / "resumed")
    assert resumed["resumed_from_epoch"] == 1 and straight["resumed_from_epoch"] == 0
    a = _checkpoint(straight_dir / "checkpoints" / "ckpt-0002.weights.h5")
    b = _checkpoint(tmp_path / "resumed" / "checkpoints" / "ckpt-0002.weights.h5")
    assert int(first["optimizer/vars/0"]) == 100  # 200 iterations in 2 epochs
    assert int(a["optimizer/vars/0"]) == int(b["optimizer/vars/0"]) == 200
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert not np.allclose(first["optimizer/vars/1"], a["optimizer/vars/1"])  # it trained on
    losses = [[h["loss"] for h in m["history"]] for m in (straight, resumed)]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    info = json.loads((tmp_path / "resumed" / "run.json").read_text())
    assert [s["epochs"] for s in info["training"]["segments"]] == [[0, 1], [1, 2]]


def test_two_jax_devices_split_the_global_batch(gpt_prepared, gpt_one_device, tmp_path):
    """`XLA_FLAGS=--xla_force_host_platform_device_count=2`: `auto` is data parallelism
    over both devices, the batch of 16 is laid out across them (8 rows each), and training
    follows the one-device run's curve (the same global batch, split)."""
    two = {"XLA_FLAGS": f"{FAST_XLA} --xla_force_host_platform_device_count=2"}
    _, one = gpt_one_device
    both = train_on("gpt", gpt_prepared, tmp_path / "two", env=two)
    assert both["strategy"] == "DataParallel" and both["replicas"] == 2
    assert both["global_batch_size"] == one["global_batch_size"] == 16
    (segment,) = json.loads((tmp_path / "two" / "run.json").read_text())["training"]["segments"]
    assert segment["environment"]["devices"] == [{"count": 2, "kind": "CPU", "name": "cpu"}]
    np.testing.assert_allclose(
        [h["loss"] for h in both["history"]], [h["loss"] for h in one["history"]], rtol=1e-3
    )
    layout = subprocess.run(
        [sys.executable, "-c", SHARDS],
        capture_output=True,
        text=True,
        env=subprocess_env(KERAS_BACKEND="jax", **two),
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert layout.returncode == 0, layout.stderr
    assert json.loads(layout.stdout.strip().splitlines()[-1]) == [[8, 32], [8, 32]]


def test_two_jax_processes_train_as_one(gpt_prepared, gpt_one_device, tmp_path):
    """Two processes joined by `keras.distribution.initialize` (KERAS_DISTRIBUTION_* set, as
    on two hosts; gloo collectives on the CPU): one device each, DataParallel over both.
    Each feeds its own half of every global batch, the chief alone writes the run
    directory, and training follows the one-process run's curve."""
    from tests.conftest import free_port

    addresses = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.no_tensorflow",
                "train",
                "gpt",
                "--data",
                str(gpt_prepared),
                "--model-dir",
                str(tmp_path / "two"),
                "--verbose",
                "0",
                *_sets(CASES["gpt"].train),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO_ROOT,
            env=subprocess_env(
                KERAS_BACKEND="jax",
                KERAS_DISTRIBUTION_JOB_ADDRESSES=addresses,
                KERAS_DISTRIBUTION_NUM_PROCESSES="2",
                KERAS_DISTRIBUTION_PROCESS_ID=str(index),
            ),
        )  # fmt: skip
        for index in range(2)
    ]
    try:
        logs = [p.communicate(timeout=400)[0] for p in processes]
    finally:
        for p in processes:
            p.kill()
    for p, log in zip(processes, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    _, one = gpt_one_device
    both = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert both["strategy"] == "DataParallel" and both["replicas"] == 2
    assert both["global_batch_size"] == one["global_batch_size"] == 16
    (segment,) = json.loads((tmp_path / "two" / "run.json").read_text())["training"]["segments"]
    assert segment["environment"]["devices"] == [{"count": 2, "kind": "CPU", "name": "cpu"}]
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == [
        "ckpt-0001.weights.h5",
        "ckpt-0002.weights.h5",
    ]  # the other process's copies went to its scratch files
    np.testing.assert_allclose(
        [h["loss"] for h in both["history"]], [h["loss"] for h in one["history"]], rtol=5e-3
    )


def test_each_process_reads_its_share_of_a_global_batch():
    """`WholeReplicaBatches` over 4 devices in 2 processes: a batch of 10 windows is cut to
    8, process 0 takes windows 0-3 and process 1 windows 4-7 (together the one-process
    batch)."""
    from training.array_datasets import ConsecutiveWindows, WholeReplicaBatches

    data = ConsecutiveWindows(np.arange(41), block_size=4, batch_size=10)  # 10 windows
    shares = [WholeReplicaBatches(data, 4, process, 2)[0] for process in (0, 1)]
    whole = WholeReplicaBatches(data, 4)[0]
    assert [x[:, 0].tolist() for x, _ in shares] == [[0, 4, 8, 12], [16, 20, 24, 28]]
    for i in (0, 1):
        np.testing.assert_array_equal(np.concatenate([b[i] for b in shares]), whole[i])
    with pytest.raises(ValueError, match="3 devices do not split over 2 processes"):
        WholeReplicaBatches(data, 3, 0, 2)


#: how `training.distribution` lays a batch of 16 windows of 32 ids over the devices
SHARDS = """
import json, jax, numpy as np
from training.distribution import placement
import keras
place = placement("auto")
assert place.replicas == 2, place
layout = keras.distribution.distribution().get_data_layout((16, 32))
batch = keras.distribution.distribute_tensor(np.zeros((16, 32), "int32"), layout)
print(json.dumps([list(s.data.shape) for s in batch.addressable_shards]))
"""


def test_damaged_prepared_data_is_a_clear_error(gpt_prepared, tmp_path):
    """A truncated shard, a missing one, another family's data or a folder that is not
    prepared data are refused before training starts, naming the problem."""
    import shutil

    from training import prepared, train

    damaged = tmp_path / "damaged"
    shutil.copytree(gpt_prepared, damaged)
    shard = damaged / "train" / "ids-00000.npy"
    shard.write_bytes(shard.read_bytes()[:200])
    with pytest.raises(ValueError, match="ids-00000.npy"):
        prepared.read(damaged).split("train")
    shard.unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        prepared.read(damaged).split("train")
    with pytest.raises(KeyError, match="no split 'test'"):
        prepared.read(gpt_prepared).split("test")
    with pytest.raises(ValueError, match="holds gpt data, not tagger's"):
        train.run("tagger", data=gpt_prepared, model_dir=tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="not prepared data"):
        train.run("gpt", data=tmp_path, model_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_sharded_arrays_read_back_whole(tmp_path):
    """Arrays larger than a shard are cut into several files and read back, in any row
    order, as the array written."""
    from training import prepared

    images = np.arange(50 * 8 * 8, dtype=np.uint8).reshape(50, 8, 8)
    labels = np.arange(50, dtype=np.int32)
    prepared.write(
        tmp_path / "p",
        family="f",
        preset="p",
        config={},
        assets={},
        splits={"train": {"images": images, "labels": labels}},
        shard_bytes=1000,
    )
    split = prepared.read(tmp_path / "p").split("train")
    assert len(split["images"].shards) == 4  # 15 rows of 64 bytes per shard
    order = np.random.default_rng(0).permutation(50)
    np.testing.assert_array_equal(split["images"][order], images[order])
    np.testing.assert_array_equal(split["labels"].read(), labels)
    assert split["images"].shape == (50, 8, 8)


#: a run directory loaded by the CLI's `load_source` with TensorFlow blocked, under JAX
LOAD_WITHOUT_TENSORFLOW = """
import json, sys
import tests.no_tensorflow  # noqa: F401  (importing TensorFlow raises from here on)
from tfzoo.cli import load_source
model = load_source(sys.argv[1])
print(json.dumps([float(abs(w).sum()) for w in model.get_weights()]))
"""


def test_a_trained_run_loads_without_tensorflow(cifar_tiny_run):
    """The route of the captioner's `encoder_init` on a machine without TensorFlow: the
    CLI's `load_source` (the catalogue's `load_model`, `training.sources.load_trained`)
    rebuilds a run's model with Keras alone, with the run's weights (a run trained under
    TensorFlow: this test process's tiny CIFAR convnet)."""
    from training.sources import load_trained

    run = cifar_tiny_run[0]
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_TENSORFLOW, str(run)],
        capture_output=True,
        text=True,
        env=subprocess_env(KERAS_BACKEND="jax"),
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sums = json.loads(proc.stdout.strip().splitlines()[-1])
    want = [float(np.abs(w).sum()) for w in load_trained(run)[0].get_weights()]
    np.testing.assert_allclose(sums, want, rtol=1e-6)
