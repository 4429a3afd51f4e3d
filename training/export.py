"""`zoo export`: trained run directory -> `<base>/<next version>/` SavedModel, atomically.

The recipe wraps the model in tf.functions with explicit input signatures (core TF ops
only); this module writes them aside, adds TF Serving's warmup file, and renames the
finished directory into place, so a server polling the base path never sees a
half-written version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from serving.cost import write_costs
from serving.layout import WARMUP_PATH, next_version, staged_directory
from training.export_module import ExportModule
from training.recipe import get_recipe
from training.sources import load_trained  # here too: `training.export.load_trained`


def warmup_records(warmup: list[tuple[str, dict[str, Any]]], model_name: str) -> list[bytes]:
    """Serialized TF Serving PredictionLog records replaying the given requests."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    records = []
    for signature, inputs in warmup:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(
                tf.make_tensor_proto(
                    np.asarray(value) if not isinstance(value, tf.Tensor) else value.numpy()
                )
            )
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)
        )
        records.append(log.SerializeToString())
    return records


def track_keras_variables(module: tf.Module) -> None:
    """Track the raw tf.Variables of every Keras layer/model held by `module`.

    Keras 3 variables are wrappers; without this, the SavedModel's TF1-style graph (the one
    stock TF Serving and `saved_model_cli` load into a Session) restores them under other
    names and every call fails with "Could not find variable ..." (keras-team/keras #20095,
    #19274; tensorflow/serving #2250).
    """
    import keras

    raw = []
    for value in list(vars(module).values()):
        if isinstance(value, keras.layers.Layer):
            raw.extend(v.value for v in value.variables)
    module._keras_tf_variables = raw


def write_saved_model(
    module: ExportModule, base_path: str | Path, model_name: str, version: int | None = None
) -> Path:
    """Write `module` as `<base_path>/<version>/` atomically, with its extra assets and its
    warmup requests as TF Serving's warmup file; returns the version directory."""
    base_path = Path(base_path)
    final = base_path / str(version or next_version(base_path))
    # written under a non-numeric temporary name (servers ignore it), renamed when complete
    with staged_directory(final) as tmp:
        warmup = module.warmup()
        tf.saved_model.save(module, str(tmp), signatures=module.signatures())
        costs = module.request_costs()
        if costs:
            write_costs(tmp, costs)
        for name, text in module.extra_assets().items():
            (tmp / "assets").mkdir(exist_ok=True)
            (tmp / "assets" / name).write_text(text)
        if warmup:
            (tmp / WARMUP_PATH).parent.mkdir(exist_ok=True)
            with tf.io.TFRecordWriter(str(tmp / WARMUP_PATH)) as writer:
                for record in warmup_records(warmup, model_name):
                    writer.write(record)
    return final


def run(
    model_dir: str | Path,
    to: str | Path,
    version: int | None = None,
    model_name: str | None = None,
) -> Path:
    """Export the trained run in `model_dir` to `to/<version>/`; returns that directory."""
    return write_saved_model(export_module(model_dir), to, model_name or Path(to).name, version)


def export_module(model_dir: str | Path) -> ExportModule:
    """The export module of the trained run in `model_dir`: the recipe's signatures around
    its Keras model with the run's best weights (what `run` saves)."""
    model, run_info = load_trained(model_dir)
    return get_recipe(run_info["model"]).export(model, run_info["config"], run_info["assets"])
