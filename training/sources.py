"""Where a recipe's initial weights come from: a source string, resolved by the caller.

A config may name trained weights to start from as a string (the captioner's
`encoder_init`: a run directory or a published artifact NAME[@VERSION]). Training never
resolves published names itself: the catalogue imports training, never the other way round.
The caller passes a `LoadSource` (`zoo train` passes one built on `catalogue.load_model`);
without one, `run_directory` accepts run directories only. `load_trained` rebuilds a run's
model with Keras alone, so either works on any backend, TensorFlow or not.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras

#: a source string -> the trained Keras model it names
LoadSource = Callable[[str], keras.Model]


def run_directory(source: str) -> keras.Model:
    """The trained model of the run directory `source`; anything else is a ValueError."""
    if not Path(source).is_dir():
        raise ValueError(
            f"{source} is not a run directory; pass a load_source that resolves catalogue "
            "names (the CLI does)"
        )
    return load_trained(source)[0]


def load_trained(model_dir: str | Path, checkpoint: str | Path | None = None):
    """Rebuild the model of a run directory and load its best (else newest) checkpoint.

    The best checkpoint exists when the run's config names a `checkpoint_monitor`. Keras
    only (no TensorFlow): a run on any backend initialises from a trained run.

    Returns (keras_model, run_info) where run_info is the content of run.json.
    """
    from training import checkpoints
    from training.recipe import get_recipe

    model_dir = Path(model_dir)
    run_info = checkpoints.read_json(model_dir / "run.json")
    if run_info is None:
        raise FileNotFoundError(f"{model_dir} is not a training run (no run.json)")
    recipe = get_recipe(run_info["model"])
    model = recipe.build_model(run_info["config"], run_info["assets"])
    if checkpoint is None:
        checkpoint = checkpoints.exported_checkpoint(model_dir / "checkpoints")
        if checkpoint is None:
            raise FileNotFoundError(f"{model_dir} has no completed checkpoint yet")
    # Strict: a checkpoint that does not fit the rebuilt model is an error, never a partly
    # restored export. The optimizer state in the file is not needed here.
    model.load_weights(checkpoint)
    return model, run_info
