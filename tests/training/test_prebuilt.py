"""Artifacts that carry their SavedModel: `make serve` and `zoo pull` install them by
extraction and verification, without TensorFlow, byte for byte as exported at publish.

A prebuilt SavedModel's variables data file travels with the checkpoint's weights zeroed
(`catalogue.prebuilt`); installing writes them back from the checkpoint and checks
the file's sha256. The tests here build such an artifact by hand (an h5 checkpoint, a data
file holding its arrays as float32 among other bytes), and install the shipped catalogue.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import catalogue
from catalogue import PullError, prebuilt
from catalogue.manifest import REPO_PRETRAINED, Manifest
from serving.cost import COSTS_PATH
from tests.helpers import REPO_ROOT, subprocess_env

DATA = "variables/variables.data-00000-of-00001"
CHECKPOINT = "checkpoints/ckpt-0003.weights.h5"


def _artifact(root: Path) -> tuple[Path, bytes]:
    """A run artifact staged in `root/artifact` with a prebuilt SavedModel attached, and the
    SavedModel's data file as exported."""
    rng = np.random.default_rng(0)
    weights = {
        "layers/dense/vars/0": rng.normal(size=(256, 64)).astype(np.float16),
        "layers/dense/vars/1": rng.normal(size=(64,)).astype(np.float16),
        "layers/tiny/vars/0": rng.normal(size=(3,)).astype(np.float16),  # stays in the file
    }
    stage = root / "artifact"
    (stage / "checkpoints").mkdir(parents=True)
    (stage / "run.json").write_text(json.dumps({"model": "dense"}))
    with h5py.File(stage / CHECKPOINT, "w") as f:
        for name, value in weights.items():
            f.create_dataset(name, data=value)
    export = root / "export" / "1"
    (export / "variables").mkdir(parents=True)
    (export / "saved_model.pb").write_bytes(b"a graph")
    (export / "variables" / "variables.index").write_bytes(b"an index")
    f32 = {name: value.astype("<f4").tobytes() for name, value in weights.items()}
    data = b"".join(
        [b"header", f32["layers/dense/vars/0"], rng.bytes(16), f32["layers/dense/vars/1"]]
        + [f32["layers/tiny/vars/0"], b"object graph"]
    )
    (export / DATA).write_bytes(data)
    prebuilt.attach(stage, export, stage / CHECKPOINT)
    return stage, data


def _pull(stage: Path, root: Path) -> Path:
    """Pack `stage` and pull it by path into `root/models/m`; returns the version dir."""
    archive = root / "artifact.tar.gz"
    digest = catalogue.pack(stage, archive)
    return catalogue.pull(str(archive), root / "models" / "m", sha256=digest, cache=root / "c")


def test_prebuilt_saved_model_installs_byte_for_byte(tmp_path):
    stage, data = _artifact(tmp_path)
    blanked = (stage / prebuilt.SAVED_MODEL_DIR / DATA).read_bytes()
    assert len(blanked) == len(data) and blanked.count(0) >= 4 * (256 * 64 + 64)
    assert blanked.endswith(data[-(12 + 12) :])  # the small array and the rest: as they were
    version = _pull(stage, tmp_path)
    assert version == tmp_path / "models" / "m" / "1"
    assert (version / DATA).read_bytes() == data
    assert (version / "saved_model.pb").read_bytes() == b"a graph"
    assert sorted(p.relative_to(version).as_posix() for p in version.rglob("*")) == [
        "saved_model.pb", "variables", "variables/variables.data-00000-of-00001",
        "variables/variables.index",
    ]  # fmt: skip
    assert _pull(stage, tmp_path) == tmp_path / "models" / "m" / "2"  # from the cache


def _tamper_checkpoint(stage: Path) -> None:
    with h5py.File(stage / CHECKPOINT, "r+") as f:
        f["layers/dense/vars/1"][0] += 1


def _recipe(stage: Path, change) -> None:
    path = stage / prebuilt.RECIPE
    recipe = json.loads(path.read_text())
    change(recipe, recipe["files"][DATA])
    path.write_text(json.dumps(recipe))


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (_tamper_checkpoint, "differs from the export"),
        (lambda s: _recipe(s, lambda r, f: f["regions"][0].__setitem__(0, 10**9)), "does not fit"),
        (lambda s: _recipe(s, lambda r, f: f["regions"][0].__setitem__(1, "nope")), "no float"),
        (lambda s: _recipe(s, lambda r, f: r.__setitem__("checkpoint", "../x.h5")), "'\\.\\.'"),
        (lambda s: _recipe(s, lambda r, f: f.__setitem__("size", 1)), "not the recipe's 1"),
    ],
    ids=["weights", "offset", "dataset", "path", "size"],
)
def test_an_artifact_that_does_not_give_its_export_back_is_refused(tmp_path, tamper, message):
    stage, _ = _artifact(tmp_path)
    tamper(stage)
    with pytest.raises(PullError, match=message):
        _pull(stage, tmp_path)
    assert list((tmp_path / "models" / "m").iterdir()) == []  # nothing left, not even a stage


def test_shipped_artifacts_carry_their_saved_model():
    """Every latest version in pretrained/ installs without an export (a new publish that
    did not attach one would make `make serve` export with TensorFlow again)."""
    manifest = Manifest(REPO_PRETRAINED)
    for name in manifest.names():
        release = manifest.latest(name)
        archive = REPO_PRETRAINED / release.file
        assert archive.stat().st_size == release.size, release.reference
        assert prebuilt.archive_carries_export(archive), release.reference


def test_make_serve_installs_the_catalogue_without_tensorflow(tmp_path):
    """The shipped catalogue installs by extraction and verification alone: TensorFlow is
    never imported, and every version declares its request costs (so a later `make serve`
    keeps it)."""
    if not Manifest(REPO_PRETRAINED).names():
        pytest.skip("the catalogue is empty")
    models = tmp_path / "models"
    code = (
        "import sys; from catalogue import bootstrap; "
        f"assert bootstrap.main(['--models', {str(models)!r}]) == 0; "
        "print('tensorflow' in sys.modules)"
    )
    env = subprocess_env(TFZOO_CACHE=str(tmp_path / "cache"), TFZOO_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "False", proc.stdout
    versions = [p / "1" for p in models.iterdir() if p.is_dir()]
    assert len(versions) == len(Manifest(REPO_PRETRAINED).names())
    for version in versions:
        assert (version / "saved_model.pb").is_file() and (version / COSTS_PATH).is_file()
        assert not (version / prebuilt.RECIPE).exists()
    shutil.rmtree(models)
