"""One training path on every backend: `zoo prepare` writes a family's arrays and
`zoo train --data` trains on them under JAX in a process where importing TensorFlow raises;
`zoo export` (TensorFlow) exports that run, and the export passes the harness's end-to-end
steps (fresh-process load, gRPC and REST) like a TensorFlow-trained one. A resumed JAX run
continues where it stopped, and two JAX devices split the global batch.

A family joins by adding a `Case` to `CASES`: its tiny data and a request for its signature.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import shared_data_dir
from tests.harness import FamilyEndToEnd
from tests.helpers import REPO_ROOT, subprocess_env
from tests.training.test_gpt import SONNET


@dataclass(frozen=True)
class Case:
    """A family's tiny prepared-data run: `data(tmp, shared)` -> its --data-dir, the
    preset's `overrides` for `prepare` and `train`, and a request for `signature`."""

    data: Callable[[Path, Path], Path]
    request: dict[str, Any]
    prepare: tuple[str, ...] = ()
    train: tuple[str, ...] = ()
    signature: str = "serving_default"
    atol: float = 1e-5


def need(path: Path) -> Path:
    """`path` in the shared data, or the test skips (the data is absent on this machine)."""
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    return path


def _sonnet(tmp: Path, shared: Path) -> Path:
    path = tmp / "sonnet.txt"
    path.write_text(SONNET)
    return path


CASES: dict[str, Case] = {
    "gpt": Case(
        data=_sonnet,
        request={"prompt": np.array(["Shall I compare", "", "So long"], dtype=object)},
        train=("max_iters=200", "epochs=2", "eval_iters=2", "learning_rate=0.01"),
    ),
}


def zoo_without_tensorflow(*args: str, env: dict[str, str] | None = None, timeout=600):
    """`zoo ARGS` under JAX in a process where `import tensorflow` raises."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.no_tensorflow", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(KERAS_BACKEND="jax", **(env or {})),
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, f"zoo {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _sets(pairs: tuple[str, ...]) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


def prepare(family: str, tmp: Path, shared: Path) -> Path:
    """`zoo prepare FAMILY --preset tiny` without TensorFlow; the prepared folder."""
    case = CASES[family]
    out = tmp / "prepared"
    data_dir = case.data(tmp, shared)
    zoo_without_tensorflow(
        "prepare",
        family,
        "--preset",
        "tiny",
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
        *_sets(case.prepare),
    )
    return out


def train_on(family: str, data: Path, run: Path, *extra: str, env=None) -> dict:
    """`zoo train FAMILY --data DATA` without TensorFlow; its metrics.json."""
    zoo_without_tensorflow(
        "train",
        family,
        "--data",
        str(data),
        "--model-dir",
        str(run),
        "--verbose",
        "0",
        *_sets(CASES[family].train),
        *extra,
        env=env,
    )
    return json.loads((run / "metrics.json").read_text())


def _family_class(family: str) -> type:
    case = CASES[family]

    class TrainedUnderJax(FamilyEndToEnd):
        signature = case.signature
        atol = case.atol

        @pytest.fixture(scope="class")
        def tiny_run(self, tmp_path_factory):
            tmp = tmp_path_factory.mktemp(f"{family}-jax")
            data = prepare(family, tmp, shared_data_dir())
            return tmp / "run", train_on(family, data, tmp / "run")

        @pytest.fixture(scope="class")
        def request_inputs(self):
            return case.request

        def test_run_records_jax_on_the_cpu(self, tiny_run):
            run_dir, metrics = tiny_run
            assert metrics["backend"] == "jax" and metrics["strategy"] == "OneDevice"
            info = json.loads((run_dir / "run.json").read_text())
            (segment,) = info["training"]["segments"]
            assert segment["environment"]["backend"] == "jax"
            assert segment["environment"]["devices"] == [{"count": 1, "kind": "CPU", "name": "cpu"}]
            assert "tensorflow" not in segment["environment"]["framework_versions"]
            assert segment["command"].startswith(f"zoo train {family} --data ")
            assert info["prepared_data"].startswith(f"zoo prepare {family} --preset tiny")

    TrainedUnderJax.family = family
    TrainedUnderJax.__name__ = TrainedUnderJax.__qualname__ = f"Test{family.title()}UnderJax"
    return TrainedUnderJax


for _family in CASES:
    globals()[f"Test{_family.title()}UnderJax"] = _family_class(_family)
