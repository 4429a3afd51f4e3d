"""GoogLeNet's recipe on real Imagenette images (tiny preset, three classes, 16 images each):
its loss falls, the auxiliary heads weigh in the training loss but never reach the export,
the SavedModel's signatures answer like the Keras classifier, and labels are names. The
end-to-end steps every family passes are the harness's: there, real Imagenette JPEGs are
answered alike by Keras, the SavedModel in a fresh process without the zoo, and `zoo serve`
(b64 over REST, a string tensor over gRPC), labels included."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from tests.harness import FamilyEndToEnd, PreparedCase, export_tiny_run, need
from tests.helpers import small_image_folder
from training import export, train

#: WordNet ids of three distinct Imagenette classes, sorted, and their exported names.
CLASSES = {"n01440764": "tench", "n03028079": "church", "n03888257": "parachute"}


@pytest.fixture(scope="module")
def imagenette_small(shared_data, tmp_path_factory):
    if not (shared_data / "imagenette").is_dir():
        pytest.skip("imagenette not found in shared data")
    return small_image_folder(
        shared_data / "imagenette", tmp_path_factory.mktemp("imagenette"), 16,
        splits=("train", "val"), classes=list(CLASSES),
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(imagenette_small, tmp_path_factory):
    """The tiny preset trained for 14 epochs of 48 images at a learning rate of 0.01. The
    preset's 10 epochs at 0.025 made the loss-falls check flaky: the run is seeded, but
    TensorFlow's multi-threaded kernels make runs differ in the last bits, and 30 SGD steps
    on 48 augmented images amplify that; the loss rose again mid-run. The best of the last
    three epochs' losses, as a share of the first epoch's (bar 0.85): 0.67-0.90 in 10 runs
    at 10 epochs, 0.63-0.87 at 14 epochs (two `make test` runs failed), 0.63-0.73 in 4 runs
    at 14 epochs and 0.01."""
    run_dir = tmp_path_factory.mktemp("run") / "googlenet"
    metrics = train.run(
        "googlenet", "tiny", run_dir, str(imagenette_small), verbose=0,
        overrides={"num_classes": len(CLASSES), "epochs": 14, "learning_rate": 0.01},
    )  # fmt: skip
    return run_dir, metrics


@pytest.fixture(scope="module")
def exported(tiny_run):
    """The tiny run exported by `zoo export` as <base>/1 (the harness's export)."""
    return export_tiny_run(tiny_run[0], "googlenet")


@pytest.fixture(scope="module")
def val_images(shared_data):
    """The first validation JPEG of each class, from the real Imagenette folder."""
    root = shared_data / "imagenette" / "val"
    if not root.is_dir():
        pytest.skip("imagenette not found in shared data")
    return [sorted((root / c).iterdir())[0] for c in CLASSES]


@pytest.fixture(scope="module")
def request_inputs(val_images):
    """Those JPEGs' bytes, as `serving_default` takes them."""
    return {"image_bytes": np.array([p.read_bytes() for p in val_images], dtype=object)}


class TestEndToEnd(FamilyEndToEnd):
    family = "googlenet"

    def test_labels_answered_are_names(self, expected):
        """What Keras, the fresh process and the server all answer: class names, best first."""
        names = list(CLASSES.values())
        classes = expected["classes"].astype(str).tolist()
        assert expected["class_ids"].shape == (3, 3)  # top k = min(5, classes)
        for row, ids in zip(classes, expected["class_ids"].tolist(), strict=True):
            assert row == [names[i] for i in ids] and sorted(row) == sorted(names)


def test_tiny_preset_loss_falls(tiny_run):
    _, metrics = tiny_run
    losses = [epoch["loss"] for epoch in metrics["history"]]
    # 48 augmented images, a noisy curve (see tiny_run): judged on the last 3 epochs
    assert min(losses[-3:]) < 0.85 * losses[0], losses
    # evaluation reports the main classifier only
    assert {"loss", "accuracy", "top5_accuracy"} <= set(metrics)
    assert not any("aux" in key or "probabilities_" in key for key in metrics)


def test_auxiliary_heads_weigh_in_the_training_loss(tiny_run):
    _, metrics = tiny_run
    for epoch in metrics["history"]:
        main, aux = epoch["probabilities_loss"], epoch["aux_4a_loss"] + epoch["aux_4d_loss"]
        assert epoch["loss"] == pytest.approx(main + 0.3 * aux, rel=1e-3)  # aux_loss_weight
        assert epoch["loss"] > main + 0.1


def test_export_has_one_head_and_matches_keras(tiny_run, exported, val_images):
    """The loaded SavedModel's three signatures: the Keras classifier's probabilities (top k
    of them on image bytes, all on pixels) and its backbone's last block, and no aux head."""
    from training.data.images import decode_image
    from training.tasks.image_classification import center_crop, decode_size
    from zoo.tasks.image_classifier import backbone_of, inference_model

    run_dir, _ = tiny_run
    model, info = export.load_trained(run_dir)
    config = info["config"]
    decoded = [decode_image(tf.io.read_file(str(p)), decode_size(config)) for p in val_images]
    pixels = center_crop(tf.cast(tf.stack(decoded), tf.float32), config["image_size"]).numpy()
    loaded = tf.saved_model.load(str(exported))
    data = tf.constant([p.read_bytes() for p in val_images])
    top = loaded.signatures["serving_default"](image_bytes=data)
    probs = loaded.signatures["predict_pixels"](pixels=tf.constant(pixels))["probabilities"]
    features = loaded.signatures["features"](image_bytes=data)["features"].numpy()

    # one classifier in the export: no auxiliary output, no auxiliary weights
    assert {k: sorted(s.structured_outputs) for k, s in loaded.signatures.items()} == {
        "serving_default": ["class_ids", "classes", "probabilities"],
        "predict_pixels": ["probabilities"],
        "features": ["features"],
    }
    classifier = inference_model(model)
    variables = {id(v): v for v in loaded.model_variables}.values()
    weights = sum(int(np.prod(v.shape)) for v in variables if v.dtype.is_floating)
    assert weights == classifier.count_params() < model.count_params()

    expected = classifier(pixels, training=False).numpy()
    np.testing.assert_allclose(probs.numpy(), expected, atol=1e-5)
    top_probabilities = top["probabilities"].numpy()
    assert top_probabilities.shape == (3, 3)  # top k = min(5, classes)
    np.testing.assert_allclose(top_probabilities, -np.sort(-expected, axis=-1), atol=1e-5)
    feature = backbone_of(model)(pixels, training=False)["inception_5b"].numpy()
    scale = np.abs(feature).max()
    np.testing.assert_allclose(features, feature, atol=1e-5 * scale)

    # labels are names, best first
    names = list(CLASSES.values())
    classes = top["classes"].numpy().astype(str).tolist()
    assert [row[0] for row in classes] == [names[i] for i in expected.argmax(-1)]
    assert all(sorted(row) == sorted(names) for row in classes)


def test_labels_come_back_as_names(tiny_run, exported):
    from training.recipes.googlenet import RECIPE

    run_dir, _ = tiny_run
    names = list(CLASSES.values())
    assert json.loads((run_dir / "run.json").read_text())["assets"]["class_names"] == names
    assert (exported / "assets" / "labels.txt").read_text().splitlines() == names
    # folder names outside the table stay as they are
    assert RECIPE.display_names(["n02102040", "my_cat"]) == ["English springer", "my_cat"]


def test_mixed_precision_trains_in_half_and_exports_in_float32():
    """A mixed-precision model (mixed_bfloat16 runs on CPU) is exported in float32 with the
    same weights; building it leaves the global dtype policy as it was."""
    import keras

    from training.recipes.googlenet import RECIPE
    from zoo import registry
    from zoo.tasks.image_classifier import inference_model

    config = registry.get("googlenet").config("tiny", mixed_precision="mixed_bfloat16")
    model = RECIPE.build_model(config, {})
    assert model.dtype_policy.name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"
    module = RECIPE.export(model, config, {"class_names": list("abcdefghij")})
    assert module.model.dtype_policy.name == "float32"
    trained = inference_model(model).weights
    assert len(module.model.weights) == len(trained)
    for exported, weight in zip(module.model.weights, trained, strict=True):
        np.testing.assert_array_equal(exported.numpy(), weight.numpy())
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    out = module.predict_pixels(tf.constant(pixels))["probabilities"]
    assert out.dtype == tf.float32 and out.shape == (2, 10)


def test_weight_decay_matches_caffe_l2_under_momentum_at_the_documented_factor():
    """The presets' decoupled `weight_decay` shrinks a kernel as Caffe's / PyTorch's L2
    `weight_decay` of `weight_decay * (1 - momentum)` does (their term rides the momentum),
    and leaves biases alone. With no loss gradient, only the decay moves the weights."""
    import keras

    from training.recipes.googlenet import RECIPE
    from zoo import registry

    config = registry.get("googlenet").config(
        "paper", learning_rate=0.5, lr_schedule="step", lr_decay_factor=1.0, ema_momentum=0.0
    )
    optimizer = RECIPE.optimizer(config, steps_per_epoch=100)
    kernel = keras.Variable(np.ones(4, "float32"), name="kernel")
    bias = keras.Variable(np.ones(4, "float32"), name="bias")
    steps, zero = 300, np.zeros(4, "float32")
    for _ in range(steps):
        optimizer.apply_gradients([(zero, kernel), (zero, bias)])

    def caffe(l2: float) -> float:
        """Caffe's SGD with no gradient: v = momentum * v + lr * l2 * w; w -= v."""
        w, v = 1.0, 0.0
        for _ in range(steps):
            v = config["momentum"] * v + config["learning_rate"] * l2 * w
            w -= v
        return w

    expected = caffe(config["weight_decay"] * (1 - config["momentum"]))
    assert 1.0 - expected > 0.2  # the decay is large enough to compare
    np.testing.assert_allclose(kernel.numpy(), expected, rtol=0.02)  # the momentum's lag
    assert caffe(config["weight_decay"]) < 0.5 * expected  # the same value as L2: far more
    np.testing.assert_array_equal(bias.numpy(), 1.0)


def test_inception_augmentation_and_central_crop():
    """Training: random-resized crops of the decoded image, flips, color jitter; evaluation
    and serving: the central crop of the same decoded image."""
    from training.tasks.image_classification import decode_size, make_augment, make_eval_transform
    from zoo import registry

    config = registry.get("googlenet").config("tiny", color_jitter=0.5)
    side = decode_size(config)
    assert side == 73  # 64 / 0.875
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (8, side, side, 3)), tf.float32)
    augmented = make_augment(config, seed=1)(images).numpy()
    central = make_eval_transform(config)(images).numpy()
    assert augmented.shape == central.shape == (8, 64, 64, 3)
    assert augmented.min() >= 0.0 and augmented.max() <= 255.0
    np.testing.assert_array_equal(central, images.numpy()[:, 4:68, 4:68, :])
    assert not np.allclose(augmented, central)
    # the whole image as the crop, no flip, no jitter: the image itself
    whole = {
        **config,
        "random_resized_crop_area": [1.0, 1.0],
        "random_resized_crop_aspect": [1.0, 1.0],
        "horizontal_flip": False,
        "color_jitter": 0.0,
        "eval_crop_fraction": 1.0,
    }
    same = images[:, :64, :64]
    np.testing.assert_allclose(make_augment(whole)(same), same, atol=1e-3)


#: Imagenette classes of the prepared-data case (WordNet ids)
PREPARED_CLASSES = ["n01440764", "n03028079", "n03888257"]


def _imagenette_prepared_data(tmp, shared):
    """16 train + 16 val images of three Imagenette classes (links)."""
    return small_image_folder(
        need(shared / "imagenette"), tmp / "imagenette", 16,
        splits=("train", "val"), classes=PREPARED_CLASSES,
    )  # fmt: skip


def _imagenette_request(shared):
    """The first val JPEG of each of the three classes, as bytes."""
    root = need(shared / "imagenette" / "val")
    images = [sorted((root / c).iterdir())[0].read_bytes() for c in PREPARED_CLASSES]
    return {"image_bytes": np.array(images, dtype=object)}


#: the tiny run on prepared arrays under JAX (tests/training/test_prepared_training.py)
PREPARED_CASE = PreparedCase(
    data=_imagenette_prepared_data,
    request=_imagenette_request,
    prepare=("num_classes=3",),
    train=("epochs=2",),
)
