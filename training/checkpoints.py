"""Atomic per-epoch checkpoints, resume, and small atomic JSON files in a run directory.

A checkpoint file `ckpt-<epoch>.weights.h5` exists only once it is complete: it is written
under a temporary name and renamed (`serving.layout`'s atomic writes), so a run killed
mid-write leaves the previous epoch's checkpoint intact and the next run resumes from it.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import keras

from serving.layout import staged_file
from training import run_files

_CKPT = re.compile(r"^ckpt-(\d+)\.weights\.h5$")
BEST = "best.weights.h5"


def read_json(path: str | Path, default: Any = None) -> Any:
    """JSON content of `path`, or `default` when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return default
    return json.loads(path.read_text())


def list_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """(epoch, path) of the complete checkpoints in `directory`, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = _CKPT.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(directory: str | Path) -> tuple[int, Path] | None:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(directory)
    return found[-1] if found else None


def best_checkpoint(directory: str | Path) -> Path | None:
    """`best.weights.h5` (the epoch with the best monitored value) when the run keeps one."""
    path = Path(directory) / BEST
    return path if path.is_file() else None


def exported_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint that export and evaluation load: the best one when the run keeps
    one, else the newest; None before the first epoch has ended."""
    best = best_checkpoint(directory)
    if best is not None:
        return best
    latest = latest_checkpoint(directory)
    return latest[1] if latest else None


def is_best(history: list[dict], monitor: str) -> bool:
    """Whether the last epoch of `history` has the lowest `monitor` value so far."""
    values = [h[monitor] for h in history if monitor in h]
    return bool(values) and monitor in history[-1] and history[-1][monitor] <= min(values)


def save_weights_atomic(model: keras.Model, path: str | Path) -> None:
    """`model.save_weights` (weights and optimizer state) to `path`, atomically."""
    with staged_file(path) as tmp:  # keeps the `.weights.h5` ending Keras insists on
        model.save_weights(tmp)


def build_optimizer_state(model: keras.Model) -> None:
    """Create the optimizer's slot variables so a checkpoint can restore them."""
    if getattr(model, "optimizer", None) is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


class EpochCheckpoint(keras.callbacks.Callback):
    """Save weights + optimizer state and the history atomically after every epoch.

    Keeps the newest `keep` checkpoints. `history.json` holds one logs dict per epoch so a
    resumed run still reports the whole curve. With `monitor` (e.g. "val_loss", lower is
    better) the best epoch so far is also kept as `best.weights.h5`, and its history entry
    is marked `"best": 1.0`.

    Only the chief writes (`write`). Where reading the weights is a collective operation
    (`collective`: JAX across processes, whose every process must take part), the other
    processes save them too, to a file they delete.
    """

    def __init__(
        self,
        run_dir: str | Path,
        keep: int = 2,
        write: bool = True,
        monitor: str | None = None,
        collective: bool = False,
    ):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.keep = keep
        self.write = write
        self.monitor = monitor
        self.collective = collective

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        # The epoch's history entry is written first and its checkpoint commits it: a run
        # killed between the two resumes from the previous checkpoint (`resume_point`).
        if not self.write:
            if self.collective:
                import tempfile

                with tempfile.TemporaryDirectory() as scratch:
                    self.model.save_weights(Path(scratch) / "share.weights.h5")
            return
        completed = epoch + 1
        history = run_files.read_history(self.run_dir)
        history = [h for h in history if h.get("epoch", 0) < completed]
        history.append({"epoch": completed, **{k: float(v) for k, v in (logs or {}).items()}})
        best = bool(self.monitor) and is_best(history, self.monitor)
        if best:
            history[-1]["best"] = 1.0
        run_files.write_history(self.run_dir, history)
        path = self.ckpt_dir / f"ckpt-{completed:04d}.weights.h5"
        save_weights_atomic(self.model, path)
        if best:
            copy_best(path)
        for _, old in list_checkpoints(self.ckpt_dir)[: -self.keep]:
            old.unlink(missing_ok=True)


def copy_best(checkpoint: Path) -> None:
    """Keep `checkpoint` as its directory's `best.weights.h5`, atomically."""
    with staged_file(checkpoint.parent / BEST) as tmp:
        shutil.copyfile(checkpoint, tmp)


def resume_point(
    run_dir: str | Path, repair: bool = True
) -> tuple[tuple[int, Path] | None, list[dict]]:
    """The newest checkpoint of a run (None: start afresh) and the history up to its epoch.

    History entries past the checkpoint belong to an epoch whose checkpoint never landed
    (the run was killed between the two writes): they are left out, and that epoch runs
    again. When the history marks the resumed epoch as the best, `best.weights.h5` is copied
    from its checkpoint again (`repair`: the chief, the one writer), in case the run died
    before that copy.
    """
    run_dir = Path(run_dir)
    latest = latest_checkpoint(run_dir / "checkpoints")
    epoch = latest[0] if latest else 0
    history = [h for h in run_files.read_history(run_dir) if h.get("epoch", 0) <= epoch]
    marked = history and history[-1].get("epoch") == epoch and history[-1].get("best")
    if repair and latest and marked:
        copy_best(latest[1])
    return latest, history
