"""The contract every zoo model keeps (keras-hub style shared harness).

For each registered model family's `tiny` preset: it builds from its preset, runs on
inputs made from its own input specs, round-trips through a `.keras` file with identical
outputs, and its source under zoo/ uses Keras only (no TensorFlow), so the same model runs
under KERAS_BACKEND=jax or torch.
"""

from __future__ import annotations

import ast
from pathlib import Path

import keras
import numpy as np
import pytest

from zoo import registry

ZOO_DIR = Path(__file__).resolve().parents[1] / "zoo"


# Subclassed models have no symbolic inputs to read specs from: their documented `call` input.
SUBCLASSED_INPUTS = {
    "gpt": lambda rng: rng.integers(0, 65, size=(2, 7)).astype("int32"),
    "seq2seq": lambda rng: {
        "source_ids": rng.integers(4, 9, size=(2, 7)).astype("int32"),
        "target_in": rng.integers(4, 9, size=(2, 5)).astype("int32"),
    },
}
# Sizes a recipe normally takes from the data.
DATA_SIZES = {"vocab_size": 65}


def _value(tensor, rng, batch: int = 2, length: int = 7):
    shape = [batch] + [d if d is not None else length for d in tensor.shape[1:]]
    dtype = tensor.dtype if isinstance(tensor.dtype, str) else tensor.dtype.name
    if "int" in dtype:
        return rng.integers(1, 3, size=shape).astype(dtype)  # small valid ids
    if "bool" in dtype:
        return np.ones(shape, bool)
    return rng.uniform(0, 1, size=shape).astype(dtype)


def _sample_inputs(name: str, model: keras.Model):
    rng = np.random.default_rng(0)
    if name in SUBCLASSED_INPUTS:
        return SUBCLASSED_INPUTS[name](rng)
    if isinstance(model.input, dict):
        return {key: _value(tensor, rng) for key, tensor in model.input.items()}
    values = [_value(tensor, rng) for tensor in model.inputs]
    return values if len(values) > 1 else values[0]


@pytest.mark.parametrize("name", registry.names())
def test_tiny_preset_builds_runs_and_round_trips(name, tmp_path):
    spec = registry.get(name)
    assert "tiny" in spec.presets and spec.default_preset in spec.presets
    overrides = {k: v for k, v in DATA_SIZES.items() if spec.presets["tiny"].get(k) == 0}
    model = spec.build("tiny", **overrides)
    inputs = _sample_inputs(name, model)
    outputs = model(inputs, training=False)
    flat = [np.asarray(o) for o in keras.tree.flatten(outputs)]
    assert all(np.isfinite(o).all() for o in flat)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    again = [np.asarray(o) for o in keras.tree.flatten(restored(inputs, training=False))]
    for a, b in zip(flat, again, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("name", registry.names())
def test_presets_are_complete_configs(name):
    spec = registry.get(name)
    keys = set(spec.presets[spec.default_preset])
    for preset, config in spec.presets.items():
        assert set(config) == keys, f"{name}/{preset} differs from the default preset's keys"
    with pytest.raises(KeyError, match="Unknown config key"):
        spec.config("tiny", no_such_key=1)
    with pytest.raises(KeyError, match="Unknown preset"):
        spec.config("no_such_preset")


def test_model_code_is_backend_agnostic():
    """No module under zoo/ imports TensorFlow or refers to `tf` (docstrings may)."""
    offenders = []
    for path in ZOO_DIR.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            imported = []
            if isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported = [node.module or ""]
            if any(m.split(".")[0] == "tensorflow" for m in imported) or (
                isinstance(node, ast.Name) and node.id == "tf"
            ):
                offenders.append(f"{path.relative_to(ZOO_DIR)}:{node.lineno}")
    assert not offenders, f"TensorFlow used in zoo/: {offenders}"


def test_registry_lists_every_family():
    assert {"cifar_convnet", "gpt", "seq2seq", "tagger"} <= set(registry.names())
    with pytest.raises(KeyError, match="Unknown model"):
        registry.get("resnet9000")
