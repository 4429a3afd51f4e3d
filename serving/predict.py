"""The one protocol-neutral core behind both front ends.

gRPC and REST only translate their wire formats into calls here (a model spec plus numpy
arrays or tf.Example protos) and translate the results back, so the two protocols share
version resolution, validation, batching, error messages and request logs and cannot drift
apart.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import numpy as np
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
)

from serving import inference, metrics
from serving.errors import ERROR_CODE_NUMBER, ServingError, invalid
from serving.manager import Manager
from serving.request_log import RequestLogger
from serving.servable import Signature


@dataclass(frozen=True)
class Spec:
    """Which servable a request addresses."""

    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str = ""

    @classmethod
    def from_proto(cls, spec: model_pb2.ModelSpec) -> Spec:
        """From a gRPC ModelSpec."""
        choice = spec.WhichOneof("version_choice")
        return cls(
            name=spec.name,
            version=spec.version.value if choice == "version" else None,
            label=spec.version_label if choice == "version_label" else None,
            signature_name=spec.signature_name,
        )


@dataclass(frozen=True)
class _ExampleApi:
    """What differs between Classify and Regress: the metric label, the inference function,
    the response type, and where a PredictionLog keeps the pair."""

    name: str
    run: Callable
    response: type
    log_field: str


_CLASSIFY = _ExampleApi(
    "Classify", inference.classify, classification_pb2.ClassificationResponse, "classify_log"
)
_REGRESS = _ExampleApi(
    "Regress", inference.regress, regression_pb2.RegressionResponse, "regress_log"
)


def resolved_spec(name: str, version: int, signature_name: str) -> model_pb2.ModelSpec:
    """The response model_spec: name, resolved version, signature actually used."""
    spec = model_pb2.ModelSpec(name=name, signature_name=signature_name)
    spec.version.value = version
    return spec


@contextlib.contextmanager
def _runtime(model: str, api: str) -> Iterator[None]:
    """runtime_latency around a graph run (TF Serving's runtime label for sessions: TF1)."""
    start = time.perf_counter()
    yield
    metrics.RUNTIME_LATENCY.observe((time.perf_counter() - start) * 1e6, model, api, "TF1")


class PredictionCore:
    """Predict/Classify/Regress/MultiInference/metadata/status over the manager's servables.

        `predict` is a coroutine (both front ends run on one event loop, `serving.aio`); the rest
    blocks, and the front ends run it in their worker threads. Request metrics are recorded by
    the front ends (they differ by protocol in TF Serving);
        sampled requests are written to the model's request log (`request_log.RequestLogger`).
    """

    def __init__(self, manager: Manager, request_logger: RequestLogger | None = None):
        self.manager = manager
        self.request_logger = request_logger or RequestLogger()

    async def predict(
        self,
        spec: Spec,
        inputs: dict[str, np.ndarray],
        output_filter=(),
        request: predict_pb2.PredictRequest | None = None,
    ) -> tuple[model_pb2.ModelSpec, Signature, dict[str, np.ndarray]]:
        """Run a signature; returns (resolved spec, signature, outputs). A coroutine of the
        front ends' event loop: a request waiting for its batch holds no thread.

        `request` is the gRPC request when there is one (else it is rebuilt from the arrays
        if this request is sampled for the request log).
        """
        with self.manager.acquire(spec.name, spec.version, spec.label) as servable:
            with _runtime(spec.name, "Predict"):
                sig, checked, names = inference.prepare(
                    servable, spec.signature_name, inputs, output_filter
                )
                outputs = await servable.run_async(sig, checked, names)
            model_spec = resolved_spec(spec.name, servable.version, sig.name)
        log = self.request_logger.sampled(spec.name)
        if log is not None:
            log.log_predict(model_spec, inputs, output_filter, outputs, request)
        return model_spec, sig, outputs

    def classify(
        self, request: classification_pb2.ClassificationRequest
    ) -> classification_pb2.ClassificationResponse:
        """TF Serving's Classify."""
        return self._on_examples(request, _CLASSIFY)

    def regress(
        self, request: regression_pb2.RegressionRequest
    ) -> regression_pb2.RegressionResponse:
        """TF Serving's Regress."""
        return self._on_examples(request, _REGRESS)

    def _on_examples(self, request, api: _ExampleApi):
        """Classify or Regress: run `api` on the request's Examples and wrap the result with
        the resolved model spec."""
        spec = Spec.from_proto(request.model_spec)
        with self.manager.acquire(spec.name, spec.version, spec.label) as servable:
            with _runtime(spec.name, api.name):
                sig, result = api.run(servable, request)
            response = api.response(
                model_spec=resolved_spec(spec.name, servable.version, sig.name), result=result
            )
        # TF Serving's RunClassify / RunRegress record it too (request_example_count_total)
        metrics.record_examples(spec.name, inference.count_examples(request.input))
        log = self.request_logger.sampled(spec.name)
        if log is not None:
            log.log_pair(api.log_field, response.model_spec, request, response)
        return response

    def multi_inference(
        self, request: inference_pb2.MultiInferenceRequest
    ) -> inference_pb2.MultiInferenceResponse:
        """TF Serving's MultiInference (all tasks on one model version)."""
        if not request.tasks:
            raise invalid("Tasks must be non-empty")
        spec = Spec.from_proto(request.tasks[0].model_spec)
        with self.manager.acquire(spec.name, spec.version, spec.label) as servable:
            response = inference.multi_inference(servable, request)
            version = servable.version
        metrics.record_examples(spec.name, inference.count_examples(request.input))
        log = self.request_logger.sampled(spec.name)
        if log is not None:
            log.log_pair(
                "multi_inference_log", resolved_spec(spec.name, version, ""), request, response
            )
        return response

    def metadata(
        self, spec: Spec, fields=("signature_def",)
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """GetModelMetadata: only the signature_def field exists."""
        if not fields:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for f in fields:
            if f != "signature_def":
                raise invalid(f"Metadata field {f} is not supported")
        with self.manager.acquire(spec.name, spec.version, spec.label) as servable:
            sig_map = get_model_metadata_pb2.SignatureDefMap()
            for name, sig in servable.meta_graph.signature_def.items():
                sig_map.signature_def[name].CopyFrom(sig)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.CopyFrom(resolved_spec(spec.name, servable.version, ""))
            response.model_spec.ClearField("signature_name")
            response.metadata["signature_def"].Pack(sig_map)
            return response

    def status(self, name: str, version: int | None) -> get_model_status_pb2.GetModelStatusResponse:
        """GetModelStatus: every known version (a label is not resolved, as in TF Serving)."""
        if not name:
            raise invalid("Missing model name in request.")
        response = get_model_status_pb2.GetModelStatusResponse()
        for entry in self.manager.status(name, version):
            item = response.model_version_status.add()
            item.version = entry.version
            item.state = get_model_status_pb2.ModelVersionStatus.State.Value(entry.state)
            item.status.SetInParent()  # TF Serving always prints {"error_code": "OK", ...}
            if entry.error is not None:
                item.status.error_code = ERROR_CODE_NUMBER[entry.error.code]
                item.status.error_message = entry.error.message
        return response


def error_status(e: Exception) -> tuple[grpc.StatusCode, str]:
    """(code, message) for any exception raised while serving a request."""
    if isinstance(e, ServingError):
        return e.code, e.message
    return grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}"
