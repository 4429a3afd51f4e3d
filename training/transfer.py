"""Strict weight transfer between models: fine-tuning and initialising parts from a run.

Keras' `load_weights(..., skip_mismatch=True)` silently keeps fresh weights wherever a shape
differs, so a changed vocabulary or a wrong parent goes unnoticed. Here every weight of every
layer pair is copied, and a mismatch is an error, except in the layers the caller names as
re-initialised (a new classification head) or as grown (an embedding or output layer whose
vocabulary was extended: the trained rows are copied into the leading slice, and the rows of
the new entries keep their fresh values).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import keras
import numpy as np


class TransferError(ValueError):
    """The source and target models do not line up."""


def _copy_layer(
    source: keras.layers.Layer, target: keras.layers.Layer, where: str, grow: bool = False
) -> bool:
    """Copy every weight; with `grow`, a larger target weight takes the source in its leading
    slice. Returns whether anything grew."""
    src, dst = source.weights, target.weights
    if len(src) != len(dst):
        raise TransferError(f"{where}: {len(src)} weights in the source, {len(dst)} in the target")
    grew = False
    for s, d in zip(src, dst, strict=True):
        old, new = tuple(s.shape), tuple(d.shape)
        if old == new:
            d.assign(s)
            continue
        if not grow or len(old) != len(new) or any(a > b for a, b in zip(old, new, strict=True)):
            raise TransferError(f"{where}/{d.path}: shape {old} in the source, {new} here")
        value = keras.ops.convert_to_numpy(d).copy()
        value[tuple(slice(0, n) for n in old)] = keras.ops.convert_to_numpy(s)
        d.assign(value)
        grew = True
    return grew


def copy_weights(
    source: keras.Model,
    target: keras.Model,
    reinitialized: Iterable[str] = (),
    grown: Iterable[str] = (),
) -> list[str]:
    """Copy `source`'s weights into `target`, layer by layer in build order.

    Both models must come from the same builder (their top-level layers pair up by position
    and class). Layers named in `reinitialized` keep their fresh weights; those in `grown`
    may be larger in the target (an extended vocabulary) and take the source's weights in
    their leading rows/columns. Returns the names of the layers that grew.
    """
    skip, growable = set(reinitialized), set(grown)
    if len(source.layers) != len(target.layers):
        raise TransferError(
            f"the source has {len(source.layers)} layers and the target {len(target.layers)}"
        )
    grew = []
    for s, t in zip(source.layers, target.layers, strict=True):
        if type(s) is not type(t):
            raise TransferError(f"layer {t.name}: {type(s).__name__} in the source")
        if t.name in skip or not t.weights:
            continue
        if _copy_layer(s, t, t.name, grow=t.name in growable):
            grew.append(t.name)
    return grew


def copy_parts(source: keras.Model, target: keras.Model, parts: Sequence[str]) -> None:
    """Copy the named sub-layers (e.g. "backbone") from `source` into `target`, strictly."""
    for part in parts:
        try:
            src, dst = source.get_layer(part), target.get_layer(part)
        except ValueError as err:
            raise TransferError(f"no layer {part!r} in both models: {err}") from None
        _copy_layer(src, dst, part)


def copy_by_name(source: keras.layers.Layer, target: keras.layers.Layer, where: str) -> None:
    """Copy `source`'s weights into `target`, strictly: layer by layer by name when
    `target` is a model (`source` may hold more layers, e.g. a backbone cut shorter),
    weight by weight otherwise."""
    if isinstance(target, keras.Model):
        for layer in target.layers:
            if not layer.weights:
                continue
            try:
                match = source.get_layer(layer.name)
            except ValueError:
                raise TransferError(f"{where}/{layer.name}: no such layer in the source") from None
            copy_by_name(match, layer, f"{where}/{layer.name}")
        return
    _copy_layer(source, target, where)


def fingerprint(layer: keras.layers.Layer) -> str:
    """A short hash of a layer's weights (which encoder computed a feature cache)."""
    digest = hashlib.sha256()
    for weight in layer.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()[:16]
