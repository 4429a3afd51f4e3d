"""Weights-only copies of Keras checkpoints, optionally in float16, read with h5py.

A training checkpoint (`ckpt-N.weights.h5`) holds the model's weights and the optimizer's
state; an artifact needs only the weights. The copy keeps the checkpoint's layout (so
`model.load_weights` reads it strictly, like any checkpoint) minus its top-level
`optimizer` group. With `half=True`, float32 arrays are stored as float16 (half the size):
Keras converts them back to the model's float32 variables when it loads them. An array
that float16 cannot hold (a value beyond +-65504) stays float32.

No TensorFlow needed; h5py and numpy are imported when a function runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from serving.layout import staged_file

OPTIMIZER = "optimizer"


@dataclass(frozen=True)
class WeightsInfo:
    """What a weights-only copy holds."""

    parameters: int  # floating-point scalars (trainable and not)
    arrays: int
    half_arrays: int  # arrays stored as float16


def _untimed(kind):
    """A creation property list that writes no timestamps (reproducible files)."""
    import h5py

    plist = h5py.h5p.create(kind)
    plist.set_obj_track_times(False)
    return plist


def _create_group(parent, name: str):
    import h5py

    gcpl = _untimed(h5py.h5p.GROUP_CREATE)
    return h5py.Group(h5py.h5g.create(parent.id, name.encode(), gcpl=gcpl))


def _copy_group(src, dst, half: bool, counts: list[int]) -> None:
    import h5py
    import numpy as np

    for key, value in src.attrs.items():
        dst.attrs[key] = value
    for name, item in src.items():
        if src.name == "/" and name == OPTIMIZER:
            continue
        if isinstance(item, h5py.Group):
            _copy_group(item, _create_group(dst, name), half, counts)
            continue
        data = item[()]
        if np.issubdtype(np.asarray(data).dtype, np.floating):
            counts[0] += int(np.size(data))
            counts[1] += 1
            if half and data.dtype == np.float32 and np.all(np.abs(data) <= 65504):
                data = data.astype(np.float16)
            counts[2] += data.dtype == np.float16  # converted, or already (an artifact's)
        dst.create_dataset(name, data=data, track_times=False)
        for key, value in item.attrs.items():
            dst[name].attrs[key] = value


def weights_only(checkpoint: str | Path, out: str | Path, half: bool = False) -> WeightsInfo:
    """Copy the weights of a Keras `.weights.h5` checkpoint into `out` (atomically),
    without the optimizer state, in float16 when `half`."""
    import h5py

    counts = [0, 0, 0]
    with staged_file(out) as tmp:
        fid = h5py.h5f.create(
            str(tmp).encode(), h5py.h5f.ACC_TRUNC, fcpl=_untimed(h5py.h5p.FILE_CREATE)
        )
        with h5py.File(checkpoint, "r") as src, h5py.File(fid) as dst:
            _copy_group(src, dst, half, counts)
    return WeightsInfo(parameters=counts[0], arrays=counts[1], half_arrays=counts[2])


def weight_arrays(path: str | Path) -> dict[str, object]:
    """Every weight array of a checkpoint by its path in the file (the optimizer's excluded)."""
    import h5py

    arrays: dict[str, object] = {}
    with h5py.File(path, "r") as f:

        def visit(name: str, item) -> None:
            if isinstance(item, h5py.Dataset) and not name.startswith(f"{OPTIMIZER}/"):
                arrays[name] = item[()]

        f.visititems(visit)
    return arrays
