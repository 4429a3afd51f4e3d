"""GoogLeNet (Inception v1) classifier: backbone + head, with optional auxiliary heads.

Szegedy et al., "Going Deeper with Convolutions" (2014), section 5 and Table 1.

Main head: average pooling over the final 7x7 map (global average pooling, which is the
same at 224 px and works at any size), dropout 40%, a linear layer, softmax.

Auxiliary heads (section 5), on inception 4a and 4d, used in training only with loss weight
0.3 (the recipe's `aux_loss_weight`): average pooling 5x5/3, conv 1x1 128 + ReLU, FC 1024
+ ReLU, dropout 70%, linear, softmax. Their pooling is "valid", so the map they see depends
on the input size (4a and 4d are image_size / 16 on a side):

| image_size | 4a / 4d map | pooled map      | features into FC 1024 |
|------------|-------------|-----------------|-----------------------|
| 224        | 14x14       | 4x4 (the paper) | 2048                  |
| 160        | 10x10       | 2x2             | 512                   |
| 128        | 8x8         | 2x2             | 512                   |
| 96         | 6x6         | 1x1             | 128                   |
| 64         | 4x4         | 1x1 (window 4)  | 128                   |

Below 5x5 the pooling window is clipped to the map (stride 3 kept), so the head never
fails: any input of 16 px or more gives at least a 1x1 map. Channel counts above are at
width 1.0; the `width` multiplier scales the 128 and 1024 too.

`zoo.tasks.image_classifier.inference_model` drops the auxiliary heads for export.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from zoo.googlenet.backbone import googlenet_backbone
from zoo.layers.inception import conv_block, scale_width
from zoo.tasks.image_classifier import PROBABILITIES, Head, build_image_classifier

#: Auxiliary head name -> the backbone feature it reads (Szegedy et al., 2014, section 5).
AUXILIARY_FEATURES = {"aux_4a": "inception_4a", "aux_4d": "inception_4d"}


def classification_head(config: dict[str, Any]) -> Head:
    """GoogLeNet's main classifier (Table 1): average pool, dropout 40%, linear, softmax.

    Config keys read: `num_classes`, `dropout`. The softmax layer is named
    "probabilities" and computes in float32 (mixed-precision safe); the other layers take
    the global dtype policy.
    """

    def head(features: keras.KerasTensor) -> keras.KerasTensor:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(features)
        x = layers.Dropout(float(config["dropout"]), name="dropout")(x)
        x = layers.Dense(int(config["num_classes"]), name="logits")(x)
        return layers.Activation("softmax", dtype="float32", name=PROBABILITIES)(x)

    return head


def auxiliary_head(config: dict[str, Any], name: str) -> Head:
    """One auxiliary classifier of Szegedy et al. (2014), section 5, named `name`.

    Average pool 5x5/3 ("valid"; window clipped to smaller maps, see the module
    docstring), conv 1x1 128 + ReLU (Conv -> BN -> ReLU in the BN variant), FC 1024 + ReLU,
    dropout `aux_dropout` (0.7), linear to `num_classes`, float32 softmax in a layer named
    `name`. The 128 and 1024 are scaled by `width`.
    """
    batch_norm = (
        float(config["batch_norm_momentum"]) if config["normalization"] == "batch_norm" else None
    )
    width = float(config["width"])

    def head(features: keras.KerasTensor) -> keras.KerasTensor:
        window = tuple(min(5, int(side)) for side in features.shape[1:3])
        x = layers.AveragePooling2D(window, strides=3, padding="valid", name=f"{name}_pool")(
            features
        )
        x = conv_block(x, scale_width(128, width), 1, name=f"{name}_conv", batch_norm=batch_norm)
        x = layers.Flatten(name=f"{name}_flatten")(x)
        x = layers.Dense(scale_width(1024, width), activation="relu", name=f"{name}_fc")(x)
        x = layers.Dropout(float(config["aux_dropout"]), name=f"{name}_dropout")(x)
        x = layers.Dense(int(config["num_classes"]), name=f"{name}_logits")(x)
        return layers.Activation("softmax", dtype="float32", name=name)(x)

    return head


def build_googlenet(config: dict[str, Any]) -> keras.Model:
    """GoogLeNet (Szegedy et al., 2014) as an image classifier built from a config.

    Config keys read: `image_size`, `width`, `normalization` (backbone), `num_classes`,
    `dropout` (main head), `aux_heads` and `aux_dropout` (auxiliary heads). The model
    takes float pixels in [0, 255] of shape (image_size, image_size, 3). It returns the
    class probabilities, or, with `aux_heads`, a dict {"probabilities", "aux_4a",
    "aux_4d"} of probabilities; `zoo.tasks.image_classifier.inference_model` keeps only
    the first.

    Example:
        >>> from zoo.googlenet.presets import PRESETS
        >>> model = build_googlenet(PRESETS["tiny"])
        >>> sorted(model.output)
        ['aux_4a', 'aux_4d', 'probabilities']
    """
    auxiliary = None
    if config["aux_heads"]:
        auxiliary = {
            aux: (feature, auxiliary_head(config, aux))
            for aux, feature in AUXILIARY_FEATURES.items()
        }
    return build_image_classifier(
        googlenet_backbone(config),
        classification_head(config),
        feature="inception_5b",
        auxiliary=auxiliary,
        name="googlenet",
    )
