"""The contract between a model family and the generic train / evaluate / export commands.

Each family has one module `training/recipes/<family name>.py` defining a `Recipe` subclass
instance named `RECIPE`, found by name (no list to edit). Most recipes subclass a task
layer (`training/tasks/`): image classification, sequence generation. The generic code in `training/train.py`, `training/evaluate.py` and
`training/export.py` only ever talks to a family through this interface, so checkpoints,
resume, TensorBoard logs, metrics.json, distribution and atomic export behave the same
for every model.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import keras

if TYPE_CHECKING:  # TensorFlow: not needed to train on prepared arrays
    import numpy as np
    import tensorflow as tf

    from training.export_module import ExportModule
    from training.prepared import Prepared


@dataclass(frozen=True)
class Headline:
    """A task's headline metric: the number a card, the manifest and `zoo list` show, and
    which direction is better (an artifact is replaced only when it improves)."""

    key: str  # may name config keys: "{tagset}_accuracy"
    higher_is_better: bool = True
    percent: bool = False


@dataclass
class Data:
    """Datasets for one run. Training data is batched by the *global* batch size.

    Attributes:
        train: batched (x, y) or (x, y, sample_weight) dataset, repeated or not.
        val: batched validation dataset (evaluated at each epoch end), or None.
        test: batched test dataset for the reported metric, or None (then `val` is used).
        steps_per_epoch: set when `train` repeats forever (iteration-based training).
        train_batches: batches in one pass over a finite `train` whose size tf.data cannot
            count (length bucketing), for learning-rate schedules.
        validation_steps: batches of `val` per evaluation when `val` repeats forever.
        examples_per_step: examples (or tokens) per training step, for throughput; default
            the global batch size.
        assets: JSON-serializable facts learned from the data that the model needs at export
            time (class names, vocabularies, tokenizer tables). Saved in the run directory.
    """

    train: tf.data.Dataset | keras.utils.PyDataset | None
    val: tf.data.Dataset | keras.utils.PyDataset | None = None
    test: tf.data.Dataset | keras.utils.PyDataset | None = None
    steps_per_epoch: int | None = None
    train_batches: int | None = None
    validation_steps: int | None = None
    examples_per_step: int | None = None
    assets: dict[str, Any] = field(default_factory=dict)

    def batches_per_epoch(self) -> int | None:
        """Training steps per epoch, or None when nobody can tell."""
        known = self.steps_per_epoch or self.train_batches
        if known or self.train is None:
            return known
        if isinstance(self.train, keras.utils.PyDataset):
            return len(self.train)
        cardinality = int(self.train.cardinality())
        return cardinality if cardinality > 0 else None


class Recipe:
    """How one model family loads data, compiles, evaluates and exports.

    Subclasses override the methods below. `config` is the preset config (a dict), `assets`
    the dict saved from `Data.assets` at training time.
    """

    #: registry name of the model family
    name: str = ""
    #: the metric of `evaluate` that cards and the catalogue lead with (None: not publishable)
    headline: Headline | None = None
    #: a card's default intended-use paragraph; `{key}` fields are filled from the run's
    #: config, `{classes}` from its class names
    intended_use: str = "Research and a starting point for fine-tuning."

    def load_data(
        self,
        config: dict,
        data_dir: str | None,
        global_batch_size: int,
        *,
        training: bool = True,
        assets: dict | None = None,
        load_source: Callable[[str], keras.Model] | None = None,
    ) -> Data:
        """Build the datasets. `data_dir` None means TFDS (online); else local files.

        `assets` (from an earlier run: resume, evaluate) must be reused as they are
        (vocabularies, class names), never rebuilt from the data, so ids stay stable.
        `load_source` resolves a source of trained weights the config names, for data
        that needs a trained model (the captioner's cached encoder features); None:
        run directories only (`training.sources`).
        """
        raise NotImplementedError

    def prepare(
        self, config: dict, data_dir: str | None, assets: dict | None = None
    ) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
        """The data as arrays for `zoo prepare` (`training.prepared`): split name -> array
        name -> one row per example (decoded, tokenized, at the recipe's size, before any
        random augmentation), and the assets. `assets` as in `load_data`."""
        raise NotImplementedError(
            f"{self.name} has no prepared-data route yet; train it with --data-dir"
        )

    def array_data(
        self,
        config: dict,
        data: Prepared,
        global_batch_size: int,
        *,
        training: bool = True,
        seed: int | None = 0,
    ) -> Data:
        """`load_data`'s counterpart over prepared arrays (`training.array_datasets`), for
        any Keras backend: the same batches, with random augmentation in `keras.ops`."""
        raise NotImplementedError(
            f"{self.name} has no prepared-data route yet; train it with --data-dir"
        )

    def evaluate_arrays(self, model, config: dict, data: Data) -> dict[str, float]:
        """The metrics a run on prepared arrays reports: by default the compiled loss and
        metrics on `data.test` (or `data.val`). Task metrics that need the exported
        decoder (BLEU) come from `zoo evaluate` on the run."""
        split = data.test if data.test is not None else data.val
        if split is None:
            raise ValueError("No test or validation data to evaluate on")
        steps = data.validation_steps if split is data.val else None
        results = model.evaluate(split, steps=steps, return_dict=True, verbose=0)
        return {k: float(v) for k, v in results.items()}

    def default_batch_size(self, config: dict) -> int:
        """Global batch size used when the CLI does not set one."""
        return int(config.get("batch_size", 32))

    def model_config(self, config: dict, assets: dict) -> dict:
        """The config the builder gets: the preset's, with its `DATA_DECIDED` sizes (vocabulary
        sizes, tag counts) filled in from the data's `assets`. The default changes nothing."""
        return config

    def build_model(self, config: dict, assets: dict):
        """Build the keras.Model (called inside `strategy.scope()`): the one route from a
        run's config and assets to a model, for training, evaluation, export and fine-tuning."""
        from zoo import registry

        return registry.get(self.name).builder(self.model_config(config, assets))

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

    def reinitialized_layers(
        self, model, config: dict, parent_config: dict, assets: dict, parent_assets: dict
    ) -> list[str]:
        """Top-level layers of `model` (config and data assets `config`, `assets`) that
        fine-tuning from a run with `parent_config` / `parent_assets` starts afresh (a new
        head); every other weight is copied, and must fit."""
        return []

    def extend_assets(self, parent_assets: dict, data_assets: dict, config: dict) -> dict:
        """The assets a fine-tuning run uses: by default the new data's own. Text recipes
        keep the parent's vocabularies and append what the new data adds, so that the known
        entries keep their ids (and their trained rows, through `grown_layers`)."""
        return data_assets

    def grown_layers(self, model) -> list[str]:
        """Top-level layers of `model` whose weights grow with an extended vocabulary (their
        trained rows are kept, the new rows start fresh). None by default."""
        return []

    def init_from(self, model, source_model: keras.Model, parts: list[str]) -> None:
        """Initialise the named parts of `model` (e.g. ["backbone"]) from `source_model`, an
        already loaded trained model, which must have layers of those names and shapes (a
        mismatch is an error, never a silent skip)."""
        from training.transfer import copy_parts

        copy_parts(source_model, model, parts)

    def initialize(self, model, config: dict, load_source: Callable[[str], keras.Model]) -> None:
        """Prepare the freshly built model of a new run before its first step (not of a
        resumed run, nor of a fine-tuning one): e.g. its backbone from the trained run or
        artifact its config names, loaded by `load_source` (a source string -> a trained
        Keras model; the caller resolves published names), through `init_from`. Nothing by
        default."""

    def export(self, model, config: dict, assets: dict) -> ExportModule:
        """The trained model wrapped in an `ExportModule` with its serving signatures."""
        raise NotImplementedError


def get_recipe(name: str) -> Recipe:
    """The recipe of a model family: `RECIPE` in `training/recipes/<name>.py`."""
    from zoo import registry

    registry.get(name)  # a clear error for unknown names
    return importlib.import_module(f"training.recipes.{name}").RECIPE
