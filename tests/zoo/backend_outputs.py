"""Run every family's example under the Keras backend of this process (a test subprocess).

`python -m tests.zoo.backend_outputs WEIGHTS_DIR OUT.npz` loads `<WEIGHTS_DIR>/<name>.weights.h5`
(saved under another backend) into each family's `tiny` example model, and writes its
flattened outputs, then the loss and weight change of one SGD step, to OUT.npz. Then each
whole model saved there as `<key>.keras`, with its inputs in `<key>.inputs.npy`, is rebuilt
from its config under this backend and run in one jitted forward pass (`predict_on_batch`):
OUT.npz gets its outputs by name (`<key>/keras/<output>`), their names (`<key>/keras`) and
"path: class name" of every layer it holds, nested ones included (`<key>/keras_layers`, e.g.
"backbone/norm1: LocalResponseNormalization").
"""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import numpy as np

from zoo import registry


def forward_and_step(model: keras.Model, inputs) -> tuple[list[np.ndarray], float, float]:
    """Outputs of `model` on `inputs` (one compiled forward pass), then one SGD step towards
    zero outputs: (outputs, loss, largest weight change). Not an eager call: under JAX that
    compiles every op of every family apart (819 compiles, 56 CPU-s for this module's
    subprocess; 42 CPU-s with `predict_on_batch`)."""
    answers = model.predict_on_batch(inputs)
    outputs = [np.asarray(o) for o in keras.tree.flatten(answers)]
    before = [np.array(w) for w in model.get_weights()]
    targets = keras.tree.map_structure(np.zeros_like, answers)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    loss = model.train_on_batch(inputs, targets)
    loss = float(np.sum(loss)) if isinstance(loss, list) else float(loss)
    change = max(
        float(np.abs(np.array(a) - b).max())
        for a, b in zip(model.get_weights(), before, strict=True)
    )
    return outputs, loss, change


def layer_paths(layer, prefix: str = ""):
    """Each layer inside `layer`, depth first, as "path: class name"."""
    for sub in getattr(layer, "layers", []):
        yield f"{prefix}{sub.name}: {type(sub).__name__}"
        yield from layer_paths(sub, f"{prefix}{sub.name}/")


def main(weights_dir: str, out: str) -> None:
    results = {"backend": np.array(keras.backend.backend())}
    for name in registry.names():  # (imports every family: their layers are registered)
        model, inputs = registry.get(name).example()
        model.load_weights(Path(weights_dir) / f"{name}.weights.h5")
        outputs, loss, change = forward_and_step(model, inputs)
        for i, value in enumerate(outputs):
            results[f"{name}/out{i}"] = value
        results[f"{name}/loss"] = np.array(loss)
        results[f"{name}/change"] = np.array(change)
    for path in sorted(Path(weights_dir).glob("*.keras")):
        model = keras.saving.load_model(path)  # rebuilt from its config here
        outputs = model.predict_on_batch(np.load(path.with_suffix(".inputs.npy")))
        results[f"{path.stem}/keras"] = np.array(sorted(outputs))
        for key, value in outputs.items():
            results[f"{path.stem}/keras/{key}"] = np.asarray(value)
        results[f"{path.stem}/keras_layers"] = np.array(list(layer_paths(model)))
    np.savez(out, **results)


if __name__ == "__main__":
    main(*sys.argv[1:])
