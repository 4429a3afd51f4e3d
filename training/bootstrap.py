"""First-run set-up for `make serve`: make sure ./models holds something real to serve.

When the models folder holds no SavedModel version yet, export the best local training run
(runs/cifar_paper, if a full run exists) or train a short CIFAR-10 convnet run on local data
and export it. Then write `models.config` (TF Serving's ModelServerConfig text format)
listing every model base path under the models folder.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from serving.layout import version_dirs, write_text_atomic

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def model_base_paths(models: Path) -> list[Path]:
    """Sub-folders of `models` that hold at least one integer version directory."""
    if not models.is_dir():
        return []
    return sorted(p for p in models.iterdir() if p.is_dir() and version_dirs(p))


def write_config(models: Path) -> Path:
    """Write models/models.config for every model base path found; returns its path."""
    entries = "".join(
        f'  config {{\n    name: "{p.name}"\n    base_path: "{p.resolve()}"\n'
        f'    model_platform: "tensorflow"\n  }}\n'
        for p in model_base_paths(models)
    )
    path = models / "models.config"
    write_text_atomic(path, f"model_config_list {{\n{entries}}}\n")
    return path


def _small_folder(source: Path, target: Path, per_class: int) -> Path:
    for class_dir in sorted((source / "train").iterdir()):
        out = target / "train" / class_dir.name
        out.mkdir(parents=True, exist_ok=True)
        for image in sorted(class_dir.iterdir())[:per_class]:
            (out / image.name).symlink_to(image.resolve())
    return target


def ensure_model(models: Path, data_dir: Path | None, runs: Path, images_per_class: int) -> None:
    """Export a CIFAR-10 convnet into `models/cifar_convnet` unless a model is already there."""
    from training import export, train

    if model_base_paths(models):
        return
    full_run = runs / "cifar_paper"
    if (full_run / "checkpoints").is_dir() and any((full_run / "checkpoints").iterdir()):
        print(f"[bootstrap] exporting the trained run {full_run}")
        export.run(full_run, models / "cifar_convnet")
        return
    cifar = data_dir / "cifar10" if data_dir else None
    if cifar is None or not cifar.is_dir():
        cifar = None
        print("[bootstrap] no local CIFAR-10 folder; trying TFDS (needs the internet)")
    print("[bootstrap] ./models is empty: training a short CIFAR-10 convnet run to serve")
    run_dir = runs / "cifar_bootstrap"
    with tempfile.TemporaryDirectory() as tmp:
        folder = _small_folder(cifar, Path(tmp), images_per_class) if cifar else None
        metrics = train.run(
            "cifar_convnet", "paper", run_dir, str(folder) if folder else None, epochs=2, verbose=2
        )
    print(f"[bootstrap] validation accuracy {metrics['accuracy']:.3f}")
    export.run(run_dir, models / "cifar_convnet")


def main(argv: list[str] | None = None) -> int:
    """Parse flags, make sure a model exists, write the config file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="models", type=Path)
    parser.add_argument("--runs", default="runs", type=Path)
    parser.add_argument("--data-dir", default="../shared/data", type=Path)
    parser.add_argument("--images-per-class", type=int, default=1000)
    args = parser.parse_args(argv)
    args.models.mkdir(parents=True, exist_ok=True)
    ensure_model(args.models, args.data_dir, args.runs, args.images_per_class)
    path = write_config(args.models)
    print(f"[bootstrap] serving {[p.name for p in model_base_paths(args.models)]} from {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
