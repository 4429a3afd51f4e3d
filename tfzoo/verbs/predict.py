"""`zoo predict`: call an exported SavedModel's signature on local inputs, no server.

Inputs are files for a signature whose input names an image or bytes, else the strings
themselves. Whatever the signature returns is printed one line per input by what it holds,
not by model family (`format_outputs`): a translation or completion as text, top-k classes
as "label 0.912, label 0.045", a tagging as "token/TAG" pairs.
"""

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


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _format(value: np.ndarray) -> str:
    if value.dtype == object:
        value = np.vectorize(_text)(value)
    return np.array2string(value, precision=4, max_line_width=160, threshold=200)


def _is_string(value: np.ndarray) -> bool:
    return value.dtype.kind in "OSU"


def _echoes(item: str, column: np.ndarray) -> bool:
    return all(_text(s) in item for s in column if _text(s))


def _columns(item: str, row: dict[str, np.ndarray], top_k: int) -> tuple[list[str], set[str]]:
    """Aligned lists: string columns of one length side by side ("token/TAG"), with the
    float columns of that length as scores ("label 0.912", ranked lists cut to `top_k`)."""
    parts, used = [], set()
    lengths = sorted({len(v) for v in row.values() if _is_string(v) and v.ndim == 1})
    for n in lengths:
        strings = {k: v for k, v in row.items() if _is_string(v) and v.shape == (n,)}
        floats = {k: v for k, v in sorted(row.items()) if v.dtype.kind == "f" and v.shape == (n,)}
        used |= strings.keys() | floats.keys()
        scores = list(floats.values())

        # columns that echo the input (tokens) come before what they annotate (tags)
        names = [k for _, k in sorted((not _echoes(item, v), k) for k, v in strings.items())]
        entries = []
        for j in range(n):
            texts = [_text(strings[k][j]) for k in names]
            if not any(texts):  # padding
                continue
            entries.append(" ".join(["/".join(texts), *(f"{s[j]:.3f}" for s in scores)]))
        parts.append(", ".join(entries[:top_k]) if scores else " ".join(entries))
    return parts, used


def format_outputs(
    item: str, row: dict[str, np.ndarray], top_k: int = 3, labels: list[str] | None = None
) -> str:
    """One input's outputs as a readable line, by what they hold (never by model family).

    Strings are the answer: a string is printed as it is, lists of strings side by side
    with their scores (see `_columns`). Integers (ids, lengths) only index or measure those
    strings and are left out; other numbers follow as `name=value`. A float vector over
    the export's `labels.txt` is ranked as labels with scores. Without strings, every
    output is printed as `name=value`.
    """
    labelled = (len(labels),) if labels else None
    if labelled and not any(_is_string(v) and v.shape == labelled for v in row.values()):
        for name, value in list(row.items()):
            if value.dtype.kind == "f" and value.shape == labelled:
                order = np.argsort(-value)
                row = {**row, name: value[order], "labels": np.array(labels, object)[order]}
    if not any(_is_string(v) for v in row.values()):
        return f"{item}: " + " ".join(f"{k}={_format(v)}" for k, v in sorted(row.items()))
    texts = {k: _text(v.item()) for k, v in sorted(row.items()) if _is_string(v) and v.ndim == 0}
    parts = list(texts.values()) if len(texts) == 1 else [f"{k}={v}" for k, v in texts.items()]
    columns, used = _columns(item, row, top_k)
    parts += columns
    parts += [
        f"{k}={_format(v)}"
        for k, v in sorted(row.items())
        if k not in used and k not in texts and v.dtype.kind not in "iub"
    ]
    return f"{item}: " + "  ".join(parts)


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
        raise ValueError(
            f"{signature} rejected the input: {error_summary(err.message) or err}"
        ) from None
    outputs = {k: v.numpy() for k, v in result.items()}
    labels_file = version_dir / "assets" / "labels.txt"
    labels = labels_file.read_text().splitlines() if labels_file.exists() else None
    for i, item in enumerate(inputs):
        yield format_outputs(item, {k: v[i] for k, v in outputs.items()}, top_k, labels)
