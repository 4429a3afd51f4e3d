"""Where a recipe's initial weights come from: a source string, resolved by the caller.

A config may name trained weights to start from as a string (the captioner's
`encoder_init`: a run directory or a published artifact NAME[@VERSION]). Training never
resolves published names itself: the catalogue imports training, never the other way round.
The caller passes a `LoadSource` (`zoo train` passes one built on `catalogue.load_model`);
without one, `run_directory` accepts run directories only.
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
    from training.export import load_trained  # TensorFlow, and the recipes

    return load_trained(source)[0]
