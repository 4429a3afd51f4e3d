"""Name -> ModelSpec: how each model family plugs into the CLI, training and export.

A model family registers one `ModelSpec`. The spec is data: the builder (config dict ->
keras.Model), named presets, the task, the default dataset, and the dotted path of the
training recipe (in `training/recipes/`) that knows the family's data, loss, metrics and
export signatures. `zoo/` never imports `training/`; the recipe is looked up by name.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelSpec:
    """Everything the CLI needs to know about one model family.

    Attributes:
        name: registry name, e.g. "cifar_convnet".
        task: "image_classification", "tagging", "translation", "language_modeling", ...
        description: one line for `zoo list`.
        builder: function `config dict -> keras.Model` (framework-free).
        presets: preset name -> config dict (each complete, not a delta).
        default_preset: preset used when none is named.
        dataset: the default dataset, as a human-readable hint (TFDS name / local folder).
        recipe: dotted module path of the training recipe, e.g. "training.recipes.cifar_convnet".
        paper: citation of the model's paper or source.
    """

    name: str
    task: str
    description: str
    builder: Callable[[dict[str, Any]], Any]
    presets: dict[str, dict[str, Any]]
    default_preset: str
    dataset: str
    recipe: str
    paper: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

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
        """Build a fresh keras.Model from a preset."""
        return self.builder(self.config(preset, **overrides))


_REGISTRY: dict[str, ModelSpec] = {}

# Model families are imported lazily so `zoo list` stays fast and a broken family cannot
# take the others down. Each module registers its spec on import.
_FAMILY_MODULES = (
    "zoo.cifar_convnet",
    "zoo.tagger",
    "zoo.seq2seq",
    "zoo.gpt",
)


def register(spec: ModelSpec) -> ModelSpec:
    """Add a spec to the registry (re-registering the same name replaces it)."""
    _REGISTRY[spec.name] = spec
    return spec


def _load_families() -> None:
    import importlib

    for module in _FAMILY_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # the family exists but one of its imports is missing
                raise


def get(name: str) -> ModelSpec:
    """The spec registered under `name`, with a helpful error for unknown names."""
    _load_families()
    if name not in _REGISTRY:
        raise KeyError(f"Unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def names() -> list[str]:
    """Sorted names of all registered models."""
    _load_families()
    return sorted(_REGISTRY)
