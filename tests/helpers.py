"""Test helpers shared by several test modules (not fixtures)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def small_image_folder(
    source: Path,
    target: Path,
    per_class: int,
    splits=("train", "test"),
    classes: list[str] | None = None,
) -> Path:
    """A split/class/image folder of symlinks to the first `per_class` images of each class."""
    for split in splits:
        for class_dir in sorted((source / split).iterdir()):
            if classes and class_dir.name not in classes:
                continue
            out = target / split / class_dir.name
            out.mkdir(parents=True, exist_ok=True)
            for image in sorted(class_dir.iterdir())[:per_class]:
                (out / image.name).symlink_to(image.resolve())
    return target


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for child processes: quiet TF, repo on the path."""
    env = dict(os.environ)
    env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)}, **extra)
    return env


def zoo(
    *args: str, timeout: float = 600, check: bool = True, **env: str
) -> subprocess.CompletedProcess:
    """Run the `zoo` CLI in a subprocess and return the completed process."""
    proc = subprocess.run(
        [sys.executable, "-m", "tfzoo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(**env),
        cwd=REPO_ROOT,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"zoo {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc
