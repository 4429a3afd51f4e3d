"""Request logging as TF Serving does it: a model's `logging_config` in the model config file,
sampled, each sampled request and its response written as one `PredictionLog`.

TF Serving (core/server_request_logger.cc, core/request_logger.cc) samples each request with
`sampling_config.sampling_rate` and hands a `PredictionLog` (request, response, and
`log_metadata`: model spec, sampling config, tags) to the LogCollector registered for
`log_collector_config.type`. Its open-source build registers no collector; the zoo registers
`tfrecord`, which appends the records to `<filename_prefix>-<NNNNN>.tfrecord`. That is the
format of a warmup file (`assets.extra/tf_serving_warmup_requests`), so a log taken under real
traffic can be copied into a new version to warm it up. An unknown type is refused as TF
Serving refuses it (NOT_FOUND "Cannot find LogCollector::Factory for type: ...").
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.errors import ServingError, invalid
from serving.tensors import fill_proto

log = logging.getLogger("serving.request_log")

COLLECTOR_TYPE = "tfrecord"
_ids = itertools.count()


class ModelLog:
    """One model's sampled log file."""

    def __init__(self, name: str, config, tags: tuple[str, ...]):
        collector = config.log_collector_config
        if collector.type != COLLECTOR_TYPE:
            raise ServingError(
                grpc.StatusCode.NOT_FOUND,
                f"Cannot find LogCollector::Factory for type: {collector.type}",
            )
        if not collector.filename_prefix:
            raise invalid(f"Model {name}: logging_config needs a filename_prefix")
        rate = config.sampling_config.sampling_rate
        if not 0.0 <= rate <= 1.0:
            raise invalid(f"Model {name}: sampling_rate must be in [0, 1], got {rate}")
        self.rate = rate
        self.signature = config.SerializeToString(deterministic=True)
        self.path = Path(f"{collector.filename_prefix}-{next(_ids):05d}.tfrecord")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._sampling = config.sampling_config
        self._tags = tags
        self._lock = threading.Lock()
        self._writer = tf.io.TFRecordWriter(str(self.path))
        log.info("Logging %g of the requests to model %s in %s", rate, name, self.path)

    def sample(self) -> bool:
        return self.rate > 0 and random.random() < self.rate

    def _write(self, record: prediction_log_pb2.PredictionLog, model_spec) -> None:
        meta = record.log_metadata
        meta.model_spec.CopyFrom(model_spec)
        meta.sampling_config.CopyFrom(self._sampling)
        meta.saved_model_tags.extend(self._tags)
        data = record.SerializeToString()
        with self._lock:
            if self._writer is None:
                return
            self._writer.write(data)
            self._writer.flush()

    def log_predict(
        self,
        model_spec,
        inputs: dict[str, np.ndarray],
        output_filter,
        outputs: dict[str, np.ndarray],
        request: predict_pb2.PredictRequest | None,
    ) -> None:
        """A Predict pair; the request is rebuilt from the arrays when it came over REST."""
        record = prediction_log_pb2.PredictionLog()
        entry = record.predict_log
        if request is not None:
            entry.request.CopyFrom(request)
        else:
            entry.request.model_spec.name = model_spec.name
            entry.request.model_spec.signature_name = model_spec.signature_name
            for name, value in inputs.items():
                fill_proto(entry.request.inputs[name], value)
            entry.request.output_filter.extend(output_filter)
        entry.response.model_spec.CopyFrom(model_spec)
        for name, value in outputs.items():
            fill_proto(entry.response.outputs[name], value)
        self._write(record, model_spec)

    def log_pair(self, field: str, model_spec, request, response) -> None:
        """A Classify / Regress / MultiInference pair (`field` names the PredictionLog slot)."""
        record = prediction_log_pb2.PredictionLog()
        entry = getattr(record, field)
        entry.request.CopyFrom(request)
        entry.response.CopyFrom(response)
        self._write(record, model_spec)

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None


class RequestLogger:
    """Every model's request log, replaced as a whole on each config (re)load."""

    def __init__(self, tags: tuple[str, ...] = ("serve",)):
        self._tags = tags
        self._logs: dict[str, ModelLog] = {}
        self._lock = threading.Lock()

    def update(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Apply the config's logging_configs; a model whose config is unchanged keeps its
        file, a removed or changed one is closed."""
        wanted = {
            m.name: m.logging_config
            for m in config.model_config_list.config
            if m.HasField("logging_config")
        }
        with self._lock:
            current = dict(self._logs)
        logs: dict[str, ModelLog] = {}
        created = []
        try:
            for name, cfg in wanted.items():
                old = current.get(name)
                if old is not None and old.signature == cfg.SerializeToString(deterministic=True):
                    logs[name] = old
                else:
                    logs[name] = ModelLog(name, cfg, self._tags)
                    created.append(logs[name])
        except ServingError:
            for new in created:
                new.close()
            raise
        with self._lock:
            self._logs = logs
        for name, old in current.items():
            if logs.get(name) is not old:
                old.close()

    def sampled(self, model: str) -> ModelLog | None:
        """The model's log when this request is to be logged, else None (cheap when off)."""
        if not self._logs:
            return None
        entry = self._logs.get(model)
        return entry if entry is not None and entry.sample() else None

    def close(self) -> None:
        with self._lock:
            logs, self._logs = self._logs, {}
        for entry in logs.values():
            entry.close()
