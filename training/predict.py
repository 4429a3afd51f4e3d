"""`zoo predict`: call an exported SavedModel's signature on local inputs, no server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf

from serving.errors import error_summary
from serving.layout import version_dirs


def resolve_version_dir(path: str | Path) -> Path:
    """A version directory itself, or the newest integer version under a base path."""
    path = Path(path)
    if (path / "saved_model.pb").exists():
        return path
    versions = version_dirs(path)
    if not versions:
        raise FileNotFoundError(f"No SavedModel at {path} (nor integer version folders under it)")
    return versions[-1][1]


def _input_value(spec: tf.TensorSpec, name: str, inputs: list[str]) -> tf.Tensor:
    if spec.dtype != tf.string:
        raise ValueError(f"zoo predict feeds string inputs; input {name!r} is {spec.dtype.name}")
    if "image" in name or "bytes" in name:
        return tf.constant([Path(p).read_bytes() for p in inputs])
    return tf.constant(inputs)


def _format(value: np.ndarray) -> str:
    if value.dtype == object:
        value = np.vectorize(lambda b: b.decode("utf-8", "replace"))(value)
    return np.array2string(value, precision=4, max_line_width=160, threshold=200)


def run(
    export_dir: str | Path, inputs: list[str], signature: str = "serving_default", top_k: int = 3
) -> Iterator[str]:
    """Yield readable result lines for each input."""
    version_dir = resolve_version_dir(export_dir)
    loaded = tf.saved_model.load(str(version_dir))
    if signature not in loaded.signatures:
        raise KeyError(f"Signature {signature!r} not in {sorted(loaded.signatures)}")
    fn = loaded.signatures[signature]
    specs = fn.structured_input_signature[1]
    required = {n: s for n, s in specs.items()}
    if len(required) != 1:
        raise ValueError(
            f"zoo predict needs a one-input signature; {signature} has {sorted(specs)}"
        )
    ((name, spec),) = required.items()
    try:
        result = fn(**{name: _input_value(spec, name, inputs)})
    except tf.errors.InvalidArgumentError as err:
        raise ValueError(f"{signature} rejected the input: {error_summary(err.message) or err}") from None
    outputs = {k: v.numpy() for k, v in result.items()}
    labels_file = version_dir / "assets" / "labels.txt"
    labels = labels_file.read_text().splitlines() if labels_file.exists() else None
    for i, item in enumerate(inputs):
        if labels and "probabilities" in outputs:
            probs = outputs["probabilities"][i]
            best = np.argsort(-probs)[:top_k]
            ranked = ", ".join(f"{labels[j]} {probs[j]:.3f}" for j in best)
            yield f"{item}: {ranked}"
        elif {"tokens", "tags"} <= outputs.keys():  # taggers: token/TAG pairs
            length = int(outputs["lengths"][i]) if "lengths" in outputs else None
            pairs = zip(outputs["tokens"][i][:length], outputs["tags"][i][:length], strict=True)
            yield f"{item}: " + " ".join(f"{t.decode()}/{g.decode()}" for t, g in pairs)
        else:
            parts = [f"{k}={_format(v[i])}" for k, v in sorted(outputs.items())]
            yield f"{item}: " + " ".join(parts)
