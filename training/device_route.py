"""The lent GPU's route (Keras + NumPy only): what `scripts/device_*.py` share.

The device machine has JAX but no TensorFlow, so a family is trained there by a script in
three steps: `prepare` (here, TensorFlow: the recipe's own data as arrays), `train`
(device, `KERAS_BACKEND=jax`: the preset's model and objective with `model.fit`) and
`import` (here: a run directory that `zoo evaluate` / `zoo export` / `zoo publish` take
like any other). This module holds the parts every family's script has alike: weights
carried as float32 arrays keyed by variable position, the time budget, the history rows
and the run directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import time
from pathlib import Path

import keras
import numpy as np

#: files per set of weights: the device returns at most 8 files of 16 MiB (64 MiB in all)
PARTS = 3


def save_weights(model: keras.Model, out: Path, name: str, parts: int = PARTS) -> None:
    """The model's weights as `out/<name>-<k>.npz`, k < `parts`, balanced by size, each
    written whole (a temporary file renamed) so that a run killed mid-write leaves the
    previous set. Keyed by position: variable paths carry per-process layer counters
    (lstm_2, ...), while the order of `model.weights` is the model code's."""
    weights = {f"{i:04d}": np.asarray(v, dtype="float32") for i, v in enumerate(model.weights)}
    split: list[dict] = [{} for _ in range(parts)]
    for key in sorted(weights, key=lambda key: -weights[key].nbytes):  # largest first
        min(split, key=lambda part: sum(a.nbytes for a in part.values()))[key] = weights[key]
    out.mkdir(parents=True, exist_ok=True)
    for k, part in enumerate(split):
        tmp = out / f".{name}-{k}.tmp.npz"
        np.savez(tmp, **part)
        os.replace(tmp, out / f"{name}-{k}.npz")


def load_weights(model: keras.Model, weights_dir: Path, name: str, parts: int = PARTS) -> None:
    """Assign `save_weights`' arrays to the model's variables; a clear error when the
    count or a shape differs (another config or model)."""
    arrays = {}
    for k in range(parts):
        with np.load(weights_dir / f"{name}-{k}.npz") as part:
            arrays.update({key: part[key] for key in part.files})
    if len(arrays) != len(model.weights):
        raise ValueError(f"{len(arrays)} arrays for the model's {len(model.weights)} variables")
    for i, variable in enumerate(model.weights):
        value = arrays[f"{i:04d}"]
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(f"{variable.path}: shape {value.shape} != {variable.shape}")
        variable.assign(value)


class TimeBudget(keras.callbacks.Callback):
    """Stops training after the first epoch that ends more than `seconds` after `start`
    (the device's commands are time-limited)."""

    def __init__(self, seconds: float | None, start: float | None = None):
        super().__init__()
        self.seconds, self.start = seconds, start or time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self.seconds and time.perf_counter() - self.start > self.seconds:
            print(f"time budget of {self.seconds:.0f} s spent after epoch {epoch + 1}", flush=True)
            self.model.stop_training = True


def history_rows(history: dict, monitor: str | None = None) -> list[dict]:
    """`model.fit`'s history as one dict per epoch; with `monitor` (a loss), each row says
    whether it was the best epoch so far."""
    rows, lowest = [], float("inf")
    for i in range(len(next(iter(history.values())))):
        row = {"epoch": i + 1, **{k: float(v[i]) for k, v in history.items()}}
        if monitor:
            row["best"] = row[monitor] < lowest
            lowest = min(lowest, row[monitor])
        rows.append(row)
    return rows


def device_command(script: str, data_dir: str, summary: dict, prepared: dict | None = None) -> str:
    """The two commands that reproduce a device run: `prepare` with the overrides the data
    was prepared with (`prepared`), then `train` with the seed and the other overrides."""
    prepared = prepared or {}

    def sets(overrides: dict) -> list[str]:
        return ["--set " + shlex.quote(f"{k}={json.dumps(v)}") for k, v in overrides.items()]

    trained = {k: v for k, v in summary.get("overrides", {}).items() if k not in prepared}
    prepare = [f"python scripts/{script} prepare --data-dir {data_dir} --out .device_data"]
    train = [f"KERAS_BACKEND=jax python scripts/{script} train --data .device_data --out OUT"]
    return " ".join(
        prepare + sets(prepared) + ["&&"] + train + [f"--seed {summary['seed']}"] + sets(trained)
    )


def write_run(
    to: Path,
    model: keras.Model,
    weights_dir: Path,
    info: dict,
    summary: dict,
    *,
    command: str,
    data_dir: str,
    best: bool,
) -> None:
    """A run directory, as `zoo train` would have left it: run.json, history.json and
    checkpoints/ckpt-<last epoch> (and best.weights.h5 with `best`) from the device's
    `last` (and `best`) weights. run.json's `training` record is the device run's one
    segment, its environment the one the device recorded in the summary
    (`training.provenance.training_environment`), null when the summary has none."""
    from training import checkpoints

    (to / "checkpoints").mkdir(parents=True, exist_ok=True)
    load_weights(model, weights_dir, "last")
    model.save_weights(to / "checkpoints" / f"ckpt-{summary['epochs']:04d}.weights.h5")
    if best:
        load_weights(model, weights_dir, "best")
        model.save_weights(to / "checkpoints" / "best.weights.h5")
    checkpoints.write_json_atomic(
        to / "run.json",
        {
            "model": info["model"],
            "preset": info["preset"],
            "config": {**info["config"], **summary.get("overrides", {})},
            "assets": info["assets"],
            "seed": summary["seed"],
            "command": command,
            "data_dir": data_dir,
            "training": _training_record(summary, command),
        },
    )
    checkpoints.write_json_atomic(to / "history.json", summary["history"])
    print(f"wrote {to}")


def _training_record(summary: dict, command: str) -> dict:
    """run.json's `training` record (`training.provenance`) of a device run: one segment,
    with what the device itself recorded and nothing else."""
    from training import provenance

    record = provenance.start_segment(
        None, command=command, first_epoch=0, environment=summary.get("environment")
    )
    provenance.end_epoch(record, int(summary["epochs"]), float(summary["train_seconds"]))
    return record


def write_summary(out: Path, summary: dict) -> None:
    """The training summary (seed, overrides, seconds, environment, per-epoch history) as
    `out/history.json`, and printed without the history. `environment` is
    `training.provenance.training_environment(model)`, taken on the device."""
    (out / "history.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}), flush=True)


def import_run(
    family: str, script: str, data: Path, weights_dir: Path, to: Path, *, data_dir: str, best: bool
) -> None:
    """A run directory from the device's weights (`write_run`), the model built by the
    family's recipe from the prepared config with the training overrides (TensorFlow)."""
    from training.recipe import get_recipe

    info = json.loads((data / "run.json").read_text())
    summary = json.loads((weights_dir / "history.json").read_text())
    config = {**info["config"], **summary.get("overrides", {})}
    model = get_recipe(family).build_model(config, info["assets"])
    prepared = info.get("prepare_overrides")
    command = device_command(script, data_dir, summary, prepared)
    write_run(to, model, weights_dir, info, summary, command=command, data_dir=data_dir, best=best)


def argument_parser(description: str) -> tuple[argparse.ArgumentParser, dict]:
    """The three steps' common arguments: `prepare --data-dir --out`, `train --data --out
    --seed --epochs --budget --set`, `import --data --weights --to`; the sub-parsers are
    returned by step name for a script's own arguments."""
    parser = argparse.ArgumentParser(description=description)
    sub = parser.add_subparsers(dest="step", required=True)
    steps = {name: sub.add_parser(name) for name in ("prepare", "train", "import")}
    steps["prepare"].add_argument("--data-dir", required=True)
    steps["prepare"].add_argument("--out", type=Path, required=True)
    train = steps["train"]
    train.add_argument("--data", type=Path, required=True)
    train.add_argument("--out", type=Path, required=True)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--budget", type=float, default=None, help="seconds, see TimeBudget")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    steps["import"].add_argument("--data", type=Path, required=True)
    steps["import"].add_argument("--weights", type=Path, required=True)
    steps["import"].add_argument("--to", type=Path, required=True)
    return parser, steps
