"""The tiny run of each family on both backends, wall time side by side.

For every family the prepared-data tests know (`tests/training/test_prepared_training.py`
`CASES`: the same tiny data and settings), in one invocation:
- TensorFlow: `zoo train FAMILY --preset tiny --data-dir D` (tf.data over the raw files);
- JAX: `zoo prepare FAMILY --data-dir D` then `zoo train FAMILY --data P`, both in a
  process where importing TensorFlow raises.
Each command is a fresh process, so the times include Python and framework start-up,
tracing/compilation and the final evaluation, as a user sees them. The commands of one
family run back to back, `--rounds` times, and the table shows the median.

    python -m benchmarks.backends --rounds 1
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.conftest import shared_data_dir
from tests.helpers import REPO_ROOT, subprocess_env
from tests.training.test_prepared_training import CASES


def _timed(args: list[str], **env: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=REPO_ROOT,
        env=subprocess_env(**env), timeout=1800,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return seconds


def _sets(pairs) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


def measure(family: str, root: Path) -> tuple[float, float, float]:
    """(TensorFlow train, JAX prepare, JAX train) seconds of one tiny run of `family`."""
    case = CASES[family]
    data_dir = case.data(root, shared_data_dir())
    common = ["--preset", "tiny", "--verbose", "0"]
    tf_seconds = _timed(
        ["-m", "tfzoo", "train", family, *common, "--data-dir", str(data_dir),
         "--model-dir", str(root / "tf"), *_sets(case.prepare + case.train)],
        KERAS_BACKEND="tensorflow",
    )  # fmt: skip
    no_tf = ["-m", "tests.no_tensorflow"]
    prepare_seconds = _timed(
        [*no_tf, "prepare", family, "--preset", "tiny", "--data-dir", str(data_dir),
         "--out", str(root / "prepared"), *_sets(case.prepare)],
        KERAS_BACKEND="jax",
    )  # fmt: skip
    jax_seconds = _timed(
        [*no_tf, "train", family, "--verbose", "0", "--data", str(root / "prepared"),
         "--model-dir", str(root / "jax"), *_sets(case.train)],
        KERAS_BACKEND="jax",
    )  # fmt: skip
    return tf_seconds, prepare_seconds, jax_seconds


def main(argv: list[str] | None = None) -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--families", nargs="*", default=sorted(CASES))
    args = parser.parse_args(argv)
    print(f"{'family':<14} {'TF train':>9} {'JAX prepare':>12} {'JAX train':>10} {'JAX/TF':>7}")
    for family in args.families:
        rounds = []
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory() as tmp:
                rounds.append(measure(family, Path(tmp)))
        tf_s, prep_s, jax_s = (statistics.median(r[i] for r in rounds) for i in range(3))
        print(
            f"{family:<14} {tf_s:>8.1f}s {prep_s:>11.1f}s {jax_s:>9.1f}s {jax_s / tf_s:>6.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
