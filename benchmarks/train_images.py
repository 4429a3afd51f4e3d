"""Training throughput of an image family: the zoo's pipeline against plain `model.fit`.

Same model and preset, same batch, one process. The machines here are shared and noisy, so
the contenders are interleaved: each round trains one epoch of every contender in turn, and
the table reports the median images/s over rounds (round 1, with tracing and the tf.data
cache fill, is excluded).

Contenders:
- baseline: `model.fit(x, y)` on the same images decoded into memory (float arrays at the
  model's input size), compiled as the recipe compiles it, no augmentation (less work than
  the recipe: a floor for the per-step cost);
- zoo: the `zoo train` pipeline (tf.data decode -> cache -> shuffle -> batch -> the preset's
  augmentation -> prefetch), with `steps_per_execution` 1 and 16, and optionally XLA.

    python -m benchmarks.train_images --model cifar_convnet --preset paper \
        --data-dir ../shared/data/cifar10 --images 5000 --rounds 4
    python -m benchmarks.train_images --model googlenet --preset imagenette \
        --data-dir ../shared/data/imagenette --images 640 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from training.data.image_folder import linked_subset  # noqa: E402
from training.recipe import get_recipe  # noqa: E402
from zoo import registry  # noqa: E402

BASELINE = "model.fit on decoded arrays, no augmentation"


def _model(name: str, config: dict, jit_compile, steps_per_execution: int = 1):
    recipe = get_recipe(name)
    model = recipe.build_model(config, {})
    recipe.compile(model, config, None, jit_compile=jit_compile)
    model.steps_per_execution = steps_per_execution
    return model


def contenders(name: str, preset: str, folder: Path, batch: int, xla: bool) -> dict:
    """contender -> (images per epoch, function training one epoch)."""
    recipe = get_recipe(name)
    config = registry.get(name).config(preset)
    data = recipe.load_data(config, str(folder), batch)
    evaluation = recipe.load_data(config, str(folder), batch, training=False)
    # the same images as the pipeline's, decoded and center-cropped to the input size
    pairs = [(x, y) for x, y in evaluation.val.unbatch().as_numpy_iterator()]
    x = np.stack([p[0] for p in pairs]).astype("float32")
    y = [p[1] for p in pairs]
    y = {k: np.array([v[k] for v in y]) for k in y[0]} if isinstance(y[0], dict) else np.array(y)
    baseline = _model(name, config, "auto")
    runs = {BASELINE: lambda: baseline.fit(x, y, batch_size=batch, epochs=1, verbose=0)}
    variants = [("zoo pipeline", "auto", 1), ("zoo pipeline, 16 steps/execution", "auto", 16)]
    if xla:
        variants.append(("zoo pipeline, 16 steps/execution, XLA", True, 16))
    for label, jit, spe in variants:
        model = _model(name, config, jit, spe)
        runs[label] = lambda m=model: m.fit(data.train, epochs=1, verbose=0, shuffle=False)
    return {label: (len(x), fn) for label, fn in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cifar_convnet")
    parser.add_argument("--preset", default=None)
    parser.add_argument("--data-dir", default="../shared/data/cifar10")
    parser.add_argument("--images", type=int, default=5000, help="training images")
    parser.add_argument("--rounds", type=int, default=4, help="epochs per contender")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the preset's")
    parser.add_argument("--xla", action="store_true", help="also time XLA (slow on CPU)")
    args = parser.parse_args()
    spec = registry.get(args.model)
    preset = args.preset or spec.default_preset
    batch = args.batch_size or int(spec.config(preset).get("batch_size", 32))
    classes = int(spec.config(preset)["num_classes"])
    with tempfile.TemporaryDirectory() as tmp:
        folder = (
            linked_subset(Path(args.data_dir), Path(tmp), args.images // classes, ("train", "val"))
            if (Path(args.data_dir) / "val").is_dir()
            else linked_subset(
                Path(args.data_dir), Path(tmp), args.images // classes, ("train", "test")
            )
        )
        runs = contenders(args.model, preset, folder, batch, args.xla)
        rates = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, (images, fn) in runs.items():
                start = time.perf_counter()
                fn()
                rates[name].append(images / (time.perf_counter() - start))
    medians = {name: statistics.median(r[1:] or r) for name, r in rates.items()}
    base = medians[BASELINE]
    print(f"\n{args.model} ({preset} preset), {args.images} images, batch {batch}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"median of rounds 2..{args.rounds}")  # fmt: skip
    print(f"{'pipeline':50s} {'images/s':>9s} {'vs fit':>7s}   per round")
    for name, rate in medians.items():
        rounds = " ".join(f"{r:.1f}" for r in rates[name])
        print(f"{name:50s} {rate:9.1f} {rate / base:6.2f}x   {rounds}")


if __name__ == "__main__":
    main()
