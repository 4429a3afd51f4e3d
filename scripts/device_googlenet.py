"""Train GoogLeNet's `imagenette` preset on a lent GPU under JAX, and bring the run back.

The device machine has JAX but no TensorFlow, so `zoo train` (tf.data, tf.distribute)
cannot run there. The model code is backend-neutral (`zoo/`), so the three steps are
(`training.device_route`):

    prepare  (here, TensorFlow)  Imagenette decoded by the recipe's own `decode_image`:
             training images at `image_size` (the whole image resized to a square; the
             recipe decodes at image_size / eval_crop_fraction, and its random crops take
             the same fractions of either), val images as evaluation sees them (decoded at
             image_size / eval_crop_fraction, central crop); re-encoded as WebP
             (`<dir>/data.npz`, `<dir>/run.json`), since 64 MiB travel to the device
             (the JPEG folders are 112 MB);
    train    (device, KERAS_BACKEND=jax)  the preset's model (mixed bfloat16), loss, optimizer
             and schedule (`training.tasks.classification_objective`) with `model.fit`;
             the crops and flips run on the accelerator inside the compiled step
             (`training.tasks.random_resized_crop`). The epoch count fits the time budget:
             after two epochs at `--epochs`, a slower machine restarts from scratch at the
             count that fits (the cosine schedule needs it in advance). The last epoch's
             weights are written every `--save-every` epochs and at the end
             (`<out>/last-K.npz`), the history to `<out>/history.json`;
    import   (here)  a run directory that `zoo evaluate` / `zoo export` / `zoo publish`
             take like any other: `zoo publish` measures val top-1 on the real JPEGs with
             the TensorFlow pipeline, not on the device's WebP copies.

Differences from `zoo train`: batches are full (the 61 images past the last whole batch of
each shuffled epoch wait for the next), training images are lossy WebP copies (quality 75:
mean absolute error about 3 of 255), the per-epoch val figures are on WebP copies too, and
the random streams are JAX's.

    python scripts/device_googlenet.py prepare --data-dir ../shared/data/imagenette \
        --out .device_data --set image_size=160
    KERAS_BACKEND=jax python scripts/device_googlenet.py train --data .device_data \
        --out $OUT --budget 420 --epochs 100
    python scripts/device_googlenet.py import --data .device_data --weights DIR --to runs/NAME
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

PRESET = "imagenette"
FAMILY = "googlenet"
#: WebP qualities: training images are cropped and resized again, so they take the
#: smaller copies; val images are what the per-epoch figures are measured on
TRAIN_QUALITY, VAL_QUALITY = 75, 80


def _encode(images, quality: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images -> (all WebP bytes concatenated, [n + 1] offsets)."""
    from PIL import Image

    blobs = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "WEBP", quality=quality)
        blobs.append(np.frombuffer(buffer.getvalue(), np.uint8))
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    return np.concatenate(blobs), offsets


def prepare(data_dir: str, out: Path, overrides: dict, limit: int | None = None) -> None:
    """The recipe's decoded images, as WebP, and its labels and class names."""
    import tensorflow as tf

    from training.data import image_folder
    from training.data.images import decode_image
    from training.recipe import get_recipe
    from training.tasks.image_classification import center_crop, decode_size
    from zoo import registry

    config = {**registry.get(FAMILY).config(PRESET), **overrides}
    recipe = get_recipe(FAMILY)
    splits = image_folder.image_folder_splits(data_dir)
    class_names = recipe.display_names(splits["train"].class_names)
    size, decoded = int(config["image_size"]), decode_size(config)
    arrays = {}
    for split, quality in (("train", TRAIN_QUALITY), ("val", VAL_QUALITY)):
        files = splits[split]
        step = max(1, len(files) // limit) if limit else 1  # a smoke test's subset
        rows = list(range(0, len(files), step))[:limit]

        def image(path: str, split=split):
            if split == "train":
                return decode_image(tf.io.read_file(path), size).numpy()
            return center_crop(decode_image(tf.io.read_file(path), decoded), size).numpy()

        images = [image(files.paths[i]) for i in rows]
        arrays[f"{split}_webp"], arrays[f"{split}_offsets"] = _encode(images, quality)
        arrays[f"{split}_labels"] = np.asarray([files.labels[i] for i in rows], "int32")
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "data.npz", **arrays)
    assets = {"class_names": class_names}
    info = {
        "model": FAMILY,
        "preset": PRESET,
        "config": config,
        "prepare_overrides": overrides,
        "assets": assets,
        "model_config": recipe.model_config(config, assets),
    }
    (out / "run.json").write_text(json.dumps(info))
    print({k: v.shape for k, v in arrays.items()}, f"{(out / 'data.npz').stat().st_size:,} B")


def _decode_chunk(args) -> np.ndarray:
    from PIL import Image

    blob, offsets = args
    return np.stack(
        [
            np.asarray(Image.open(io.BytesIO(blob[a:b].tobytes())).convert("RGB"))
            for a, b in zip(offsets[:-1], offsets[1:], strict=True)
        ]
    )


def decode_webp(blob: np.ndarray, offsets: np.ndarray, workers: int) -> np.ndarray:
    """uint8 images [n, h, w, 3] from `_encode`'s bytes, in `workers` processes."""
    bounds = np.linspace(0, len(offsets) - 1, workers + 1).astype(int)
    chunks = [
        (blob[offsets[a] : offsets[b]], offsets[a : b + 1] - offsets[a])
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        if b > a
    ]
    with ProcessPoolExecutor(len(chunks)) as pool:
        return np.concatenate(list(pool.map(_decode_chunk, chunks)))


def train(
    data: Path,
    out: Path,
    seed: int,
    epochs: int | None,
    budget: float | None,
    overrides: dict,
    save_every: int = 5,
) -> None:
    """`model.fit` of the preset on the prepared images; the last epoch's weights to `out`."""
    start = time.perf_counter()
    info = json.loads((data / "run.json").read_text())
    config = {**info["config"], **overrides}
    asked = int(epochs or config["epochs"])
    batch, size = int(config["batch_size"]), int(config["image_size"])
    with np.load(data / "data.npz") as arrays:  # before JAX starts its threads: fork is safe
        workers = min(16, os.cpu_count() or 1)
        train_x = decode_webp(arrays["train_webp"], arrays["train_offsets"], workers)
        val_x = decode_webp(arrays["val_webp"], arrays["val_offsets"], workers)
        train_y, val_y = arrays["train_labels"], arrays["val_labels"]
    print(f"decoded {train_x.shape} {val_x.shape} in {time.perf_counter() - start:.0f} s")

    import keras

    from training import device_route, provenance
    from training.tasks.classification_objective import compile_classifier, sgd_or_adamw
    from training.tasks.random_resized_crop import RandomResizedCropFlip
    from zoo import registry
    from zoo.googlenet.model import AUXILIARY_FEATURES
    from zoo.tasks.image_classifier import PROBABILITIES

    keras.utils.set_random_seed(seed)
    outputs = [PROBABILITIES, *(AUXILIARY_FEATURES if config["aux_heads"] else [])]

    class Batches(keras.utils.PyDataset):
        """Whole batches of a fresh shuffle each epoch, a label per head."""

        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(train_y))

        def __len__(self):
            return len(train_y) // batch

        def __getitem__(self, i):
            rows = np.sort(self.order[i * batch : (i + 1) * batch])
            return train_x[rows], {name: train_y[rows] for name in outputs}

        def on_epoch_end(self):
            self.order = self.rng.permutation(len(train_y))

    # the whole val set in equal batches (one compiled evaluation step) when a divisor of its
    # size is at least a training batch; else training batches and a ragged last one
    divisor = max(d for d in range(1, 513) if len(val_y) % d == 0)
    val_batch = divisor if divisor >= batch else batch
    val = (val_x, {name: val_y for name in outputs})

    policy = config.get("mixed_precision")
    keras.config.set_dtype_policy(policy if policy not in (None, "auto") else "mixed_bfloat16")
    model = registry.get(FAMILY).builder({**info["model_config"], **overrides})
    keras.config.set_dtype_policy("float32")
    initial = model.get_weights()
    train_batches = Batches()

    def trainer(total_epochs: int) -> keras.Model:
        crop = RandomResizedCropFlip(
            size,
            config["random_resized_crop_area"],
            config["random_resized_crop_aspect"],
            flip=bool(config["horizontal_flip"]),
            seed=seed,
        )
        inputs = keras.Input((size, size, 3), dtype="uint8")
        wrapped = keras.Model(inputs, model(crop(inputs)))
        schedule = {**config, "epochs": total_epochs}
        optimizer = sgd_or_adamw(schedule, len(train_batches))
        compile_classifier(wrapped, schedule, optimizer, outputs, jit_compile=True)
        return wrapped

    class SaveLast(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if (epoch + 1) % save_every == 0:
                device_route.save_weights(model, out, "last")

    def fit(wrapped, first: int, last: int) -> dict:
        history = wrapped.fit(
            train_batches,
            epochs=last,
            initial_epoch=first,
            validation_data=val,
            validation_batch_size=val_batch,
            callbacks=[SaveLast(), timer, device_route.TimeBudget(budget, start)],
            verbose=2,
        )
        return history.history

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.began = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.began)

    timer = EpochTimer()
    fit_start = time.perf_counter()
    wrapped = trainer(asked)
    history = fit(wrapped, 0, min(2, asked))
    total, restarted = asked, False
    if asked > 2 and budget:
        per_epoch = timer.seconds[-1]
        left = budget - (time.perf_counter() - start)
        if per_epoch * (asked - 2) > left:  # restart at the count that fits, compile included
            compile_seconds = timer.seconds[0] - per_epoch
            total = max(2, int((left - compile_seconds) / per_epoch))
            print(f"{per_epoch:.1f} s per epoch: {asked} epochs do not fit; {total} from scratch")
            model.set_weights(initial)
            train_batches.rng = np.random.default_rng(seed + 1)
            wrapped, restarted = trainer(total), True
            timer.seconds.clear()
            history = fit(wrapped, 0, total)
        else:
            more = fit(wrapped, 2, asked)
            history = {k: history[k] + more[k] for k in history}
    seconds = time.perf_counter() - fit_start
    device_route.save_weights(model, out, "last")
    rows = device_route.history_rows(history)
    for row, epoch_seconds in zip(rows, timer.seconds, strict=True):
        row["seconds"] = epoch_seconds  # the first includes compiling
    summary = {
        "seed": seed,
        "epochs": len(rows),
        "epochs_asked": asked,
        "restarted": restarted,
        "overrides": {**info["prepare_overrides"], **overrides, "epochs": total},
        "train_seconds": seconds,
        "environment": provenance.training_environment(model),  # as JAX reports it
        # training images per second of an epoch, its val pass included
        "images_per_second": len(train_batches) * batch / float(np.median(timer.seconds)),
        "history": rows,
    }
    device_route.write_summary(out, summary)


def main() -> None:
    from training import device_route

    parser, steps = device_route.argument_parser(__doc__.splitlines()[0])
    steps["prepare"].add_argument("--limit", type=int, default=None, help="N images (a test)")
    steps["prepare"].add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    steps["train"].add_argument("--save-every", type=int, default=5)
    args = parser.parse_args()
    from tfzoo.cli import parse_overrides

    if args.step == "prepare":
        prepare(args.data_dir, args.out, parse_overrides(args.set), args.limit)
    elif args.step == "train":
        overrides = parse_overrides(args.set)
        train(args.data, args.out, args.seed, args.epochs, args.budget, overrides, args.save_every)
    else:
        device_route.import_run(
            FAMILY, "device_googlenet.py", args.data, args.weights, args.to,
            data_dir="../shared/data/imagenette", best=False,
        )  # fmt: skip


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
