"""The Keras 2 CIFAR-10 example, unchanged, on the zoo's CIFAR-10 images: does the data
explain the gap between `zoo train cifar_convnet --preset paper` and the example's figures
(75% at 25 epochs, 79% at 50)?

The model, optimizer (RMSprop, lr 1e-4, decay 1e-6), batch size (32), augmentation
(`ImageDataGenerator`: 10% shifts, horizontal flips, nearest fill) and validation on the
test split are those of keras-team/keras examples/cifar10_cnn.py, run under Keras 2
(`tf-keras`; `fit_generator` is `fit` there). Only the data source differs: the JPEG copy
in ../shared/data/cifar10 that the zoo reads, decoded into the same uint8 arrays the
example's `cifar10.load_data()` returns. Each epoch is checkpointed, so a cut run resumes:

    .venv/bin/pip install -e '.[keras2]'
    python -m benchmarks.cifar_keras2_example --data-dir ../shared/data/cifar10 \
        --run-dir runs/cifar_keras2_example --epochs 25

It prints the per-epoch curve next to the zoo run's (`--zoo-run runs/cifar_paper`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def load_folder_split(data_dir: Path, split: str, class_names: list[str]):
    """(uint8 [N, 32, 32, 3], int labels [N, 1]) of one split, classes in folder order."""
    import tensorflow as tf

    images, labels = [], []
    for label, name in enumerate(class_names):
        for path in sorted((data_dir / split / name).iterdir()):
            image = tf.io.decode_image(tf.io.read_file(str(path)), channels=3).numpy()
            images.append(image)
            labels.append([label])
    return np.stack(images), np.array(labels, dtype=np.uint8)


def build_example_model(tf_keras, input_shape, num_classes):
    """keras-team/keras examples/cifar10_cnn.py's model and optimizer, as written there."""
    from tf_keras.layers import Activation, Conv2D, Dense, Dropout, Flatten, MaxPooling2D
    from tf_keras.models import Sequential

    model = Sequential()
    model.add(Conv2D(32, (3, 3), padding="same", input_shape=input_shape))
    model.add(Activation("relu"))
    model.add(Conv2D(32, (3, 3)))
    model.add(Activation("relu"))
    model.add(MaxPooling2D(pool_size=(2, 2)))
    model.add(Dropout(0.25))
    model.add(Conv2D(64, (3, 3), padding="same"))
    model.add(Activation("relu"))
    model.add(Conv2D(64, (3, 3)))
    model.add(Activation("relu"))
    model.add(MaxPooling2D(pool_size=(2, 2)))
    model.add(Dropout(0.25))
    model.add(Flatten())
    model.add(Dense(512))
    model.add(Activation("relu"))
    model.add(Dropout(0.5))
    model.add(Dense(num_classes))
    model.add(Activation("softmax"))
    # keras.optimizers.rmsprop(lr=0.0001, decay=1e-6): Keras 2's legacy optimizer keeps `decay`
    opt = tf_keras.optimizers.legacy.RMSprop(learning_rate=0.0001, decay=1e-6)
    model.compile(loss="categorical_crossentropy", optimizer=opt, metrics=["accuracy"])
    return model


def main(argv: list[str] | None = None) -> int:
    """Train (or resume) the example and print its curve beside the zoo run's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data/cifar10")
    parser.add_argument("--run-dir", default="runs/cifar_keras2_example")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--zoo-run", default="runs/cifar_paper")
    args = parser.parse_args(argv)
    import tf_keras
    from tf_keras.preprocessing.image import ImageDataGenerator

    data_dir, run_dir = Path(args.data_dir), Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    class_names = sorted(p.name for p in (data_dir / "train").iterdir() if p.is_dir())
    (x_train, y_train), (x_test, y_test) = (
        load_folder_split(data_dir, split, class_names) for split in ("train", "test")
    )
    print("x_train shape:", x_train.shape, "test:", x_test.shape)
    y_train = tf_keras.utils.to_categorical(y_train, len(class_names))
    y_test = tf_keras.utils.to_categorical(y_test, len(class_names))
    x_train = x_train.astype("float32") / 255
    x_test = x_test.astype("float32") / 255

    history_path, model_path = run_dir / "history.json", run_dir / "model.h5"
    history = json.loads(history_path.read_text()) if history_path.exists() else []
    if history and model_path.exists():
        model = tf_keras.models.load_model(model_path)  # weights and optimizer state
        print(f"resuming after epoch {len(history)}")
    else:
        history = []
        model = build_example_model(tf_keras, x_train.shape[1:], len(class_names))

    class EpochCheckpoint(tf_keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            entry = {"epoch": epoch + 1, "seconds": time.perf_counter() - self.start}
            entry.update({k: float(v) for k, v in (logs or {}).items()})
            tmp = run_dir / "model.tmp.h5"
            self.model.save(tmp)
            os.replace(tmp, model_path)  # the model and history move on together
            history.append(entry)
            tmp_json = run_dir / "history.tmp.json"
            tmp_json.write_text(json.dumps(history, indent=1))
            os.replace(tmp_json, history_path)

    datagen = ImageDataGenerator(
        width_shift_range=0.1, height_shift_range=0.1, fill_mode="nearest",
        horizontal_flip=True,
    )  # fmt: skip
    datagen.fit(x_train)
    if len(history) < args.epochs:
        model.fit(
            datagen.flow(x_train, y_train, batch_size=32),
            epochs=args.epochs,
            initial_epoch=len(history),
            validation_data=(x_test, y_test),
            callbacks=[EpochCheckpoint()],
            verbose=2,
        )
    zoo_history_path = Path(args.zoo_run) / "history.json"
    zoo = json.loads(zoo_history_path.read_text()) if zoo_history_path.exists() else []
    print("| epoch | Keras 2 example: test acc | s/epoch | zoo paper preset: test acc |")
    print("|---|---|---|---|")
    for i in range(max(len(history), len(zoo))):
        ours = history[i] if i < len(history) else {}
        theirs = zoo[i] if i < len(zoo) else {}
        print(
            f"| {i + 1} | {ours.get('val_accuracy', float('nan')):.4f} "
            f"| {ours.get('seconds', float('nan')):.0f} "
            f"| {theirs.get('val_accuracy', float('nan')):.4f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
