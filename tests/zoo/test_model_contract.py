"""The contract every zoo model family keeps (keras-hub style shared harness).

For each family found by the registry, on its `tiny` preset and its spec's own example
inputs: it builds without data, runs, round-trips through a `.keras` file with identical
outputs (and the same outputs under JAX: `test_jax_backend.py`). Its source under zoo/ uses
Keras only, and the import graph points one way: tfzoo (the CLI) -> catalogue -> training ->
zoo, and serving imports none of them (module by module: `tests/test_import_graph.py`).
"""

from __future__ import annotations

import ast

import keras
import numpy as np
import pytest

from tests.helpers import REPO_ROOT
from zoo import registry


@pytest.mark.parametrize("name", registry.names())
def test_tiny_preset_builds_runs_and_round_trips(name, tmp_path):
    spec = registry.get(name)
    assert "tiny" in spec.presets and spec.default_preset in spec.presets
    model, inputs = spec.example("tiny")
    flat = [np.asarray(o) for o in keras.tree.flatten(model(inputs, training=False))]
    assert flat and all(np.isfinite(o).all() for o in flat)
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
    decided = {k for k, v in spec.presets["tiny"].items() if v is registry.DATA_DECIDED}
    assert decided <= set(spec.example_sizes), f"{name}: no example size for {decided}"
    with pytest.raises(KeyError, match="Unknown config key"):
        spec.config("tiny", no_such_key=1)
    with pytest.raises(KeyError, match="Unknown preset"):
        spec.config("no_such_preset")


def _imports(package: str) -> dict[str, set[str]]:
    """Module path -> top-level packages it imports (absolute imports only)."""
    found = {}
    for path in (REPO_ROOT / package).rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(REPO_ROOT))] = names
    return found


@pytest.mark.parametrize(
    "package, forbidden",
    [
        ("zoo", {"training", "catalogue", "serving", "tfzoo", "tensorflow"}),
        ("training", {"tfzoo", "catalogue"}),
        ("catalogue", {"tfzoo"}),
        ("serving", {"zoo", "training", "catalogue", "tfzoo", "keras"}),
    ],
)
def test_import_graph_points_one_way(package, forbidden):
    offenders = {m: sorted(n & forbidden) for m, n in _imports(package).items() if n & forbidden}
    assert not offenders, f"{package}/ imports what sits above it: {offenders}"


def test_model_code_does_not_name_tf():
    """No name `tf` in zoo/ code (docstrings may mention it)."""
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{node.lineno}"
        for path in (REPO_ROOT / "zoo").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Name) and node.id == "tf"
    ]
    assert not offenders, f"TensorFlow used in zoo/: {offenders}"


def test_registry_finds_every_family():
    assert {"cifar_convnet", "gpt", "seq2seq", "tagger"} <= set(registry.names())
    families = {p.parent.name for p in (REPO_ROOT / "zoo").glob("*/__init__.py")}
    assert set(registry.names()) == families - {"layers", "tasks"}
    with pytest.raises(KeyError, match="Unknown model"):
        registry.get("resnet9000")
