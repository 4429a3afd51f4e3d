"""A run artifact's prebuilt SavedModel: what `zoo pull` and `make serve` install by extraction.

A run artifact may carry, beside its run directory, the SavedModel version that
`training.export` makes of it (`saved_model/`: graph, assets, request costs, warmup file), so
installing it is extraction and verification, not an export with TensorFlow. Its variables
would store the checkpoint's weights a second time (as float32), so the archive carries the
variables' data file with those bytes zeroed (they compress to almost nothing) and
`saved_model.json`, which lists where each weight array of the checkpoint goes and the
sha256 of every data file. Installing writes the arrays back (float16 to float32 is exact)
and checks the sha256: the installed version is byte for byte the export made at publish.

`saved_model.json`:

    {"checkpoint": "checkpoints/ckpt-0025.weights.h5",
     "files": {"variables/variables.data-00000-of-00001":
               {"size": N, "sha256": HEX, "regions": [[OFFSET, "layers/conv2d/vars/0"], ...]}}}

Only a float dataset of the checkpoint whose float32 bytes occur in a data file is blanked,
at the offset where they occur; anything else (seed states, the object graph, a weight the
checkpoint does not hold) stays in the file as it is. `zoo publish` adds the prebuilt
SavedModel to every artifact it writes; `python -m catalogue.republish` adds one to
the artifacts of a catalogue published before.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from catalogue.archive import member_names, member_parts, sha256_of
from catalogue.errors import PullError
from serving.layout import staged_directory

SAVED_MODEL_DIR = "saved_model"
RECIPE = "saved_model.json"
#: Arrays smaller than this many float32 bytes stay in the data file as they are.
MIN_REGION = 256


def carries_export(run_dir: str | Path) -> bool:
    """Whether the unpacked run artifact `run_dir` carries a prebuilt SavedModel."""
    run_dir = Path(run_dir)
    return (run_dir / RECIPE).is_file() and (run_dir / SAVED_MODEL_DIR / "saved_model.pb").is_file()


def archive_carries_export(archive: str | Path) -> bool:
    """Whether the run artifact `archive` carries a prebuilt SavedModel (reads the headers)."""
    names = member_names(archive)
    return RECIPE in names and f"{SAVED_MODEL_DIR}/saved_model.pb" in names


# ------------------------------------------------------------------ publishing


def _float32_bytes(dataset) -> bytes:
    """A float dataset's values as little-endian float32 bytes (read in its stored type and
    converted by numpy: ten times faster than h5py's own conversion)."""
    import numpy as np

    return np.asarray(dataset[()]).astype("<f4").tobytes()


def _float32_arrays(checkpoint: Path) -> dict[str, bytes]:
    """Dataset path -> the float32 bytes of every float dataset of a Keras weights file."""
    import h5py

    arrays: dict[str, bytes] = {}

    def visit(name: str, node: Any) -> None:
        if isinstance(node, h5py.Dataset) and node.dtype.kind == "f":
            arrays[name] = _float32_bytes(node)

    with h5py.File(checkpoint, "r") as f:
        f.visititems(visit)
    return arrays


def blank_weights(version_dir: Path, checkpoint: Path) -> dict[str, Any]:
    """Zero, in `version_dir`'s variables data files, the bytes the checkpoint's float
    datasets hold; returns the `files` record of the recipe (sha256 taken before)."""
    arrays = sorted(_float32_arrays(checkpoint).items(), key=lambda kv: -len(kv[1]))
    files: dict[str, Any] = {}
    for path in sorted((version_dir / "variables").glob("variables.data-*")):
        data = bytearray(path.read_bytes())
        record = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "regions": []}
        original = bytes(data)
        claimed = bytearray(len(data))  # 1 where a region was taken
        for name, raw in arrays:
            if len(raw) < MIN_REGION:
                continue
            start = original.find(raw)
            while start >= 0 and claimed.find(1, start, start + len(raw)) >= 0:
                start = original.find(raw, start + 1)
            if start < 0:
                continue
            claimed[start : start + len(raw)] = b"\x01" * len(raw)
            data[start : start + len(raw)] = bytes(len(raw))
            record["regions"].append([start, name])
        record["regions"].sort()
        path.write_bytes(data)
        files[path.relative_to(version_dir).as_posix()] = record
    return files


def attach(run_dir: Path, version: Path, checkpoint: Path) -> Path:
    """Make `version`, the export of the run staged in `run_dir` from its `checkpoint`, the
    run's prebuilt SavedModel: its weights blanked, moved to `run_dir/saved_model/`, and
    `run_dir/saved_model.json` written; returns the SavedModel directory."""
    files = blank_weights(version, checkpoint)
    target = run_dir / SAVED_MODEL_DIR
    shutil.move(version, target)
    recipe = {"checkpoint": checkpoint.relative_to(run_dir).as_posix(), "files": files}
    (run_dir / RECIPE).write_text(json.dumps(recipe, indent=1, sort_keys=True) + "\n")
    return target


#: Run in a fresh interpreter: the same run always exports the same bytes there (function
#: names are numbered per process; the Keras seed generators' states come from the seed).
_EXPORT = """
import sys
from pathlib import Path
import keras
keras.utils.set_random_seed(0)
from training import checkpoints, export
from catalogue.prebuilt import settle
settle(export.run(sys.argv[1], sys.argv[2], version=1, model_name=sys.argv[3]))
print(checkpoints.exported_checkpoint(Path(sys.argv[1]) / "checkpoints"))
"""


def settle(version: Path) -> None:
    """Make the export in `version` the same bytes every time: its warmup records serialized
    deterministically (their input maps in key order), and its fingerprint's random `uuid`
    replaced by one derived from the fingerprint's other fields (the hashes of its graph,
    signatures and checkpoint). Imports TensorFlow."""
    import tensorflow as tf
    from tensorflow.core.protobuf import fingerprint_pb2
    from tensorflow_serving.apis import prediction_log_pb2

    from serving.layout import WARMUP_PATH

    warmup = Path(version) / WARMUP_PATH
    if warmup.is_file():
        records = list(tf.compat.v1.io.tf_record_iterator(str(warmup)))
        with tf.io.TFRecordWriter(str(warmup)) as writer:
            for record in records:
                log = prediction_log_pb2.PredictionLog.FromString(record)
                writer.write(log.SerializeToString(deterministic=True))
    path = Path(version) / "fingerprint.pb"
    if path.is_file():
        fingerprint = fingerprint_pb2.FingerprintDef.FromString(path.read_bytes())
        fingerprint.ClearField("uuid")
        digest = hashlib.sha256(fingerprint.SerializeToString(deterministic=True)).digest()
        fingerprint.uuid = str(int.from_bytes(digest[:16], "big"))
        path.write_bytes(fingerprint.SerializeToString(deterministic=True))


def prebuild(run_dir: str | Path, model_name: str) -> Path:
    """Export the run artifact staged in `run_dir` (warmup records named `model_name`) in a
    fresh interpreter, reproducibly, and `attach` the export; returns the SavedModel
    directory. TensorFlow is imported in that interpreter only."""
    import subprocess
    import sys

    run_dir = Path(run_dir)
    root = Path(__file__).resolve().parents[1]  # this checkout's `training`, in the child too
    env = {**os.environ, "PYTHONPATH": str(root), "TF_CPP_MIN_LOG_LEVEL": "2"}
    with tempfile.TemporaryDirectory(prefix=".export-", dir=run_dir.parent) as tmp:
        base = Path(tmp) / model_name
        args = [sys.executable, "-c", _EXPORT, str(run_dir), str(base), model_name]
        proc = subprocess.run(args, env=env, cwd=root, capture_output=True, text=True)
        if proc.returncode != 0:
            raise PullError(f"exporting {run_dir} failed:\n{proc.stderr[-4000:]}")
        checkpoint = Path(proc.stdout.strip().splitlines()[-1])  # the one the export read
        return attach(run_dir, base / "1", checkpoint)


# ------------------------------------------------------------------ installing


def _relative(root: Path, name: Any) -> Path:
    """`root / name` for a safe relative name from the recipe, else PullError."""
    if not isinstance(name, str):
        raise PullError(f"{RECIPE}: {name!r} is not a path")
    return root.joinpath(*member_parts(name))


def _read_recipe(run_dir: Path) -> dict[str, Any]:
    try:
        recipe = json.loads((run_dir / RECIPE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise PullError(f"unreadable {RECIPE}: {err}") from None
    if not isinstance(recipe, dict) or not isinstance(recipe.get("files"), dict):
        raise PullError(f"{RECIPE} lists no files")
    return recipe


def restore_weights(run_dir: Path, version_dir: Path) -> None:
    """Write the checkpoint's weights back into `version_dir`'s blanked data files and check
    each file's size and sha256 against the recipe (PullError when anything differs)."""
    import h5py

    recipe = _read_recipe(run_dir)
    with h5py.File(_relative(run_dir, recipe.get("checkpoint")), "r") as weights:
        for name, record in sorted(recipe["files"].items()):
            path = _relative(version_dir, name)
            size = path.stat().st_size if path.is_file() else None
            if size != record.get("size"):
                raise PullError(f"{name} holds {size} bytes, not the recipe's {record.get('size')}")
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                for offset, dataset in record.get("regions", []):
                    node = weights.get(dataset) if isinstance(dataset, str) else None
                    if not isinstance(node, h5py.Dataset) or node.dtype.kind != "f":
                        raise PullError(f"the checkpoint has no float dataset {dataset!r}")
                    raw = _float32_bytes(node)
                    if not isinstance(offset, int) or offset < 0 or offset + len(raw) > size:
                        raise PullError(f"{dataset} does not fit in {name} at {offset!r}")
                    os.pwrite(fd, raw, offset)
            finally:
                os.close(fd)
            if sha256_of(path) != record.get("sha256"):
                raise PullError(f"{name} differs from the export it was published from")


def _copy_tree(source: Path, target: Path) -> None:
    """Copy the regular files and directories under `source` into the existing `target`."""
    for directory, dirs, files in os.walk(source):
        rel = Path(directory).relative_to(source)
        for name in dirs:
            (target / rel / name).mkdir()
        for name in files:
            shutil.copyfile(Path(directory) / name, target / rel / name, follow_symlinks=False)


def install_export(run_dir: str | Path, final: str | Path) -> Path:
    """Install the prebuilt SavedModel of the unpacked run artifact `run_dir` as the new
    version directory `final`, atomically: copied, its weights written back, verified."""
    run_dir, final = Path(run_dir), Path(final)
    with staged_directory(final) as tmp:
        _copy_tree(run_dir / SAVED_MODEL_DIR, tmp)
        restore_weights(run_dir, tmp)
    return final
