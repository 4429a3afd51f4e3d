"""The contract between a model family and the generic train / evaluate / export commands.

Each family has one module in `training/recipes/` defining a `Recipe` subclass instance
named `RECIPE`. The generic code in `training/train.py`, `training/evaluate.py` and
`training/export.py` only ever talks to a family through this interface, so checkpoints,
resume, TensorBoard logs, metrics.json, distribution and atomic export behave the same
for every model.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import tensorflow as tf


@dataclass
class Data:
    """Datasets for one run. Training data is batched by the *global* batch size.

    Attributes:
        train: batched (x, y) or (x, y, sample_weight) dataset, repeated or not.
        val: batched validation dataset (evaluated at each epoch end), or None.
        test: batched test dataset for the reported metric, or None (then `val` is used).
        steps_per_epoch: set when `train` repeats forever (iteration-based training).
        validation_steps: batches of `val` per evaluation when `val` repeats forever.
        examples_per_step: examples (or tokens) per training step, for throughput; default
            the global batch size.
        assets: JSON-serializable facts learned from the data that the model needs at export
            time (class names, vocabularies, tokenizer tables). Saved in the run directory.
    """

    train: tf.data.Dataset | None
    val: tf.data.Dataset | None = None
    test: tf.data.Dataset | None = None
    steps_per_epoch: int | None = None
    validation_steps: int | None = None
    examples_per_step: int | None = None
    assets: dict[str, Any] = field(default_factory=dict)


@dataclass
class Export:
    """What a recipe hands to the export writer.

    Attributes:
        module: a tf.Module tracking the model and every resource (tables, constants).
        signatures: signature name -> concrete function (one is "serving_default").
        warmup: (signature_name, {input_name: value}) pairs replayed at load time; written to
            `assets.extra/tf_serving_warmup_requests` as TF Serving PredictionLog records.
        extra_assets: file name -> text written into the SavedModel's `assets/` folder
            (e.g. labels.txt), useful to clients without reading the graph.
    """

    module: tf.Module
    signatures: dict[str, Any]
    warmup: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    extra_assets: dict[str, str] = field(default_factory=dict)


class Recipe:
    """How one model family loads data, compiles, evaluates and exports.

    Subclasses override the methods below. `config` is the preset config (a dict), `assets`
    the dict saved from `Data.assets` at training time.
    """

    #: registry name of the model family
    name: str = ""

    def load_data(
        self,
        config: dict,
        data_dir: str | None,
        global_batch_size: int,
        *,
        training: bool = True,
        assets: dict | None = None,
    ) -> Data:
        """Build the datasets. `data_dir` None means TFDS (online); else local files.

        `assets` (from an earlier run: resume, evaluate) must be reused as they are
        (vocabularies, class names), never rebuilt from the data, so ids stay stable.
        """
        raise NotImplementedError

    def default_batch_size(self, config: dict) -> int:
        """Global batch size used when the CLI does not set one."""
        return int(config.get("batch_size", 32))

    def build_model(self, config: dict, assets: dict):
        """Build the keras.Model (called inside `strategy.scope()`); may use assets (vocab size)."""
        from zoo import registry

        return registry.get(self.name).builder(config)

    def compile(self, model, config: dict, data: Data | None, *, jit_compile: bool | str) -> None:
        """Attach optimizer, loss and metrics (called inside `strategy.scope()`)."""
        raise NotImplementedError

    def callbacks(self, config: dict) -> list:
        """Extra Keras callbacks for training (e.g. early stopping); none by default."""
        return []

    def evaluate(self, model, config: dict, data: Data) -> dict[str, float]:
        """The task's standard metrics on `data.test` (or `data.val`)."""
        split = data.test if data.test is not None else data.val
        if split is None:
            raise ValueError("No test or validation data to evaluate on")
        from training.distributed_loop import evaluate_dataset

        steps = data.validation_steps if split is data.val else None
        return evaluate_dataset(model, split, steps)

    def finetune_overrides(self, config: dict, data_dir: str | None) -> dict:
        """Config changes needed to fine-tune on `data_dir` (e.g. a new number of classes)."""
        return {}

    def export(self, model, config: dict, assets: dict) -> Export:
        """Wrap the trained model in tf.functions with explicit input signatures."""
        raise NotImplementedError


def get_recipe(name: str) -> Recipe:
    """The recipe of a registered model family."""
    from zoo import registry

    spec = registry.get(name)
    module = importlib.import_module(spec.recipe)
    return module.RECIPE
