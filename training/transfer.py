"""Strict weight transfer between models: fine-tuning and initialising parts from a run.

Keras' `load_weights(..., skip_mismatch=True)` silently keeps fresh weights wherever a shape
differs, so a changed vocabulary or a wrong parent goes unnoticed. Here every weight of every
layer pair is copied, and a mismatch is an error, except in the layers the caller names as
re-initialised (a new classification head).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import keras


class TransferError(ValueError):
    """The source and target models do not line up."""


def _copy_layer(source: keras.layers.Layer, target: keras.layers.Layer, where: str) -> None:
    src, dst = source.weights, target.weights
    if len(src) != len(dst):
        raise TransferError(f"{where}: {len(src)} weights in the source, {len(dst)} in the target")
    for s, d in zip(src, dst, strict=True):
        if tuple(s.shape) != tuple(d.shape):
            raise TransferError(
                f"{where}/{d.path}: shape {tuple(s.shape)} in the source, {tuple(d.shape)} here"
            )
        d.assign(s)


def copy_weights(
    source: keras.Model, target: keras.Model, reinitialized: Iterable[str] = ()
) -> list[str]:
    """Copy `source`'s weights into `target`, layer by layer in build order.

    Both models must come from the same builder (their top-level layers pair up by position
    and class). Layers named in `reinitialized` keep their fresh weights. Returns the names
    of the layers copied.
    """
    skip = set(reinitialized)
    if len(source.layers) != len(target.layers):
        raise TransferError(
            f"the source has {len(source.layers)} layers and the target {len(target.layers)}"
        )
    copied = []
    for s, t in zip(source.layers, target.layers, strict=True):
        if type(s) is not type(t):
            raise TransferError(f"layer {t.name}: {type(s).__name__} in the source")
        if t.name in skip or not t.weights:
            continue
        _copy_layer(s, t, t.name)
        copied.append(t.name)
    return copied


def copy_parts(source: keras.Model, target: keras.Model, parts: Sequence[str]) -> None:
    """Copy the named sub-layers (e.g. "backbone") from `source` into `target`, strictly."""
    for part in parts:
        try:
            src, dst = source.get_layer(part), target.get_layer(part)
        except ValueError as err:
            raise TransferError(f"no layer {part!r} in both models: {err}") from None
        _copy_layer(src, dst, part)
