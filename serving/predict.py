"""The one protocol-neutral core behind both front ends.

gRPC and REST only translate their wire formats into calls here (a model spec plus numpy
arrays or tf.Example protos) and translate the results back, so the two protocols share
version resolution, validation, batching, error messages and metrics and cannot drift apart.
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
    regression_pb2,
)

from serving import inference, metrics
from serving.errors import ERROR_CODE_NUMBER, ServingError, invalid
from serving.manager import Manager
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
    the repeated field of its result (one row per Example) and the response type."""

    name: str
    run: Callable
    rows: str
    response: type


_CLASSIFY = _ExampleApi(
    "classify", inference.classify, "classifications", classification_pb2.ClassificationResponse
)
_REGRESS = _ExampleApi(
    "regress", inference.regress, "regressions", regression_pb2.RegressionResponse
)


def resolved_spec(name: str, version: int, signature_name: str) -> model_pb2.ModelSpec:
    """The response model_spec: name, resolved version, signature actually used."""
    spec = model_pb2.ModelSpec(name=name, signature_name=signature_name)
    spec.version.value = version
    return spec


class PredictionCore:
    """Predict/Classify/Regress/MultiInference/metadata/status over the manager's servables."""

    def __init__(self, manager: Manager):
        self.manager = manager

    @contextlib.contextmanager
    def _measure(self, model: str, api: str, entrypoint: str) -> Iterator[None]:
        start = time.perf_counter()
        status = "OK"
        try:
            yield
        except ServingError as e:
            status = e.code.name
            raise
        except Exception:
            status = "INTERNAL"
            raise
        finally:
            metrics.REQUEST_COUNT.inc(model, status)
            metrics.REQUEST_LATENCY.observe(
                (time.perf_counter() - start) * 1e6, model, api, entrypoint
            )

    def predict(
        self,
        spec: Spec,
        inputs: dict[str, np.ndarray],
        output_filter=(),
        entrypoint: str = "GRPC",
    ) -> tuple[model_pb2.ModelSpec, Signature, dict[str, np.ndarray]]:
        """Run a signature; returns (resolved spec, signature, outputs)."""
        with self._measure(spec.name, "predict", entrypoint):
            with self.manager.acquire(spec.name, spec.version, spec.label) as servable:
                start = time.perf_counter()
                sig, outputs = inference.predict(
                    servable, spec.signature_name, inputs, output_filter
                )
                metrics.RUNTIME_LATENCY.observe(
                    (time.perf_counter() - start) * 1e6,
                    spec.name,
                    "Predict",
                    "TF2" if servable.is_tf2 else "TF1",
                )
                return resolved_spec(spec.name, servable.version, sig.name), sig, outputs

    def classify(
        self, request: classification_pb2.ClassificationRequest, entrypoint: str = "GRPC"
    ) -> classification_pb2.ClassificationResponse:
        """TF Serving's Classify."""
        return self._on_examples(request, entrypoint, _CLASSIFY)

    def regress(
        self, request: regression_pb2.RegressionRequest, entrypoint: str = "GRPC"
    ) -> regression_pb2.RegressionResponse:
        """TF Serving's Regress."""
        return self._on_examples(request, entrypoint, _REGRESS)

    def _on_examples(self, request, entrypoint: str, api: _ExampleApi):
        """Classify or Regress: run `api` on the request's Examples, count them, wrap the
        result with the resolved model spec."""
        spec = Spec.from_proto(request.model_spec)
        with self._measure(spec.name, api.name, entrypoint):
            with self.manager.acquire(spec.name, spec.version, spec.label) as servable:
                sig, result = api.run(servable, request)
                metrics.REQUEST_EXAMPLE_COUNTS.observe(
                    len(getattr(result, api.rows)), spec.name, api.name
                )
                return api.response(
                    model_spec=resolved_spec(spec.name, servable.version, sig.name), result=result
                )

    def multi_inference(
        self, request: inference_pb2.MultiInferenceRequest, entrypoint: str = "GRPC"
    ) -> inference_pb2.MultiInferenceResponse:
        """TF Serving's MultiInference (all tasks on one model version)."""
        if not request.tasks:
            raise invalid("Tasks must be non-empty")
        spec = Spec.from_proto(request.tasks[0].model_spec)
        with self._measure(spec.name, "multi_inference", entrypoint):
            with self.manager.acquire(spec.name, spec.version, spec.label) as servable:
                return inference.multi_inference(servable, request)

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
