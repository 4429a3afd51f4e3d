"""Name -> ModelSpec: the model families of the zoo, discovered by package.

A family is a package under `zoo/` whose `__init__.py` defines `SPEC = ModelSpec(...)`:
the builder (config dict -> keras.Model), its named presets, and example inputs for the
shared contract tests. Nothing here lists the families; adding a package adds a family.
Its training recipe is found the same way, by name (`training/recipes/<name>.py`), so
`zoo/` never imports `training/` or `serving/`.

Sizes that the training data decides (vocabulary sizes, tag counts) are `DATA_DECIDED` in
a preset: the recipe fills them in from the data's assets, and the spec's `example_sizes`
gives small values for building a model without data.
"""

from __future__ import annotations

import copy
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: A preset value that the training data decides (vocabulary size, number of tags).
DATA_DECIDED = None


@dataclass(frozen=True)
class ModelSpec:
    """Everything the CLI, the recipes and the contract tests need to know of one family.

    Attributes:
        name: registry name, the family's package name under `zoo/`, e.g. "cifar_convnet".
        task: "image_classification", "tagging", "translation", "language_modeling", ...
        description: one line for `zoo list`.
        builder: function `config dict -> keras.Model` (framework-free).
        presets: preset name -> config dict (each complete, not a delta).
        default_preset: preset used when none is named.
        example_inputs: `(config, numpy Generator) -> inputs` for a model built from that
            config: a small batch of the documented `call` input (the contract tests use it).
        example_sizes: values for the `DATA_DECIDED` keys, to build a model without data.
        reference_dataset: the dataset the family trains on when nothing else says (a
            folder name of ../shared/data, the key of the catalogue's dataset facts).
    """

    name: str
    task: str
    description: str
    builder: Callable[[dict[str, Any]], Any]
    presets: dict[str, dict[str, Any]]
    default_preset: str
    example_inputs: Callable[[dict[str, Any], np.random.Generator], Any]
    example_sizes: dict[str, int] = field(default_factory=dict)
    reference_dataset: str | None = None

    def config(self, preset: str | None = None, **overrides: Any) -> dict[str, Any]:
        """A copy of a preset's config with overrides applied (unknown keys are an error)."""
        preset = preset or self.default_preset
        if preset not in self.presets:
            raise KeyError(
                f"Unknown preset {preset!r} for {self.name}; choose from {sorted(self.presets)}"
            )
        config = copy.deepcopy(self.presets[preset])
        for key, value in overrides.items():
            if key not in config:
                raise KeyError(
                    f"Unknown config key {key!r} for {self.name}; known: {sorted(config)}"
                )
            config[key] = value
        return config

    def build(self, preset: str | None = None, **overrides: Any):
        """Build a fresh keras.Model from a preset (its `DATA_DECIDED` sizes must be given)."""
        return self.builder(self.config(preset, **overrides))

    def example(self, preset: str = "tiny", seed: int = 0) -> tuple[Any, Any]:
        """A model built from `preset` without data, and a batch of example inputs for it."""
        config = self.config(preset)
        config.update(
            {k: v for k, v in self.example_sizes.items() if config.get(k) is DATA_DECIDED}
        )
        return self.builder(config), self.example_inputs(config, np.random.default_rng(seed))


def _discover() -> dict[str, ModelSpec]:
    import zoo

    specs: dict[str, ModelSpec] = {}
    for info in pkgutil.iter_modules(zoo.__path__):
        if not info.ispkg:
            continue
        module = importlib.import_module(f"zoo.{info.name}")
        spec = getattr(module, "SPEC", None)
        if isinstance(spec, ModelSpec):
            if spec.name != info.name:
                raise ValueError(f"zoo/{info.name} registers a spec named {spec.name!r}")
            specs[spec.name] = spec
    return specs


_REGISTRY: dict[str, ModelSpec] | None = None


def _registry() -> dict[str, ModelSpec]:
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _discover()
    return _REGISTRY


def get(name: str) -> ModelSpec:
    """The spec of the family `name`, with a helpful error for unknown names."""
    specs = _registry()
    if name not in specs:
        raise KeyError(f"Unknown model {name!r}; known models: {', '.join(sorted(specs))}")
    return specs[name]


def names() -> list[str]:
    """Sorted names of all model families."""
    return sorted(_registry())
