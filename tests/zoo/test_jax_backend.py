"""Every family under `KERAS_BACKEND=jax` (the lent GPUs run JAX): with the weights saved
under TensorFlow, each family's `tiny` example gives the same outputs there, and one SGD step
trains on both backends. The JAX side runs in a subprocess (`tests.zoo.backend_outputs`)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO_ROOT, subprocess_env
from tests.zoo.backend_outputs import forward_and_step
from zoo import registry


@pytest.mark.slow
def test_every_family_runs_and_trains_under_jax(tmp_path):
    """Same weights, same outputs on JAX as on TensorFlow; one SGD step trains on both."""
    pytest.importorskip("jax")
    models = {}
    for name in registry.names():
        models[name] = registry.get(name).example("tiny")
        models[name][0].save_weights(tmp_path / f"{name}.weights.h5")
    out = tmp_path / "jax.npz"
    jax_side = subprocess.Popen(
        [sys.executable, "-m", "tests.zoo.backend_outputs", str(tmp_path), str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env=subprocess_env(
            KERAS_BACKEND="jax",
            JAX_PLATFORMS="cpu",
            # compile-time, not run-time: XLA's CPU optimisations cost more than they save on
            # these one-off calls (a build compiles one initializer per kernel shape)
            XLA_FLAGS="--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
        ),
    )
    try:  # the TensorFlow side meanwhile
        expected = {name: forward_and_step(*models[name]) for name in models}
        _, stderr = jax_side.communicate(timeout=600)
    finally:
        jax_side.kill()
    assert jax_side.returncode == 0, stderr[-3000:]
    got = np.load(out)
    assert str(got["backend"]) == "jax"
    for name, (outputs, loss, change) in expected.items():
        for i, value in enumerate(outputs):
            np.testing.assert_allclose(got[f"{name}/out{i}"], value, rtol=1e-4, atol=1e-4)
        # the step itself is not compared: dropout draws differ between backends
        assert np.isfinite(got[f"{name}/loss"]) and got[f"{name}/change"] > 0, name
        assert np.isfinite(loss) and change > 0, name
