"""scripts/device_googlenet.py, the lent GPU's route for GoogLeNet, end to end on this
machine: Imagenette prepared under TensorFlow (the recipe's decoded images as WebP), two
epochs of the tiny model under JAX (CPU here, TensorFlow unimportable as on the device),
and the weights imported back as a run directory that TensorFlow loads bit for bit and
scores like the JAX side did."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.helpers import REPO_ROOT, subprocess_env

SCRIPT = str(REPO_ROOT / "scripts" / "device_googlenet.py")
#: as on the device, where TensorFlow is not installed
WITHOUT_TENSORFLOW = (
    "import runpy, sys\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] == 'tensorflow':\n"
    "            raise ModuleNotFoundError(name)\n"
    "sys.meta_path.insert(0, Block())\n"
    f"sys.argv = [{SCRIPT!r}, *sys.argv[1:]]\n"
    f"runpy.run_path({SCRIPT!r}, run_name='__main__')\n"
)
TINY = ["--set", "image_size=64", "--set", "width=0.125", "--set", "batch_size=16"]


def _step(*args: str, prelude: list[str] | None = None, **env: str) -> str:
    proc = subprocess.run(
        [sys.executable, *(prelude or [SCRIPT]), *args],
        capture_output=True, text=True, timeout=600, env=subprocess_env(**env), cwd=REPO_ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _images(arrays, split: str) -> np.ndarray:
    blob, offsets = arrays[f"{split}_webp"], arrays[f"{split}_offsets"]
    return np.stack(
        [np.asarray(Image.open(io.BytesIO(blob[a:b].tobytes())).convert("RGB"))
         for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    )  # fmt: skip


@pytest.mark.slow
def test_prepare_train_under_jax_and_import(shared_data, tmp_path):
    pytest.importorskip("jax")
    if not (shared_data / "imagenette").is_dir():
        pytest.skip("imagenette not found in shared data")
    data, weights, run = tmp_path / "data", tmp_path / "weights", tmp_path / "run"
    _step("prepare", "--data-dir", str(shared_data / "imagenette"), "--out", str(data),
          "--limit", "40", *TINY)  # fmt: skip
    info = json.loads((data / "run.json").read_text())
    assert info["config"]["image_size"] == 64 and info["assets"]["class_names"][0] == "tench"
    with np.load(data / "data.npz") as arrays:
        train_x, val_x = _images(arrays, "train"), _images(arrays, "val")
        val_y = arrays["val_labels"]
        # images from every class, spread over the folder, not the first class's 40
        assert len(set(arrays["train_labels"].tolist())) == 10
    assert train_x.shape == (40, 64, 64, 3) and val_x.shape == (40, 64, 64, 3)

    import tensorflow as tf

    from training.data.image_folder import image_folder_splits
    from training.data.images import decode_image
    from training.tasks.image_classification import center_crop

    # the WebP copies are the recipe's decoded images, up to the lossy encoding
    val_files = image_folder_splits(str(shared_data / "imagenette"))["val"]
    step = len(val_files) // 40
    first = decode_image(tf.io.read_file(val_files.paths[step]), 73)
    assert np.abs(val_x[1].astype(float) - center_crop(first, 64).numpy()).mean() < 6

    _step("train", "--data", str(data), "--out", str(weights), "--epochs", "2",
          "--budget", "900", "--seed", "3", "--set", "mixed_precision=float32",
          prelude=["-c", WITHOUT_TENSORFLOW], KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
          XLA_FLAGS="--xla_backend_optimization_level=0")  # fmt: skip
    summary = json.loads((weights / "history.json").read_text())
    assert summary["seed"] == 3 and summary["epochs"] == 2 and not summary["restarted"]
    assert summary["overrides"]["image_size"] == 64 and summary["overrides"]["epochs"] == 2
    last = summary["history"][-1]

    _step("import", "--data", str(data), "--weights", str(weights), "--to", str(run))
    from training.device_route import PARTS
    from training.export import load_trained

    model, run_info = load_trained(run)
    assert run_info["seed"] == 3 and run_info["config"]["width"] == 0.125
    assert "--seed 3" in run_info["command"] and "trained_on" not in run_info
    # the environment JAX reported on the machine that trained (this CPU), nothing else
    (segment,) = run_info["training"]["segments"]
    assert segment["environment"] == summary["environment"]
    assert segment["environment"]["backend"] == "jax"
    assert segment["environment"]["devices"] == [{"kind": "CPU", "name": "cpu", "count": 1}]
    assert segment["environment"]["precision_policy"] == "float32"
    assert segment["epochs"] == [0, 2] and segment["seconds"] == summary["train_seconds"]
    trained = {}
    for k in range(PARTS):
        with np.load(weights / f"last-{k}.npz") as part:
            trained.update({key: part[key] for key in part.files})
    assert len(trained) == len(model.weights)
    for i, variable in enumerate(model.weights):  # bit-identical after the trip through h5
        np.testing.assert_array_equal(np.asarray(variable), trained[f"{i:04d}"])
    # TensorFlow scores the val copies as JAX did at the end of the last epoch
    probabilities = model.predict(val_x.astype("float32"), verbose=0)["probabilities"]
    loss = -np.mean(np.log(probabilities[np.arange(len(val_y)), val_y]))
    smoothing = run_info["config"]["label_smoothing"]
    smoothed = (1 - smoothing) * loss - smoothing * np.mean(np.log(probabilities))
    assert smoothed == pytest.approx(last["val_probabilities_loss"], rel=2e-3)
    accuracy = np.mean(probabilities.argmax(-1) == val_y)
    assert accuracy == pytest.approx(last["val_probabilities_accuracy"], abs=1e-6)
