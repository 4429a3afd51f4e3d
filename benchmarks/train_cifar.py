"""Training throughput: the zoo's pipeline against plain `model.fit` on numpy arrays.

Same `paper` convnet, batch 32, one process. The machines here are shared and noisy, so the
contenders are interleaved: each round trains one epoch of every contender in turn, and
the table reports the median images/s over rounds (round 1, with tracing and the tf.data
cache fill, is excluded).

Contenders:
- baseline: `model.fit(x, y)` on in-memory float arrays, Keras defaults, no augmentation
  (less work than the recipe: a floor for the per-step cost);
- same-work baseline: `model.fit(x, y)` on the same arrays with the example's shift/flip
  augmentation as preprocessing layers at the front of the model (the Keras 3 guides' way
  to augment in-memory arrays; `ImageDataGenerator` is gone from Keras 3);
- zoo: the `zoo train` pipeline (tf.data decode -> cache -> shuffle -> batch -> shift/flip
  augmentation -> prefetch), with `steps_per_execution` 1 and 16, and optionally XLA.

    python -m benchmarks.train_cifar --data-dir ../shared/data/cifar10 --images 5000 --rounds 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tests.helpers import small_image_folder  # noqa: E402
from training.data.image_folder import decoded_dataset, image_folder_splits  # noqa: E402
from training.recipes.cifar_convnet import RECIPE  # noqa: E402
from zoo import registry  # noqa: E402


def _model(jit_compile, steps_per_execution: int = 1, augment_layers: bool = False):
    spec = registry.get("cifar_convnet")
    model = spec.build("paper")
    if augment_layers:
        config = spec.config("paper")
        shift = float(config["shift"])
        model = keras.Sequential(
            [
                keras.Input(model.input_shape[1:]),
                keras.layers.RandomTranslation(shift, shift, fill_mode="nearest"),
                keras.layers.RandomFlip("horizontal"),
                model,
            ]
        )
    RECIPE.compile(model, spec.config("paper"), None, jit_compile=jit_compile)
    model.steps_per_execution = steps_per_execution
    return model


BASELINE = "model.fit on numpy arrays, no augmentation"
SAME_WORK = "model.fit on numpy arrays, augmentation layers"


def contenders(folder: Path, batch: int, xla: bool) -> dict:
    """name -> (images per epoch, function training one epoch)."""
    files = image_folder_splits(folder)["train"]
    pairs = list(decoded_dataset(files, 32).as_numpy_iterator())
    x = np.stack([p[0] for p in pairs]).astype("float32")
    y = np.array([p[1] for p in pairs])
    spec = registry.get("cifar_convnet")
    data = RECIPE.load_data(spec.config("paper"), str(folder), batch)
    baseline = _model("auto")
    same_work = _model("auto", augment_layers=True)
    runs = {
        BASELINE: lambda: baseline.fit(x, y, batch_size=batch, epochs=1, verbose=0),
        SAME_WORK: lambda: same_work.fit(x, y, batch_size=batch, epochs=1, verbose=0),
    }
    variants = [("zoo pipeline", "auto", 1), ("zoo pipeline, 16 steps/execution", "auto", 16)]
    if xla:
        variants.append(("zoo pipeline, 16 steps/execution, XLA", True, 16))
    for name, jit, spe in variants:
        model = _model(jit, spe)
        runs[name] = lambda m=model: m.fit(data.train, epochs=1, verbose=0, shuffle=False)
    return {name: (len(x), fn) for name, fn in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data/cifar10")
    parser.add_argument("--images", type=int, default=5000, help="training images")
    parser.add_argument("--rounds", type=int, default=4, help="epochs per contender")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--xla", action="store_true", help="also time XLA (slow on CPU)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = small_image_folder(Path(args.data_dir), Path(tmp), args.images // 10, ("train",))
        runs = contenders(folder, args.batch_size, args.xla)
        rates = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, (images, fn) in runs.items():
                start = time.perf_counter()
                fn()
                rates[name].append(images / (time.perf_counter() - start))
    medians = {name: statistics.median(r[1:] or r) for name, r in rates.items()}
    base, same = medians[BASELINE], medians[SAME_WORK]
    print(f"\nCIFAR-10 convnet (paper preset), {args.images} images, batch {args.batch_size}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"median of rounds 2..{args.rounds}")  # fmt: skip
    print(f"{'pipeline':50s} {'images/s':>9s} {'vs no-aug':>9s} {'vs same':>8s}   per round")
    for name, rate in medians.items():
        rounds = " ".join(f"{r:.0f}" for r in rates[name])
        print(f"{name:50s} {rate:9.1f} {rate / base:8.2f}x {rate / same:7.2f}x   {rounds}")


if __name__ == "__main__":
    main()
