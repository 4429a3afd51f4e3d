"""Every family under `KERAS_BACKEND=jax` (the lent GPUs run JAX): with the weights saved
under TensorFlow, each family's `tiny` example gives the same outputs there, and one SGD step
trains on both backends; and a whole model saved as `.keras` under TensorFlow (GoogLeNet's
LRN variant) is rebuilt from its config under JAX and answers alike in one jitted forward
pass. The JAX side runs in one subprocess (`tests.zoo.backend_outputs`) for both checks."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import FAST_XLA, REPO_ROOT, subprocess_env
from tests.zoo.backend_outputs import forward_and_step
from zoo import registry


@pytest.fixture(scope="module")
def both_backends(tmp_path_factory):
    """(what the JAX subprocess wrote, the TensorFlow side's family answers, the LRN
    GoogLeNet's TensorFlow probabilities); the TensorFlow side runs meanwhile."""
    pytest.importorskip("jax")
    from zoo.googlenet import SPEC
    from zoo.tasks.image_classifier import PROBABILITIES

    tmp_path = tmp_path_factory.mktemp("backends")
    models = {}
    for name in registry.names():
        models[name] = registry.get(name).example("tiny")
        models[name][0].save_weights(tmp_path / f"{name}.weights.h5")
    lrn = SPEC.build("tiny", normalization="lrn")
    images = SPEC.example_inputs(SPEC.config("tiny"), np.random.default_rng(3))
    np.save(tmp_path / "googlenet_lrn.inputs.npy", images)
    lrn.save(tmp_path / "googlenet_lrn.keras")
    out = tmp_path / "jax.npz"
    jax_side = subprocess.Popen(
        [sys.executable, "-m", "tests.zoo.backend_outputs", str(tmp_path), str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        # compile-time, not run-time: XLA's CPU optimisations cost more than they save on
        # these one-off calls (a build compiles one initializer per kernel shape: ~70 for
        # GoogLeNet, 0.5 s each on 2 cores with them, so its build takes 45 s; 8 s without)
        env=subprocess_env(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", XLA_FLAGS=FAST_XLA),
    )
    try:  # the TensorFlow side meanwhile
        expected = {name: forward_and_step(*models[name]) for name in models}
        lrn_expected = np.asarray(lrn(images, training=False)[PROBABILITIES])
        _, stderr = jax_side.communicate(timeout=600)
    finally:
        jax_side.kill()
    assert jax_side.returncode == 0, stderr[-3000:]
    got = dict(np.load(out))
    assert str(got["backend"]) == "jax"
    return got, expected, lrn_expected


@pytest.mark.slow
def test_every_family_runs_and_trains_under_jax(both_backends):
    """Same weights, same outputs on JAX as on TensorFlow; one SGD step trains on both."""
    got, expected, _ = both_backends
    for name, (outputs, loss, change) in expected.items():
        for i, value in enumerate(outputs):
            np.testing.assert_allclose(got[f"{name}/out{i}"], value, rtol=1e-4, atol=1e-4)
        # the step itself is not compared: dropout draws differ between backends
        assert np.isfinite(got[f"{name}/loss"]) and got[f"{name}/change"] > 0, name
        assert np.isfinite(loss) and change > 0, name


@pytest.mark.slow
def test_googlenet_lrn_keras_file_under_jax_matches_tensorflow(both_backends):
    """GoogLeNet's LRN variant (the contract above runs the BN `tiny` preset), saved as a
    `.keras` file under TensorFlow, rebuilt from its config under KERAS_BACKEND=jax: its
    LRN layer is the zoo's, and one jitted forward pass gives the same probabilities."""
    got, _, expected = both_backends
    assert "backbone/norm1: LocalResponseNormalization" in got["googlenet_lrn/keras_layers"]
    assert got["googlenet_lrn/keras"].tolist() == ["aux_4a", "aux_4d", "probabilities"]
    probabilities = got["googlenet_lrn/keras/probabilities"]
    np.testing.assert_allclose(probabilities, expected, rtol=1e-4, atol=1e-5)
