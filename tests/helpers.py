"""Test helpers shared by several test modules (not fixtures)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from training.data.image_folder import linked_subset

REPO_ROOT = Path(__file__).resolve().parents[1]


#: a split/class/image folder of symlinks to the first images of each class
small_image_folder = linked_subset


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
