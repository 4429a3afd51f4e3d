"""The one base class of every exported SavedModel module.

An `ExportModule` holds the trained Keras model(s) and whatever the signatures need (lookup
tables, constants), and declares each serving signature as a method named after it:

    class Classifier(ExportModule):
        @signature(tf.TensorSpec([None], tf.string, name="image_bytes"))
        def serving_default(self, image_bytes):
            ...

Keras objects are kept out of `tf.Module` tracking in one way only, `ExportModule.__init__`;
the module tracks the models' raw `tf.Variable`s instead. Tracking Keras 3 layers would
save every variable twice (a handle per Keras variable, another per tf.Variable), and a
session-based loader (stock TF Serving, TF1's `saved_model_cli`) then restores the copy the
signatures do not read (keras-team/keras #20095, #19274; tensorflow/serving #2250).
`keras.export.ExportArchive` does the same. The SavedModel's object graph then holds no
Keras layer, so loading it never imports Keras.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

_SIGNATURE_ATTR = "_zoo_signature"

#: Working memory of an image model, in pixel-equivalents (4 bytes) per input pixel of its
#: working size: measured at 270 KB an image for cifar_convnet (32 px, batch 1,024), 3.4 MB
#: for googlenet (160 px, batch 128) and 3.8 MB for the captioner (batch 64), i.e. 66, 33 and
#: fewer pixel-equivalents per pixel; 64 bounds them all.
IMAGE_COST_PER_PIXEL = 64


def image_cost(side: int, kind: str = "image") -> dict[str, Any]:
    """The request-cost declaration of an image input at a model's working size `side`
    (`kind` "image" for encoded bytes, "pixels" for float arrays)."""
    return {"kind": kind, "weight": IMAGE_COST_PER_PIXEL * side * side}


class _InstanceSignature:
    """A signature whose input specs depend on the instance (e.g. its image size)."""

    def __init__(self, method: Callable, specs_of: Callable, autograph: bool):
        self.method, self.specs_of, self.autograph = method, specs_of, autograph

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        function = instance.__dict__.get(self.name)
        if function is None:  # one per instance; saved through `signatures()`
            function = tf.function(
                self.method.__get__(instance),
                input_signature=list(self.specs_of(instance)),
                autograph=self.autograph,
            )
            instance.__dict__[self.name] = function  # tf.Module's __setattr__ would recurse
        return function


def signature(*input_signature: tf.TensorSpec | Callable, autograph: bool = True) -> Callable:
    """Declare an `ExportModule` method as the serving signature of the same name.

    The method becomes a `tf.function` with this input signature; its spec names are the
    signature's input names, and it returns a dict of named output tensors. When the specs
    depend on the instance, pass one callable instead: `self -> list of TensorSpec`.
    """

    def decorate(method: Callable) -> Any:
        if len(input_signature) == 1 and callable(input_signature[0]):
            function: Any = _InstanceSignature(method, input_signature[0], autograph)
        else:
            function = tf.function(
                method, input_signature=list(input_signature), autograph=autograph
            )
        setattr(function, _SIGNATURE_ATTR, True)
        return function

    return decorate


def shared_function(module: tf.Module, method: Callable, input_signature: list) -> Any:
    """`method` as one `tf.function` per module (with this input signature), for the graph
    several signatures run (decoding, an image encoder): each signature's graph calls it
    instead of holding its own copy, so a save traces it once and stores it once."""
    key = f"_shared_{method.__name__}"
    function = module.__dict__.get(key)
    if function is None:
        function = tf.function(method, input_signature=input_signature)
        module.__dict__[key] = function  # tf.Module's __setattr__ would track it
    return function


class ExportModule(tf.Module):
    """Base of the exported modules: untracked Keras models, tracked variables, signatures.

    Args:
        name: the module's name.
        **models: the Keras models the signatures call, available as attributes of the
            same names (e.g. `self.model`), kept out of tracking.
    """

    def __init__(self, name: str, **models: Any):
        super().__init__(name=name)
        for key, model in models.items():
            self.__dict__[key] = model  # bypasses tf.Module's attribute tracking
        variables = {}  # models may share layers (a classifier and its feature extractor)
        for model in models.values():
            for v in model.variables:
                variables.setdefault(id(v), getattr(v, "value", v))
        self.model_variables = list(variables.values())

    def signatures(self) -> dict[str, Any]:
        """Signature name -> its `tf.function` (with its input signature), for every method
        declared with `signature`.

        Functions, not concrete functions: `tf.saved_model.save` traces them itself, inside
        its save context, which is part of the trace cache's key (the variable policy). A
        function traced before the save is traced again there, so every signature was traced
        twice (the tiny seq2seq's five: 6.8 s, then 6.6 s more)."""
        found = {}
        for name in dir(type(self)):
            if getattr(getattr(type(self), name, None), _SIGNATURE_ATTR, False):
                found[name] = getattr(self, name)
        if "serving_default" not in found:
            raise TypeError(f"{type(self).__name__} declares no serving_default signature")
        return found

    def warmup(self) -> list[tuple[str, dict[str, Any]]]:
        """(signature name, {input name: value}) requests replayed when a server loads it."""
        return []

    def request_costs(self) -> dict[str, dict]:
        """What each signature's requests cost the server (the declaration `serving.cost`
        reads from `assets.extra/request_costs.json`): which inputs are text, tokens, images,
        pixels, new-token counts or beams, and their weights. {} declares nothing."""
        return {}

    def extra_assets(self) -> dict[str, str]:
        """File name -> text written into the SavedModel's `assets/` (e.g. labels.txt)."""
        return {}
