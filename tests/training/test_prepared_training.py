"""One training path on every backend: `zoo prepare` writes a family's arrays and
`zoo train --data` trains on them under JAX in a process where importing TensorFlow raises;
`zoo export` (TensorFlow) exports that run, and the export passes the harness's end-to-end
steps (fresh-process load, gRPC and REST) like a TensorFlow-trained one. A resumed JAX run
continues where it stopped, and two JAX devices split the global batch.

A family joins by adding a `Case` to `CASES`: its tiny data and a request for its signature.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import shared_data_dir
from tests.harness import FamilyEndToEnd
from tests.helpers import REPO_ROOT, small_image_folder, subprocess_env
from tests.training.test_gpt import SONNET


@dataclass(frozen=True)
class Case:
    """A family's tiny prepared-data run: `data(tmp, shared)` -> its --data-dir, the
    preset's `overrides` for `prepare` and `train`, and a request for `signature`."""

    data: Callable[[Path, Path], Path]
    request: dict[str, Any] | Callable[[Path], dict[str, Any]]  # or made from the shared data
    prepare: tuple[str, ...] = ()
    train: tuple[str, ...] = ()
    signature: str = "serving_default"
    atol: float = 1e-5


def need(path: Path) -> Path:
    """`path` in the shared data, or the test skips (the data is absent on this machine)."""
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    return path


def _sonnet(tmp: Path, shared: Path) -> Path:
    path = tmp / "sonnet.txt"
    path.write_text(SONNET)
    return path


def _ewt_short(tmp: Path, shared: Path) -> Path:
    """240 training and 60 dev sentences of EWT with fewer than 16 words: two length buckets,
    so the JAX run compiles a training step for two batch shapes only."""
    folder = tmp / "ewt_short"
    folder.mkdir()
    for split, count in (("train", 240), ("dev", 60)):
        source = need(shared / "ud_english_ewt" / f"en_ewt-ud-{split}.conllu")
        blocks = source.read_text(encoding="utf-8").split("\n\n")
        short = [b for b in blocks if 0 < _words(b) < 16][:count]
        (folder / f"short-{split}.conllu").write_text("\n\n".join(short) + "\n\n")
    return folder


def _words(block: str) -> int:
    """Syntactic words of a CoNLL-U sentence block (integer ids)."""
    return sum(line.split("\t", 1)[0].isdigit() for line in block.splitlines())


#: Imagenette classes of the GoogLeNet case (WordNet ids)
IMAGENETTE = ["n01440764", "n03028079", "n03888257"]


def _cifar_small(tmp: Path, shared: Path) -> Path:
    """20 train + 20 test images per class of the real CIFAR-10 folder (links)."""
    return small_image_folder(need(shared / "cifar10"), tmp / "cifar", 20)


def _imagenette_small(tmp: Path, shared: Path) -> Path:
    """16 train + 16 val images of three Imagenette classes (links)."""
    return small_image_folder(
        need(shared / "imagenette"), tmp / "imagenette", 16,
        splits=("train", "val"), classes=IMAGENETTE,
    )  # fmt: skip


def _image_bytes(folder: str, classes: list[str]) -> Callable[[Path], dict[str, Any]]:
    """A request of the first JPEG of each class of `shared/folder`, as bytes."""

    def request(shared: Path) -> dict[str, Any]:
        root = need(shared / folder)
        images = [sorted((root / c).iterdir())[0].read_bytes() for c in classes]
        return {"image_bytes": np.array(images, dtype=object)}

    return request


def _short_multi30k(tmp: Path, shared: Path) -> Path:
    """The first 600 training and 48 validation pairs of Multi30k en-de with at most 8
    tokens a side: two length buckets, so the JAX run compiles a training step for two
    batch shapes only (and an evaluation step for two)."""
    from training.data.parallel_corpus import read_parallel, tokenize_text

    folder = tmp / "multi30k"
    folder.mkdir()
    for split, count in (("train", 600), ("val", 48)):
        source = need(shared / "multi30k" / f"{split}.en")
        pairs = [
            (s, t)
            for s, t in zip(*read_parallel(source, source.with_suffix(".de")), strict=True)
            if len(tokenize_text(s, True)) <= 8 and len(tokenize_text(t, False)) <= 8
        ][:count]
        for lang, side in (("en", 0), ("de", 1)):
            lines = "".join(f"{pair[side]}\n" for pair in pairs)
            (folder / f"{split}.{lang}").write_text(lines, encoding="utf-8")
    return folder


def _flickr8k(tmp: Path, shared: Path) -> Path:
    """The shared Flickr8k folder (the tiny preset reads its first 40 + 8 images)."""
    return need(shared / "flickr8k" / "captions_train.csv").parent


def _flickr8k_request(shared: Path) -> dict[str, Any]:
    """Two Flickr8k validation images, encoded, for the captioner's `serving_default`."""
    from tests.training.test_captioner import VAL_IMAGES

    folder = need(shared / "flickr8k" / "images")
    images = [(folder / name).read_bytes() for name in VAL_IMAGES]
    return {"image_bytes": np.array(images, dtype=object)}


CASES: dict[str, Case] = {
    "gpt": Case(
        data=_sonnet,
        request={"prompt": np.array(["Shall I compare", "", "So long"], dtype=object)},
        prepare=("val_fraction=0.3",),  # validation windows for two devices
        train=("max_iters=200", "epochs=2", "eval_iters=2", "learning_rate=0.01"),
    ),
    "tagger": Case(
        data=_ewt_short,
        request={
            "sentences": np.array(
                ["She sells seashells by the seashore.", "", "I don't think it's 2004 yet!"],
                dtype=object,
            )
        },
    ),
    "cifar_convnet": Case(
        data=_cifar_small,
        request=_image_bytes("cifar10/test", ["ship", "cat", "frog", "truck"]),
        train=("epochs=10",),  # 120 steps: the tiny convnet's loss moves off ln 10 slowly
    ),
    "googlenet": Case(
        data=_imagenette_small,
        request=_image_bytes("imagenette/val", IMAGENETTE),
        prepare=("num_classes=3",),
        train=("epochs=5",),
    ),
    "seq2seq": Case(
        data=_short_multi30k,
        request={
            "source": np.array(
                ["A man is riding a bicycle.", "", "Two dogs play in the snow."], dtype=object
            )
        },
        train=("epochs=2",),
    ),
    # the tiny preset without `encoder_init`: pixels through its frozen encoder; 200 training
    # and 40 validation captions, so batches of 40 come in one shape
    "captioner": Case(
        data=_flickr8k,
        request=_flickr8k_request,
        train=("epochs=2", "batch_size=40"),
    ),
}


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


def _family_class(family: str) -> type:
    case = CASES[family]

    class TrainedUnderJax(FamilyEndToEnd):
        signature = case.signature
        atol = case.atol

        @pytest.fixture(scope="class")
        def tiny_run(self, tmp_path_factory):
            tmp = tmp_path_factory.mktemp(f"{family}-jax")
            data = prepare(family, tmp, shared_data_dir())
            return tmp / "run", train_on(family, data, tmp / "run")

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
    return prepare("gpt", tmp_path_factory.mktemp("gpt-prepared"), shared_data_dir())


def test_a_resumed_jax_run_continues_where_it_stopped(gpt_prepared, tmp_path):
    """One epoch, then a second start of the same command resumes from its checkpoint and
    ends where an uninterrupted run ends: step counter, schedule, optimizer moments, data
    order and weights."""
    straight = train_on("gpt", gpt_prepared, tmp_path / "straight")
    train_on("gpt", gpt_prepared, tmp_path / "resumed", "--epochs", "1")
    first = _checkpoint(tmp_path / "resumed" / "checkpoints" / "ckpt-0001.weights.h5")
    resumed = train_on("gpt", gpt_prepared, tmp_path / "resumed")
    assert resumed["resumed_from_epoch"] == 1 and straight["resumed_from_epoch"] == 0
    a = _checkpoint(tmp_path / "straight" / "checkpoints" / "ckpt-0002.weights.h5")
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


def test_two_jax_devices_split_the_global_batch(gpt_prepared, tmp_path):
    """`XLA_FLAGS=--xla_force_host_platform_device_count=2`: `auto` is data parallelism
    over both devices, the batch of 16 is laid out across them (8 rows each), and training
    follows the one-device run's curve (the same global batch, split)."""
    two = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    one = train_on("gpt", gpt_prepared, tmp_path / "one")
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


def test_a_trained_run_loads_without_tensorflow(tmp_path):
    """The route of the captioner's `encoder_init` on a machine without TensorFlow: the
    CLI's `load_source` (the catalogue's `load_model`, `training.sources.load_trained`)
    rebuilds a run's model with Keras alone, with the run's weights."""
    from training import train
    from training.sources import load_trained

    run = tmp_path / "run"
    overrides = {"train_limit": 64, "val_limit": 16, "eval_limit": 2}
    data_dir = need(shared_data_dir() / "multi30k")
    train.run("seq2seq", "tiny", run, str(data_dir), epochs=1, overrides=overrides, verbose=0)
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
