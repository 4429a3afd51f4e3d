"""Replay a version's warmup file (`layout.WARMUP_PATH`: PredictionLog records) at load time."""

from __future__ import annotations

import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from serving import inference
from serving.layout import WARMUP_PATH
from serving.servable import Servable
from serving.tensors import to_numpy

MAX_RECORDS = 1000  # TF Serving's limit


def replay(servable: Servable, iterations: int = 1) -> int:
    """Run every warmup record `iterations` times (--num_request_iterations_for_warmup); a
    failing record fails the load (as in TF Serving's saved_model_warmup_util.cc)."""
    path = servable.path / WARMUP_PATH
    if not path.exists():
        return 0
    count = 0
    for record in tf.compat.v1.io.tf_record_iterator(str(path)):
        count += 1
        if count > MAX_RECORDS:
            raise ValueError(f"Number of warmup records exceeds the maximum ({MAX_RECORDS})")
        log = prediction_log_pb2.PredictionLog.FromString(record)
        for _ in range(max(1, iterations)):
            _run(servable, log)
    return count


def _run(servable: Servable, log: prediction_log_pb2.PredictionLog) -> None:
    """Replay one record."""
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
        req = log.predict_log.request
        inputs = {k: to_numpy(v, k) for k, v in req.inputs.items()}
        inference.predict(servable, req.model_spec.signature_name, inputs, req.output_filter)
    elif kind == "classify_log":
        inference.classify(servable, log.classify_log.request)
    elif kind == "regress_log":
        inference.regress(servable, log.regress_log.request)
    elif kind == "multi_inference_log":
        inference.multi_inference(servable, log.multi_inference_log.request)
    else:
        raise ValueError(f"Unsupported log_type for warmup: {kind}")
