"""The CIFAR-10 convnet: architecture, recipe, training on real images, export."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.harness import FamilyEndToEnd, PreparedCase, export_tiny_run, need
from tests.helpers import small_image_folder, zoo_in_process
from training import checkpoints, export, train
from zoo import registry
from zoo.tasks.image_classifier import backbone_of, head_layers


@pytest.fixture(scope="module")
def tiny_run(cifar_tiny_run):
    """The tiny-preset run trained for 2 epochs on `cifar_small` (tests/conftest.py: one per
    test process, shared with tests/serving/test_zoo_cifar.py)."""
    return cifar_tiny_run


@pytest.fixture(scope="module")
def hand_counted(tiny_run, cifar_small) -> dict[str, float]:
    """The tiny run's test-split metrics counted here, independently of `recipe.evaluate`:
    each test image of the folder decoded, run through the trained model, and its top-1 /
    top-5 answer compared with the class of its folder; the loss is the mean -log p(label)
    (Keras clips probabilities to [1e-7, 1 - 1e-7])."""
    from training.data.images import decode_image

    run_dir, _ = tiny_run
    model, info = export.load_trained(run_dir)
    names = sorted(p.name for p in (cifar_small / "test").iterdir())
    assert names == info["assets"]["class_names"]
    paths = [(label, p) for label, name in enumerate(names)
             for p in sorted((cifar_small / "test" / name).iterdir())]  # fmt: skip
    labels = np.array([label for label, _ in paths])
    pixels = np.stack([decode_image(p.read_bytes(), 32).numpy() for _, p in paths])
    probs = np.concatenate([
        model(pixels[i : i + 100].astype("float32"), training=False).numpy()
        for i in range(0, len(pixels), 100)
    ])  # fmt: skip
    assert not info["config"].get("label_smoothing")  # else the loss below is not Keras'
    top5 = np.argsort(-probs, axis=-1)[:, :5]
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1 - 1e-7)
    return {
        "images": len(labels),
        "accuracy": float(np.mean(probs.argmax(-1) == labels)),
        "top5_accuracy": float(np.mean((top5 == labels[:, None]).any(-1))),
        "loss": float(np.mean(-np.log(picked))),
    }


def _assert_metrics_match(got: dict, hand: dict) -> None:
    """Accuracies are counts over the same images (exact up to float32 rounding); the loss
    is a float32 mean over them."""
    assert hand["images"] == 200
    for key in ("accuracy", "top5_accuracy"):
        assert got[key] == pytest.approx(hand[key], abs=1e-6), (key, got, hand)
    assert got["loss"] == pytest.approx(hand["loss"], rel=1e-4), (got, hand)


@pytest.fixture(scope="module")
def request_inputs(shared_data):
    """Four real CIFAR test JPEGs of different classes, as `serving_default` takes them."""
    root = shared_data / "cifar10" / "test"
    images = [
        sorted((root / c).iterdir())[0].read_bytes() for c in ("ship", "cat", "frog", "truck")
    ]
    return {"image_bytes": np.array(images, dtype=object)}


class TestEndToEnd(FamilyEndToEnd):
    family = "cifar_convnet"


def test_paper_preset_is_the_classic_keras_example():
    model = registry.get("cifar_convnet").build("paper")
    backbone = backbone_of(model)
    assert [layer.name for layer in model.layers] == [
        "pixels", "backbone", "flatten", "dense", "dropout_dense", "probabilities",
    ]  # fmt: skip
    assert {k: v.shape[1:] for k, v in backbone.output.items()} == {
        "block1": (15, 15, 32), "block2": (6, 6, 64),
    }  # fmt: skip
    kinds = [type(layer).__name__ for layer in [*backbone.layers[1:], *head_layers(model)]]
    assert kinds == [
        "Rescaling", "Conv2D", "Conv2D", "MaxPooling2D", "Dropout",
        "Conv2D", "Conv2D", "MaxPooling2D", "Dropout",
        "Flatten", "Dense", "Dropout", "Dense",
    ]  # fmt: skip
    assert model.count_params() == 1_250_858  # the original example's parameter count
    convs = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [(c.filters, c.padding) for c in convs] == [
        (32, "same"), (32, "valid"), (64, "same"), (64, "valid"),
    ]  # fmt: skip


def test_rmsprop_decay_is_inverse_time_decay():
    from training.recipes.cifar_convnet import RECIPE

    spec = registry.get("cifar_convnet")
    model = spec.build("paper")
    RECIPE.compile(model, spec.config("paper"), None, jit_compile=False)
    schedule = model.optimizer.learning_rate
    if not callable(schedule):
        schedule = model.optimizer._learning_rate
    assert float(schedule(0)) == pytest.approx(1e-4)
    assert float(schedule(1_000_000)) == pytest.approx(1e-4 / 2)  # lr / (1 + 1e-6 * step)


def test_image_folder_reader_and_val_carving(cifar_small, tmp_path):
    from training.data.image_folder import image_folder_splits

    splits = image_folder_splits(cifar_small)
    assert splits["train"].class_names[:3] == ["airplane", "automobile", "bird"]
    assert len(splits["train"]) == 200 and len(splits["test"]) == 200
    flat = image_folder_splits(cifar_small / "train", val_fraction=0.25)
    assert len(flat["val"]) == 50 and len(flat["train"]) == 150
    assert not set(flat["val"].paths) & set(flat["train"].paths)
    with pytest.raises(ValueError, match="No class folders"):
        image_folder_splits(tmp_path)


def test_tiny_trains_one_epoch_and_writes_run(tiny_run, hand_counted):
    run_dir, metrics = tiny_run
    assert metrics["epochs"] == 2 and metrics["resumed_from_epoch"] == 0
    # the reported test metrics are those of the trained model's own answers
    _assert_metrics_match(metrics, hand_counted)
    assert metrics["examples_per_sec"] > 0
    assert [c[0] for c in checkpoints.list_checkpoints(run_dir / "checkpoints")] == [1, 2]
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 2
    assert any((run_dir / "logs").rglob("events.out.tfevents.*"))


def test_loss_falls_on_a_learnable_subset(shared_data, tmp_path):
    folder = small_image_folder(
        shared_data / "cifar10", tmp_path / "data", 16, splits=("train",),
        classes=["airplane", "frog"],
    )  # fmt: skip
    metrics = train.run(
        "cifar_convnet", "tiny", tmp_path / "run", str(folder), epochs=50, batch_size=8,
        verbose=0, overrides={"num_classes": 2, "shift": 0.0, "horizontal_flip": False,
                              "dropout_conv": 0.0, "dropout_dense": 0.0},
    )  # fmt: skip
    losses = [h["loss"] for h in metrics["history"]]
    # 32 images, unseeded: judged on the last 5 epochs so one noisy epoch does not decide
    assert min(losses[-5:]) < 0.6 * losses[0], losses
    assert max(h["accuracy"] for h in metrics["history"][-5:]) > 0.85


def test_export_answers_the_top5_of_the_keras_model(tiny_run, shared_data, tmp_path):
    """`zoo export` (the CLI; the harness exports through its library steps) writes
    version 1 of a new base path, and its `serving_default` answers the Keras model's top 5."""
    run_dir, _ = tiny_run
    base = tmp_path / "models" / "cifar_convnet"
    out = zoo_in_process("export", "--model-dir", str(run_dir), "--to", str(base)).stdout
    version_dir = base / "1"
    assert out.strip() == f"exported {version_dir}"
    assert export.next_version(base) == 2
    images = sorted((shared_data / "cifar10" / "test" / "ship").iterdir())[:4]
    images += sorted((shared_data / "cifar10" / "test" / "cat").iterdir())[:4]
    loaded = tf.saved_model.load(str(version_dir))
    out = loaded.signatures["serving_default"](
        image_bytes=tf.constant([p.read_bytes() for p in images])
    )
    served, served_ids = out["probabilities"].numpy(), out["class_ids"].numpy()

    model, _ = export.load_trained(run_dir)
    from training.data.images import decode_image

    pixels = np.stack([decode_image(tf.io.read_file(str(p)), 32).numpy() for p in images])
    expected = model(pixels.astype("float32"), training=False).numpy()
    # serving_default answers the top 5 classes, best first, with their probabilities
    assert served.shape == served_ids.shape == (8, 5)
    np.testing.assert_allclose(served, np.take_along_axis(expected, served_ids, -1), atol=1e-5)
    np.testing.assert_allclose(served, -np.sort(-expected, axis=-1)[:, :5], atol=1e-5)
    class_names = json.loads((run_dir / "run.json").read_text())["assets"]["class_names"]
    predicted = [c.decode() for c in out["classes"].numpy()[:, 0]]
    assert predicted == [class_names[i] for i in expected.argmax(-1)]

    from tensorflow_serving.apis import prediction_log_pb2

    records = list(tf.data.TFRecordDataset(
        str(version_dir / "assets.extra" / "tf_serving_warmup_requests")
    ))  # fmt: skip
    assert len(records) == 3
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in records]
    assert {log.predict_log.request.model_spec.signature_name for log in logs} == {
        "serving_default", "predict_pixels", "features",
    }  # fmt: skip
    assert (version_dir / "assets" / "labels.txt").read_text().split() == class_names


def test_serving_default_on_bad_and_odd_images(tiny_run):
    version_dir = export_tiny_run(tiny_run[0], "cifar_convnet")
    fn = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    for bad in (b"not an image at all", b""):
        with pytest.raises(tf.errors.InvalidArgumentError, match="image"):
            fn(image_bytes=tf.constant([bad]))
    one_pixel = tf.io.encode_png(tf.constant([[[255, 0, 0]]], tf.uint8)).numpy()
    big = tf.io.encode_jpeg(tf.zeros([300, 200, 3], tf.uint8)).numpy()
    gray = tf.io.encode_png(tf.zeros([32, 32, 1], tf.uint8)).numpy()
    out = fn(image_bytes=tf.constant([one_pixel, big, gray]))
    probs, ids = out["probabilities"].numpy(), out["class_ids"].numpy()
    assert probs.shape == ids.shape == out["classes"].shape == (3, 5)
    assert out["class_ids"].dtype == tf.int64 and (np.diff(probs, axis=-1) <= 0).all()
    # the same images as pixels: a distribution over the 10 classes whose top 5 these are
    from training.data.images import decode_image

    pixels = tf.cast(tf.stack([decode_image(b, 32) for b in (one_pixel, big, gray)]), tf.float32)
    direct = tf.saved_model.load(str(version_dir)).signatures["predict_pixels"](pixels=pixels)
    full = direct["probabilities"].numpy()
    assert full.shape == (3, 10)
    np.testing.assert_allclose(full.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(full, ids, -1), probs, atol=1e-6)
    # pixels signature agrees with bytes signature on the same (already 32x32) image
    exact = tf.cast(tf.io.decode_png(gray, channels=3), tf.float32)[None]
    direct = tf.saved_model.load(str(version_dir)).signatures["predict_pixels"](pixels=exact)
    np.testing.assert_allclose(direct["probabilities"].numpy()[0][ids[2]], probs[2], atol=1e-6)
    # the features signature: the backbone's last block, on any image
    features = tf.saved_model.load(str(version_dir)).signatures["features"]
    assert features(image_bytes=tf.constant([big, gray]))["features"].shape == (2, 6, 6, 16)


def test_cli_predict_and_clear_error(tiny_run, shared_data, tmp_path):
    """`zoo predict` on the base path `zoo export` wrote (the harness's export)."""
    base = export_tiny_run(tiny_run[0], "cifar_convnet").parent
    image = sorted((shared_data / "cifar10" / "test" / "dog").iterdir())[0]
    out = zoo_in_process("predict", str(base), str(image), "--top-k", "2").stdout
    line = out.strip().splitlines()[-1]
    assert line.startswith(str(image)) and len(line.split(",")) == 2
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\x00\x01 definitely not a jpeg")
    proc = zoo_in_process("predict", str(base), str(garbage), check=False)
    assert proc.returncode == 2 and "Unknown image file format" in proc.stderr


def test_cli_evaluate_matches_training_metrics(tiny_run, cifar_small, hand_counted):
    run_dir, metrics = tiny_run
    out = zoo_in_process("evaluate", "--model-dir", str(run_dir), "--data-dir", str(cifar_small))
    out = out.stdout
    evaluated = json.loads(out[out.index("{") :])
    assert evaluated["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-6)
    # both come from `recipe.evaluate`: each is checked against the hand count as well
    _assert_metrics_match(evaluated, hand_counted)


def test_finetune_keeps_features_and_replaces_the_head(tiny_run, shared_data, tmp_path):
    run_dir, _ = tiny_run
    folder = small_image_folder(
        shared_data / "cifar10", tmp_path / "three", 6, splits=("train",),
        classes=["cat", "dog", "horse"],
    )  # fmt: skip
    zoo_in_process("finetune", str(run_dir), "--data-dir", str(folder), "--model-dir",
                   str(tmp_path / "ft"), "--epochs", "1", "--set", "learning_rate=0.0")  # fmt: skip
    tuned, info = export.load_trained(tmp_path / "ft")
    source, _ = export.load_trained(run_dir)
    assert info["config"]["num_classes"] == 3
    assert info["assets"]["class_names"] == ["cat", "dog", "horse"]
    assert tuned.get_layer("probabilities").kernel.shape[-1] == 3
    conv1a = [backbone_of(m).get_layer("conv1a").kernel.numpy() for m in (tuned, source)]
    np.testing.assert_array_equal(*conv1a)  # lr 0: the features are exactly the source run's
    dense = [m.get_layer("dense").kernel.numpy() for m in (tuned, source)]
    assert not np.array_equal(*dense)  # the whole head starts afresh, not only the last layer


def test_init_from_copies_a_part_of_a_trained_run(tiny_run):
    from training.recipes.cifar_convnet import RECIPE
    from training.transfer import TransferError

    run_dir, _ = tiny_run
    source, _ = export.load_trained(run_dir)
    spec = registry.get("cifar_convnet")
    model = spec.build("tiny", num_classes=3)
    RECIPE.init_from(model, source, ["backbone"])
    for got, want in zip(backbone_of(model).weights, backbone_of(source).weights, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert model.get_layer("probabilities").kernel.shape[-1] == 3  # the head is its own
    with pytest.raises(TransferError, match="probabilities"):
        RECIPE.init_from(model, source, ["probabilities"])  # 10 classes do not fit 3
    wider = spec.build("tiny", num_classes=3, filters=[8, 32])
    with pytest.raises(TransferError, match="shape"):
        RECIPE.init_from(wider, source, ["backbone"])


def test_finetune_reinitializes_exactly_the_head_when_the_classes_change():
    from training.recipes.cifar_convnet import RECIPE

    spec = registry.get("cifar_convnet")
    model = spec.build("tiny", num_classes=3)
    ten, three = spec.config("tiny"), spec.config("tiny", num_classes=3)
    cifar = {"class_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                             "horse", "ship", "truck"]}  # fmt: skip
    pets = {"class_names": ["cat", "dog", "horse"]}
    head = ["flatten", "dense", "dropout_dense", "probabilities"]
    assert RECIPE.reinitialized_layers(model, three, ten, pets, cifar) == head
    assert RECIPE.reinitialized_layers(model, three, three, pets, pets) == []
    # as many classes, other ones: the old head's outputs would mean the wrong classes
    farm = {"class_names": ["cow", "pig", "sheep"]}
    assert RECIPE.reinitialized_layers(model, three, three, farm, pets) == head


def test_shift_and_flip_augmentation_is_the_keras_example():
    """Only `shift` and `horizontal_flip` configured: the classic pipeline, unchanged."""
    from training.tasks.image_classification import make_augment

    config = registry.get("cifar_convnet").config("paper")
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    classic = keras.Sequential([
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=7),
        keras.layers.RandomFlip("horizontal", seed=7),
    ])  # fmt: skip
    np.testing.assert_array_equal(
        make_augment(config, seed=7)(images).numpy(), classic(images, training=True).numpy()
    )
    assert make_augment({**config, "shift": 0.0, "horizontal_flip": False}) is None


def _cifar_prepared_data(tmp, shared):
    """20 train + 20 test images per class of the real CIFAR-10 folder (links)."""
    return small_image_folder(need(shared / "cifar10"), tmp / "cifar", 20)


def _cifar_request(shared):
    """The first test JPEG of four classes, as bytes."""
    root = need(shared / "cifar10" / "test")
    images = [
        sorted((root / c).iterdir())[0].read_bytes() for c in ("ship", "cat", "frog", "truck")
    ]
    return {"image_bytes": np.array(images, dtype=object)}


#: the tiny run on prepared arrays under JAX (tests/training/test_prepared_training.py)
PREPARED_CASE = PreparedCase(
    data=_cifar_prepared_data,
    request=_cifar_request,
    train=("epochs=10",),  # 120 steps: the tiny convnet's loss moves off ln 10 slowly
)
