"""Prepared data: a recipe's decoded and tokenized arrays in a folder, readable without
TensorFlow (NumPy only), so that `zoo train --data` runs on any Keras backend.

`zoo prepare FAMILY --data-dir D --out P` writes (`write`):

    P/prepared.json                 family, preset, config, assets (vocabularies, class
                                    names), the command, and per split the arrays' dtype,
                                    row shape, row count and shard files
    P/<split>/<array>-<k>.npy       shard k of one array: rows along axis 0, each shard at
                                    most `SHARD_BYTES`, memory-mapped on reading

The folder appears whole or not at all (written under a temporary name and renamed), and a
reader checks every shard's size against `prepared.json` before it maps it, so a truncated
or swapped file is a clear error, not a silent misread.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1
MANIFEST = "prepared.json"
#: the largest shard file: small enough to travel (the device takes files of 16 MiB)
SHARD_BYTES = 15 * 2**20
#: bounds a reader checks before it maps anything
MAX_MANIFEST_BYTES = 64 * 2**20


class ShardedArray:
    """One array of a split, stored as row shards: `len`, `shape`, `dtype`, and rows by index
    (`take`, `[i]`, `[a:b]`); `read()` gives the whole array in memory."""

    def __init__(self, shards: list[np.ndarray]):
        if not shards:
            raise ValueError("an array needs at least one shard")
        self.shards = shards
        self.row_shape = tuple(shards[0].shape[1:])
        self.dtype = shards[0].dtype
        self._ends = np.cumsum([len(s) for s in shards])

    def __len__(self) -> int:
        return int(self._ends[-1])

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.row_shape)

    def take(self, indices) -> np.ndarray:
        """Rows `indices` (any order, repeats allowed) as one in-memory array."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        if len(self.shards) == 1:
            return np.asarray(self.shards[0][indices])
        out = np.empty((len(indices), *self.row_shape), self.dtype)
        shard_of = np.searchsorted(self._ends, indices, side="right")
        starts = np.concatenate([[0], self._ends[:-1]])
        for k in np.unique(shard_of):
            where = shard_of == k
            out[where] = self.shards[k][indices[where] - starts[k]]
        return out

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            return self.take(np.arange(len(self))[key])
        if isinstance(key, (int, np.integer)):
            return self.take([int(key)])[0]
        return self.take(key)

    def read(self) -> np.ndarray:
        """The whole array in memory."""
        return np.concatenate([np.asarray(s) for s in self.shards])


@dataclass
class Prepared:
    """A prepared-data folder, opened: its manifest and its splits' arrays (memory-mapped)."""

    path: Path
    info: dict[str, Any]

    @property
    def family(self) -> str:
        return self.info["family"]

    @property
    def preset(self) -> str:
        return self.info["preset"]

    @property
    def config(self) -> dict[str, Any]:
        return self.info["config"]

    @property
    def assets(self) -> dict[str, Any]:
        return self.info["assets"]

    @property
    def splits(self) -> list[str]:
        return list(self.info["splits"])

    def split(self, name: str) -> dict[str, ShardedArray]:
        """The arrays of split `name` by array name; a clear error for an unknown split."""
        if name not in self.info["splits"]:
            raise KeyError(f"{self.path} has no split {name!r} (it has {', '.join(self.splits)})")
        arrays = {}
        for array, spec in self.info["splits"][name].items():
            shards = [_open_shard(self.path / name / f, spec) for f in spec["files"]]
            arrays[array] = ShardedArray(shards)
            if len(arrays[array]) != spec["rows"]:
                raise ValueError(f"{self.path / name}: {array} has {len(arrays[array])} rows")
        return arrays


def _open_shard(path: Path, spec: dict) -> np.ndarray:
    """A shard memory-mapped, after checking that it is the file the manifest describes."""
    if not path.is_file():
        raise FileNotFoundError(f"prepared data is missing {path}")
    try:
        shard = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:  # truncated, or not an .npy file
        raise ValueError(f"{path} is damaged: {err}") from err
    if str(shard.dtype) != spec["dtype"] or list(shard.shape[1:]) != spec["row_shape"]:
        raise ValueError(
            f"{path}: {shard.dtype}{list(shard.shape)} where the manifest says "
            f"{spec['dtype']} rows of {spec['row_shape']}"
        )
    return shard


def _shards(array: np.ndarray, shard_bytes: int) -> list[np.ndarray]:
    """`array` cut along axis 0 into pieces of at most `shard_bytes` (at least one row each)."""
    row_bytes = max(int(np.prod(array.shape[1:], dtype=np.int64)) * array.itemsize, 1)
    rows = max(shard_bytes // row_bytes, 1)
    count = max(math.ceil(len(array) / rows), 1)
    return [array[k * rows : (k + 1) * rows] for k in range(count)]


def write(
    out: str | Path,
    *,
    family: str,
    preset: str,
    config: Mapping[str, Any],
    assets: Mapping[str, Any],
    splits: Mapping[str, Mapping[str, np.ndarray]],
    command: str | None = None,
    shard_bytes: int = SHARD_BYTES,
) -> Path:
    """Write a prepared-data folder at `out` atomically (an existing one is replaced whole).

    `splits` maps a split name ("train", "val", "test") to its arrays, which must all have
    the same number of rows (one row per example), except where a recipe stores one long
    array (a text's ids) as the split's only array. Each array is cut into shard files of
    at most `shard_bytes`.
    """
    out = Path(out)
    staging = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "family": family,
        "preset": preset,
        "config": dict(config),
        "assets": dict(assets),
        "command": command,
        "splits": {},
    }
    for split, arrays in splits.items():
        (staging / split).mkdir()
        specs = {}
        for name, array in arrays.items():
            array = np.ascontiguousarray(array)
            if array.dtype == object:
                raise TypeError(f"{split}/{name}: object arrays cannot be prepared")
            files = []
            for k, shard in enumerate(_shards(array, shard_bytes)):
                files.append(f"{name}-{k:05d}.npy")
                np.save(staging / split / files[-1], shard, allow_pickle=False)
            specs[name] = {
                "dtype": str(array.dtype),
                "row_shape": list(array.shape[1:]),
                "rows": len(array),
                "files": files,
            }
        manifest["splits"][split] = specs
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def read(path: str | Path) -> Prepared:
    """Open a prepared-data folder; a clear error when it is not one or is damaged."""
    path = Path(path)
    manifest = path / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"{path} is not prepared data (no {MANIFEST}); see `zoo prepare`")
    if manifest.stat().st_size > MAX_MANIFEST_BYTES:
        raise ValueError(f"{manifest} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        info = json.loads(manifest.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{manifest} is not valid JSON: {err}") from err
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ValueError(f"{manifest}: not prepared data of format {FORMAT}")
    for key in ("family", "preset", "config", "assets", "splits"):
        if key not in info:
            raise ValueError(f"{manifest} lacks {key!r}")
    return Prepared(path, info)
