"""Named configurations of the CIFAR-10 convnet."""

_PAPER = {
    "image_size": 32,
    "num_classes": 10,
    "filters": [32, 64],
    "dense_units": 512,
    "dropout_conv": 0.25,
    "dropout_dense": 0.5,
    # training recipe of the original example
    "batch_size": 32,
    "learning_rate": 1e-4,
    "lr_decay": 1e-6,  # Keras 2 `decay=`: lr / (1 + decay * step), as InverseTimeDecay
    # The example's RMSprop divided by sqrt(v) + 1e-7; Keras 3 divides by sqrt(v + eps),
    # so its default 1e-7 floors the denominator at 3e-4 and shrinks small-gradient steps.
    # eps = 1e-14 inside the root reproduces Keras 2's 1e-7 outside it.
    "rmsprop_epsilon": 1e-14,
    "shift": 0.1,
    "horizontal_flip": True,
    "epochs": 50,
}

PRESETS = {
    "paper": _PAPER,
    "tiny": {
        **_PAPER,
        "filters": [8, 16],
        "dense_units": 32,
        "batch_size": 16,
        "learning_rate": 1e-3,
        "rmsprop_epsilon": 1e-7,  # Keras 3's default: steadier at the tiny preset's high rate
        "epochs": 1,
    },
}
