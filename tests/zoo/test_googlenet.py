"""GoogLeNet against Szegedy et al., "Going Deeper with Convolutions" (2014), Table 1.

Shapes and parameter counts at 224 px come from symbolic builds (nothing runs); the forward
passes and the `.keras` round trip use the `tiny` preset (its LRN variant's `.keras` file under
JAX is checked with the other backend checks, in tests/zoo/test_jax_backend.py).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from zoo import registry
from zoo.googlenet import SPEC
from zoo.googlenet.backbone import INCEPTION_WIDTHS, STEM_WIDTHS
from zoo.layers.normalization import LocalResponseNormalization
from zoo.tasks.image_classifier import PROBABILITIES, inference_model

# Table 1, "output size" column (the stage outputs of the backbone at 224 px).
TABLE1_SHAPES = {
    "conv1": (112, 112, 64),
    "pool1": (56, 56, 64),
    "conv2": (56, 56, 192),
    "pool2": (28, 28, 192),
    "inception_3a": (28, 28, 256),
    "inception_3b": (28, 28, 480),
    "pool3": (14, 14, 480),
    "inception_4a": (14, 14, 512),
    "inception_4b": (14, 14, 512),
    "inception_4c": (14, 14, 512),
    "inception_4d": (14, 14, 528),
    "inception_4e": (14, 14, 832),
    "pool4": (7, 7, 832),
    "inception_5a": (7, 7, 832),
    "inception_5b": (7, 7, 1024),
}

# Table 1, "params" column, in units of 1024 weights (biases not counted): conv1, conv2,
# 3a, 3b, 4a-4e, 5a, 5b, linear. Its sum is "about 6.8M". The column is approximate: conv1's
# 2.7K cannot be 7x7x3x64 = 9.2K, and 4c's 463K is 497.5K by the table's own widths.
TABLE1_PARAMS_K = [2.7, 112, 159, 380, 364, 437, 463, 580, 840, 1072, 1388, 1000]


def _table1_layers(num_classes: int = 1000):
    """(kernel weights, output channels) of every convolution and the classifier, from
    Table 1's widths, in network order."""
    layers = []
    channels = 3
    for key, kernel in (("conv1", 7), ("conv2_reduce", 1), ("conv2", 3)):
        layers.append((kernel * kernel * channels * STEM_WIDTHS[key], STEM_WIDTHS[key]))
        channels = STEM_WIDTHS[key]
    for w in INCEPTION_WIDTHS.values():
        layers += [
            (channels * w.conv1x1, w.conv1x1),
            (channels * w.reduce3x3, w.reduce3x3),
            (9 * w.reduce3x3 * w.conv3x3, w.conv3x3),
            (channels * w.reduce5x5, w.reduce5x5),
            (25 * w.reduce5x5 * w.conv5x5, w.conv5x5),
            (channels * w.pool_proj, w.pool_proj),
        ]
        channels = w.output_channels
    classifier = (channels * num_classes, num_classes)
    return layers, classifier


def _expected_params(batch_norm: bool, num_classes: int = 1000) -> int:
    """GoogLeNet's parameter count without auxiliary heads, from Table 1's widths.

    LRN variant: every convolution and the classifier have a bias. BN variant: convolutions
    have no bias and 4 BN values per channel (gamma, beta, moving mean and variance)."""
    convs, (fc_weights, fc_bias) = _table1_layers(num_classes)
    per_channel = 4 if batch_norm else 1
    return sum(w + per_channel * c for w, c in convs) + fc_weights + fc_bias


def _aux_params(in_channels: int, batch_norm: bool, num_classes: int = 1000) -> int:
    """One auxiliary head at 224 px: conv 1x1 128, FC 1024 on 4x4x128, linear (section 5)."""
    conv = in_channels * 128 + (4 * 128 if batch_norm else 128)
    return conv + (4 * 4 * 128 * 1024 + 1024) + (1024 * num_classes + num_classes)


@pytest.fixture(scope="module")
def paper_models():
    """Symbolic 224-px builds of the paper preset: (normalization, aux_heads) -> model."""
    return {
        (norm, aux): SPEC.build("paper", normalization=norm, aux_heads=aux)
        for norm in ("lrn", "batch_norm")
        for aux in (False, True)
    }


def test_stage_shapes_match_table1(paper_models):
    assert SPEC.config("paper")["normalization"] == "lrn"
    model = paper_models["lrn", False]  # SPEC.build("paper", aux_heads=False)
    backbone = model.get_layer("backbone")  # googlenet_backbone(SPEC.config("paper"))
    shapes = {name: tuple(t.shape[1:]) for name, t in backbone.output.items()}
    assert shapes == TABLE1_SHAPES
    assert model.get_layer("avg_pool").output.shape == (None, 1024)  # avg pool 7x7 -> 1x1x1024
    assert model.output.shape == (None, 1000)


def test_parameter_count_matches_table1(paper_models):
    # Exact count from the table's widths, and the per-layer column's sum within 1%.
    lrn = paper_models["lrn", False].count_params()
    assert lrn == _expected_params(batch_norm=False) == 6_998_552
    convs, (fc_weights, _) = _table1_layers()
    weights = sum(w for w, _ in convs) + fc_weights
    assert weights == pytest.approx(sum(TABLE1_PARAMS_K) * 1024, rel=0.01)
    bn = paper_models["batch_norm", False]
    assert bn.count_params() == _expected_params(batch_norm=True) == 7_020_392
    trainable = sum(int(np.prod(w.shape)) for w in bn.trainable_weights)
    assert trainable == 7_005_832  # the BN moving statistics are not trained


def test_auxiliary_heads_add_the_papers_parameters(paper_models):
    for norm, batch_norm in (("lrn", False), ("batch_norm", True)):
        model = paper_models[norm, True]
        aux = _aux_params(512, batch_norm) + _aux_params(528, batch_norm)
        assert model.count_params() == _expected_params(batch_norm) + aux
        assert model.get_layer("aux_4a_pool").output.shape == (None, 4, 4, 512)
        assert model.get_layer("aux_4d_pool").output.shape == (None, 4, 4, 528)
        assert inference_model(model).count_params() == _expected_params(batch_norm)


def test_auxiliary_heads_only_when_configured_and_not_in_inference_model():
    model, images = SPEC.example("tiny")
    assert set(model.output) == {PROBABILITIES, "aux_4a", "aux_4d"}
    outputs = model(images, training=False)
    served = inference_model(model)
    assert not isinstance(served.output, dict) and len(served.outputs) == 1
    assert served.output.shape == (None, 10)
    assert not any(layer.name.startswith("aux_") for layer in served.layers)
    np.testing.assert_allclose(served(images, training=False), outputs[PROBABILITIES], atol=1e-6)
    plain = SPEC.build("tiny", aux_heads=False)
    assert len(plain.outputs) == 1 and inference_model(plain) is plain
    assert not any(layer.name.startswith("aux_") for layer in plain.layers)


@pytest.mark.parametrize(
    "image_size, pooled",
    [(224, 4), (160, 2), (128, 2), (96, 1), (64, 1), (32, 1)],
)
def test_auxiliary_pooling_works_at_small_sizes(image_size, pooled):
    model = SPEC.build("tiny", image_size=image_size)
    for aux in ("aux_4a", "aux_4d"):
        assert model.get_layer(f"{aux}_pool").output.shape[1:3] == (pooled, pooled)


def test_every_preset_builds_with_its_heads():
    for preset, config in SPEC.presets.items():
        model = SPEC.builder(SPEC.config(preset, width=0.125))
        assert model.output[PROBABILITIES].shape == (None, config["num_classes"]), preset


def test_mixed_precision_probabilities_are_float32():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = SPEC.build("tiny", normalization="lrn")
        outputs = model(SPEC.example_inputs(SPEC.config("tiny"), np.random.default_rng(0)))
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.get_layer("backbone").get_layer("inception_5b_1x1").compute_dtype == "float16"
    assert model.get_layer("backbone").get_layer("norm1").compute_dtype == "float16"
    for name in (PROBABILITIES, "aux_4a", "aux_4d"):
        assert keras.backend.standardize_dtype(outputs[name].dtype) == "float32"
        assert np.isfinite(np.asarray(outputs[name])).all()


def _lrn_reference(x: np.ndarray, size: int, alpha: float, beta: float, bias: float):
    """Caffe's ACROSS_CHANNELS LRN, written out channel by channel."""
    out = np.empty_like(x)
    half = size // 2
    for c in range(x.shape[-1]):
        window = x[..., max(0, c - half) : c + half + 1]
        out[..., c] = x[..., c] / (bias + alpha / size * np.sum(window**2, axis=-1)) ** beta
    return out


@pytest.mark.parametrize(
    "args",
    [
        {"size": 5, "alpha": 1e-4, "beta": 0.75, "bias": 1.0},  # GoogLeNet's (Caffe's) values
        {"size": 3, "alpha": 0.5, "beta": 0.6, "bias": 2.0},
        {"size": 1, "alpha": 1.0, "beta": 1.0, "bias": 1.0},
    ],
)
def test_lrn_matches_numpy_reference(args):
    x = np.random.default_rng(1).normal(0.0, 30.0, size=(2, 3, 4, 7)).astype("float32")
    expected = _lrn_reference(x.astype("float64"), **args)
    assert np.abs(expected - x).max() > 1e-2  # the normalization does something
    got = np.asarray(LocalResponseNormalization(**args)(x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_lrn_equals_tensorflow_lrn_with_alpha_over_size():
    tf = pytest.importorskip("tensorflow")
    x = np.random.default_rng(2).normal(0.0, 30.0, size=(2, 3, 3, 16)).astype("float32")
    ours = LocalResponseNormalization(size=5, alpha=1e-4, beta=0.75, bias=1.0)(x)
    theirs = tf.nn.local_response_normalization(
        x, depth_radius=2, bias=1.0, alpha=1e-4 / 5, beta=0.75
    )
    np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), rtol=1e-5, atol=1e-6)


def test_lrn_config_half_precision_and_validation():
    layer = LocalResponseNormalization(size=3, alpha=0.2, beta=0.5, bias=2.0, name="n")
    again = LocalResponseNormalization.from_config(layer.get_config())
    assert (again.size, again.alpha, again.beta, again.bias, again.name) == (3, 0.2, 0.5, 2.0, "n")
    big = np.full((1, 1, 1, 5), 1000.0, "float16")  # its square overflows float16
    half = LocalResponseNormalization(dtype="float16")(big)
    assert keras.backend.standardize_dtype(half.dtype) == "float16"
    assert np.isfinite(np.asarray(half)).all()
    with pytest.raises(ValueError, match="odd"):
        LocalResponseNormalization(size=4)
    with pytest.raises(ValueError, match="positive"):
        LocalResponseNormalization(bias=0.0)
    with pytest.raises(ValueError, match="normalization"):
        SPEC.build("tiny", normalization="group_norm")


@pytest.mark.parametrize("normalization", ["lrn", "batch_norm"])
def test_tiny_preset_runs_and_round_trips_through_keras_file(normalization, tmp_path):
    model = SPEC.build("tiny", normalization=normalization)
    images = SPEC.example_inputs(SPEC.config("tiny"), np.random.default_rng(0))
    assert images.shape == (2, 64, 64, 3) and images.dtype == np.float32
    outputs = model(images, training=False)
    probabilities = np.asarray(outputs[PROBABILITIES])
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)
    path = tmp_path / "googlenet.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    again = restored(images, training=False)
    for name in outputs:
        np.testing.assert_allclose(np.asarray(again[name]), np.asarray(outputs[name]), atol=1e-6)


def test_presets_follow_the_paper_and_share_keys():
    paper = SPEC.presets["paper"]
    assert paper["normalization"] == "lrn" and paper["aux_heads"] is True
    assert (paper["dropout"], paper["aux_dropout"], paper["aux_loss_weight"]) == (0.4, 0.7, 0.3)
    assert (paper["momentum"], paper["lr_decay_factor"], paper["lr_decay_epochs"]) == (0.9, 0.96, 8)
    assert paper["random_resized_crop_area"] == [0.08, 1.0]
    assert paper["random_resized_crop_aspect"] == pytest.approx([3 / 4, 4 / 3])
    keys = set(paper)
    assert all(set(config) == keys for config in SPEC.presets.values())
    # None is registry.DATA_DECIDED (a size the recipe takes from the data): none here.
    assert all(v is not registry.DATA_DECIDED for c in SPEC.presets.values() for v in c.values())
    assert registry.get("googlenet") is SPEC
    assert SPEC.default_preset == "imagenette"
    assert SPEC.presets["imagenette"]["normalization"] == "batch_norm"
