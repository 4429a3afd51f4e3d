"""scripts/device_seq2seq.py, the lent GPU's route for seq2seq, end to end on this machine:
arrays prepared under TensorFlow, a few steps of training under JAX (CPU here), the weights
imported back as a run directory that evaluates under TensorFlow like the JAX side did."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO_ROOT, subprocess_env

SCRIPT = str(REPO_ROOT / "scripts" / "device_seq2seq.py")


def _step(*args: str, **env: str) -> str:
    proc = subprocess.run(
        [sys.executable, SCRIPT, *args],
        capture_output=True, text=True, timeout=600, env=subprocess_env(**env), cwd=REPO_ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_prepare_train_under_jax_and_import(shared_data, tmp_path):
    pytest.importorskip("jax")
    data, weights, run = tmp_path / "data", tmp_path / "weights", tmp_path / "run"
    _step("prepare", "--data-dir", str(shared_data), "--out", str(data))
    arrays = np.load(data / "data.npz")
    info = json.loads((data / "run.json").read_text())
    # the recipe's own arrays: every pair kept, <s> first in the decoder input, </s> last out
    assert arrays["train_source"].shape[0] == arrays["train_target_out"].shape[0] > 28_000
    bos = info["assets"]["target_vocab"].index("<s>")
    assert np.all(arrays["train_target_in"][:, 0] == bos)

    _step("train", "--data", str(data), "--out", str(weights), "--limit", "128",
          "--set", "epochs=1", "--seed", "3", KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
          XLA_FLAGS="--xla_backend_optimization_level=0")  # fmt: skip
    summary = json.loads((weights / "history.json").read_text())
    assert summary["seed"] == 3 and summary["overrides"] == {"epochs": 1}
    assert summary["history"][0]["best"] and np.isfinite(summary["history"][0]["val_loss"])

    _step("import", "--data", str(data), "--weights", str(weights), "--to", str(run))
    from training.export import load_trained

    model, run_info = load_trained(run)
    assert run_info["seed"] == 3 and run_info["config"]["epochs"] == 1
    assert "--seed 3" in run_info["command"]
    environment = run_info["training"]["segments"][0]["environment"]  # as JAX reported it
    assert environment["backend"] == "jax" and environment["devices"][0]["kind"] == "CPU"
    trained = {}
    for k in range(3):
        with np.load(weights / f"best-{k}.npz") as part:
            trained.update({key: part[key] for key in part.files})
    assert len(trained) == len(model.weights)
    for i, variable in enumerate(model.weights):  # bit-identical after the trip through h5
        np.testing.assert_array_equal(np.asarray(variable), trained[f"{i:04d}"])
