"""Image classifier = backbone (named feature maps) + classification head.

A backbone is a functional `keras.Model` from float pixels in [0, 255], shape
(size, size, 3), to a dict of named feature maps (e.g. {"inception_4e": ..., "inception_5b":
...}). Another family (the captioner) can use a trained backbone's features as they are.

The classifier nests the backbone as its layer named `BACKBONE` and puts the head's layers
after it; every layer outside the backbone belongs to the head, which is what fine-tuning on
a new class set re-initialises. Its output is the class probabilities, or, when auxiliary
heads are trained (GoogLeNet), a dict with `PROBABILITIES` and one entry per auxiliary head;
`inference_model` drops them for export.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras

BACKBONE = "backbone"
PROBABILITIES = "probabilities"

Head = Callable[[keras.KerasTensor], keras.KerasTensor]


def build_image_classifier(
    backbone: keras.Model,
    head: Head,
    feature: str,
    auxiliary: dict[str, tuple[str, Head]] | None = None,
    name: str = "image_classifier",
) -> keras.Model:
    """Compose a backbone and a head into a classifier.

    Args:
        backbone: functional model, pixels -> dict of named feature maps; renamed `BACKBONE`.
        head: feature map -> class probabilities (its last layer should be named
            `PROBABILITIES`, with a float32 softmax).
        feature: the backbone output the head reads.
        auxiliary: output name -> (feature name, head) of auxiliary classifiers used only
            in training; then the model returns a dict of probabilities.
        name: the model's name.
    """
    backbone.name = BACKBONE
    inputs = keras.Input(shape=backbone.input.shape[1:], name="pixels")
    features = backbone(inputs)
    probabilities = head(features[feature])
    if not auxiliary:
        return keras.Model(inputs, probabilities, name=name)
    outputs = {PROBABILITIES: probabilities}
    for out_name, (aux_feature, aux_head) in auxiliary.items():
        outputs[out_name] = aux_head(features[aux_feature])
    return keras.Model(inputs, outputs, name=name)


def inference_model(model: keras.Model) -> keras.Model:
    """The classifier without its auxiliary heads (the same layers and weights)."""
    if isinstance(model.output, dict):
        return keras.Model(model.input, model.output[PROBABILITIES], name=model.name)
    return model


def backbone_of(model: keras.Model) -> keras.Model:
    """The backbone nested in a classifier built by `build_image_classifier`."""
    return model.get_layer(BACKBONE)


def head_layers(model: keras.Model) -> Sequence[keras.layers.Layer]:
    """The layers outside the backbone (and the input): what a new class set re-initialises."""
    return [
        layer
        for layer in model.layers
        if layer.name != BACKBONE and not isinstance(layer, keras.layers.InputLayer)
    ]
