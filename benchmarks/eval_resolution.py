"""Held-out accuracy of a trained image-classifier run at other test resolutions.

A convnet trained on random-resized crops sees objects larger in training than in the
central test crop (Touvron et al. 2019, "Fixing the train-test resolution discrepancy"), so
testing the same weights at a larger side can gain accuracy. The table gives top-1 with and
without horizontal-flip averaging for each `SIDE/CROP_FRACTION` (images decoded at
SIDE / CROP_FRACTION, the central SIDE crop kept), against the run's own setting (the first
row, the baseline) in the same invocation. Sides must keep the auxiliary heads' input size
(GoogLeNet: 128-175 px) because the run's checkpoint is loaded whole.

    python -m benchmarks.eval_resolution --model-dir runs/googlenet_imagenette \
        --data-dir ../shared/data/imagenette 144/0.875 160/1.0
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from training import checkpoints  # noqa: E402
from training.recipe import get_recipe  # noqa: E402
from training.tasks.image_classification import decode_size  # noqa: E402
from zoo.tasks.image_classifier import PROBABILITIES, inference_model  # noqa: E402


def accuracy(model_dir: str, data_dir: str, side: int, fraction: float, batch: int) -> dict:
    """Top-1 (%) of the run's exported checkpoint (its best, else its last) on the val split
    at one test resolution, alone and averaged with the flipped image; seconds taken."""
    info = checkpoints.read_json(f"{model_dir}/run.json")
    recipe = get_recipe(info["model"])
    config = dict(info["config"], image_size=side, eval_crop_fraction=fraction)
    model = recipe.build_model(config, info["assets"])
    model.load_weights(checkpoints.exported_checkpoint(f"{model_dir}/checkpoints"))
    classify = inference_model(model)
    data = recipe.load_data(config, data_dir, batch, training=False, assets=info["assets"])
    start, right, right_flip, count = time.perf_counter(), 0, 0, 0
    for images, labels in data.val:
        labels = (labels[PROBABILITIES] if isinstance(labels, dict) else labels).numpy()
        plain = np.asarray(classify(images, training=False))
        flipped = np.asarray(classify(tf.reverse(images, axis=[2]), training=False))
        right += int((plain.argmax(-1) == labels).sum())
        right_flip += int(((plain + flipped).argmax(-1) == labels).sum())
        count += len(labels)
    return {
        "decode": decode_size(config),
        "top1": 100 * right / count,
        "top1_flip": 100 * right_flip / count,
        "images": count,
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    """Print the table: the run's own test resolution first, then each one asked for."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("settings", nargs="+", help="SIDE/CROP_FRACTION, e.g. 144/0.875")
    args = parser.parse_args()
    config = checkpoints.read_json(f"{args.model_dir}/run.json")["config"]
    own = (int(config["image_size"]), float(config.get("eval_crop_fraction") or 1.0))
    settings = [own] + [(int(s.split("/")[0]), float(s.split("/")[1])) for s in args.settings]
    print(f"{'side/crop':>12} {'decoded':>8} {'top-1 %':>8} {'+flip %':>8} {'vs own':>7} {'s':>5}")
    baseline = None
    for side, fraction in settings:
        row = accuracy(args.model_dir, args.data_dir, side, fraction, args.batch_size)
        baseline = baseline if baseline is not None else row["top1"]
        print(
            f"{side:>6}/{fraction:<5} {row['decode']:>8} {row['top1']:>8.2f} "
            f"{row['top1_flip']:>8.2f} {row['top1'] - baseline:>+7.2f} {row['seconds']:>5.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
