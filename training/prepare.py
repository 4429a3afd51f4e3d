"""`zoo prepare`: a family's data as the arrays its recipe trains on (`training.prepared`),
for `zoo train --data` on any Keras backend (a lent accelerator with JAX and no TensorFlow
included)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from training import prepared
from training.recipe import get_recipe
from training.sources import LoadSource


def run(
    family: str,
    data_dir: str | None,
    out: str | Path,
    *,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    command: str | None = None,
    load_source: LoadSource | None = None,
) -> prepared.Prepared:
    """Write the recipe's arrays of `data_dir` for `preset` (with `overrides`) to `out`,
    atomically, and return them opened. `command` (how they were made) is recorded.
    `load_source` resolves a source of trained weights the config names, for a recipe whose
    arrays need a trained model (the captioner's cached encoder features: its `prepare`
    takes `load_source`); None: run directories only (`training.sources`)."""
    from zoo import registry

    spec = registry.get(family)
    recipe = get_recipe(family)
    preset = preset or spec.default_preset
    config = spec.config(preset, **(overrides or {}))
    extra = {}
    if load_source is not None and "load_source" in inspect.signature(recipe.prepare).parameters:
        extra["load_source"] = load_source
    splits, assets = recipe.prepare(config, data_dir, **extra)
    path = prepared.write(
        out,
        family=family,
        preset=preset,
        config=config,
        assets=assets,
        splits=splits,
        command=command,
    )
    return prepared.read(path)
