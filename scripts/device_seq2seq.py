"""Train the seq2seq `default` preset on a lent GPU under JAX, and bring the run back.

The device machine has JAX but no TensorFlow, so `zoo train` (tf.data, tf.distribute)
cannot run there. The model code is backend-neutral (`zoo/`), so the three steps are:

    prepare  (here, TensorFlow)  the recipe's own vocabularies and id sequences of
             Multi30k, padded into arrays (`<dir>/data.npz`, `<dir>/run.json`);
    train    (device, KERAS_BACKEND=jax)  the preset's model, optimizer, loss, schedule
             and epochs on those arrays with `model.fit`; the best epoch by val loss is
             written as float32 arrays keyed by variable position (`<out>/best-K.npz`,
             `training.device_route`);
    import   (here)  a run directory (run.json, checkpoints/best.weights.h5 and the last
             epoch's, history.json) that `zoo evaluate` / `zoo export` / `zoo publish`
             take like any other.

Differences from `zoo train`: batches are shuffled pairs padded to the longest sentence
(not length-bucketed; padding has weight 0 in the loss and is masked in the encoder), and
the random streams are JAX's.

    python scripts/device_seq2seq.py prepare --data-dir ../shared/data --out .device_data
    KERAS_BACKEND=jax python scripts/device_seq2seq.py train --data .device_data --out $OUT
    python scripts/device_seq2seq.py import --data .device_data --weights DIR --to runs/NAME
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

PRESET = "default"


def _padded(rows: list[list[int]]) -> np.ndarray:
    out = np.zeros((len(rows), max(len(r) for r in rows)), "int32")
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def prepare(data_dir: str, out: Path) -> None:
    """The recipe's vocabularies and teacher-forcing arrays, as `zoo train` builds them."""
    from training.recipe import get_recipe
    from zoo import registry

    config = registry.get("seq2seq").config(PRESET)
    recipe = get_recipe("seq2seq")
    data = recipe.load_data(config, data_dir, int(config["batch_size"]), training=True)
    arrays = {}
    for split, dataset in (("train", data.train), ("val", data.val)):
        source, target_in, target_out = [], [], []
        for x, y, _ in dataset.as_numpy_iterator():
            for s, ti, to in zip(x["source_ids"], x["target_in"], y, strict=True):
                source.append([int(v) for v in s if v])
                target_in.append([int(v) for v in ti if v])
                target_out.append([int(v) for v in to if v])
        arrays[f"{split}_source"] = _padded(source)
        arrays[f"{split}_target_in"] = _padded(target_in)
        arrays[f"{split}_target_out"] = _padded(target_out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "data.npz", **arrays)
    info = {
        "model": "seq2seq",
        "preset": PRESET,
        "config": config,
        "assets": data.assets,
        "model_config": recipe.model_config(config, data.assets),
        "train_batches": data.batches_per_epoch(),
    }
    (out / "run.json").write_text(json.dumps(info))
    print({k: v.shape for k, v in arrays.items()})


def train(
    data: Path,
    out: Path,
    seed: int,
    epochs: int | None,
    limit: int | None = None,
    budget: float | None = None,
    overrides: dict | None = None,
) -> None:
    """`model.fit` of the preset on the prepared arrays; the best epoch's weights to `out`.
    With `budget` (seconds), training stops after the first epoch that ends past it (the
    device's commands are time-limited), and the summary says how many epochs ran."""
    import keras

    from training import device_route, provenance
    from training.tasks.sequence_objective import compile_sequence_model  # no TensorFlow
    from zoo import registry

    keras.utils.set_random_seed(seed)
    info = json.loads((data / "run.json").read_text())
    config, arrays = {**info["config"], **(overrides or {})}, np.load(data / "data.npz")
    epochs = int(epochs or config["epochs"])
    batch = int(config["batch_size"])

    def split(name: str):
        rows = slice(0, limit)  # a smoke test's subset
        x = {
            "source_ids": arrays[f"{name}_source"][rows],
            "target_in": arrays[f"{name}_target_in"][rows],
        }
        y = arrays[f"{name}_target_out"][rows]
        return x, y, (y > 0).astype("float32")

    train_x, train_y, train_w = split("train")
    val = split("val")
    steps = math.ceil(len(train_y) / batch)
    model = registry.get("seq2seq").builder(info["model_config"])
    compile_sequence_model(model, {**config, "epochs": epochs}, steps, jit_compile="auto")
    out.mkdir(parents=True, exist_ok=True)
    best = out / "best.weights.h5"
    start = time.perf_counter()
    history = model.fit(
        train_x,
        train_y,
        sample_weight=train_w,
        batch_size=batch,
        epochs=epochs,
        shuffle=True,
        validation_data=val,
        callbacks=[
            keras.callbacks.ModelCheckpoint(
                best, monitor="val_loss", save_best_only=True, save_weights_only=True
            ),
            device_route.TimeBudget(budget, start),
        ],
        verbose=2,
    )
    seconds = time.perf_counter() - start
    device_route.save_weights(model, out, "last")
    model.load_weights(best)
    device_route.save_weights(model, out, "best")
    best.unlink()
    rows = device_route.history_rows(history.history, monitor="val_loss")
    summary = {
        "seed": seed,
        "epochs": len(rows),
        "epochs_asked": epochs,
        "overrides": {**(overrides or {}), "epochs": epochs},
        "train_seconds": seconds,
        "environment": provenance.training_environment(model),  # as JAX reports it
        "history": rows,
    }
    device_route.write_summary(out, summary)


def main() -> None:
    from training import device_route

    parser, steps = device_route.argument_parser(__doc__.splitlines()[0])
    steps["train"].add_argument("--limit", type=int, default=None, help="N pairs (a test)")
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(args.data_dir, args.out)
    elif args.step == "train":
        from tfzoo.cli import parse_overrides

        overrides = parse_overrides(args.set)
        train(args.data, args.out, args.seed, args.epochs, args.limit, args.budget, overrides)
    else:
        device_route.import_run(
            "seq2seq", "device_seq2seq.py", args.data, args.weights, args.to,
            data_dir="../shared/data", best=True,
        )  # fmt: skip


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
