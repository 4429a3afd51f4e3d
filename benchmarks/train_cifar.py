"""Training throughput: `zoo train` (tf.data + XLA) against plain `model.fit` on numpy arrays.

Both train the same `paper` convnet, batch 32, in one process; each is timed over the
epochs after the first (tracing, compilation and the tf.data cache fill are excluded).

    python -m benchmarks.train_cifar --data-dir ../shared/data/cifar10 --images 10000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tests.helpers import small_image_folder  # noqa: E402
from training import train  # noqa: E402
from training.data.image_folder import decoded_dataset, image_folder_splits  # noqa: E402
from training.recipes.cifar_convnet import RECIPE  # noqa: E402
from zoo import registry  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.last = time.perf_counter() - self.start


def numpy_baseline(folder: Path, epochs: int, batch: int) -> float:
    """images/s of model.fit(x, y) on in-memory arrays (Keras defaults, no augmentation)."""
    files = image_folder_splits(folder)["train"]
    pairs = list(decoded_dataset(files, 32).as_numpy_iterator())
    x = np.stack([p[0] for p in pairs]).astype("float32")
    y = np.array([p[1] for p in pairs])
    spec = registry.get("cifar_convnet")
    model = spec.build("paper")
    RECIPE.compile(model, spec.config("paper"), None, jit_compile="auto")
    timer = EpochTimer()
    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, callbacks=[timer])
    return len(x) / timer.last


def zoo_train(
    folder: Path, epochs: int, batch: int, xla: bool, spe: int = 1, augment: bool = True
) -> float:
    """images/s of the zoo's pipeline (tf.data cache/shuffle/augment/prefetch), epochs > 1."""
    overrides = {} if augment else {"shift": 0.0, "horizontal_flip": False}
    with tempfile.TemporaryDirectory() as run_dir:
        metrics = train.run(
            "cifar_convnet", "paper", run_dir, str(folder), epochs=epochs, batch_size=batch,
            jit_compile=xla, verbose=0, steps_per_execution=spe, overrides=overrides,
        )  # fmt: skip
    return metrics["examples_per_sec"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data/cifar10")
    parser.add_argument("--images", type=int, default=5000, help="training images (per run)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = small_image_folder(Path(args.data_dir), Path(tmp), args.images // 10, ("train",))
        rows = [("model.fit on numpy arrays (baseline)",
                 numpy_baseline(folder, args.epochs, args.batch_size))]  # fmt: skip
        rows.append(
            ("zoo train, tf.data, no XLA", zoo_train(folder, args.epochs, args.batch_size, False))
        )
        rows.append(
            ("zoo train, tf.data + XLA", zoo_train(folder, args.epochs, args.batch_size, True))
        )
    base = rows[0][1]
    print(f"\nCIFAR-10 convnet (paper preset), {args.images} images, batch {args.batch_size}, "
          f"{os.cpu_count()} CPUs; timed over epochs 2..{args.epochs}")  # fmt: skip
    print(f"{'pipeline':46s} {'images/s':>10s} {'ratio':>7s}")
    for name, rate in rows:
        print(f"{name:46s} {rate:10.1f} {rate / base:6.2f}x")


if __name__ == "__main__":
    main()
