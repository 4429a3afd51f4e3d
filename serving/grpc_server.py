"""gRPC front end: tensorflow.serving.PredictionService + ModelService + grpc.health.v1.

Thin translation only: TensorProto <-> numpy and status codes; everything else is PredictionCore.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.errors import ERROR_CODE_NUMBER, ServingError, invalid
from serving.predict import PredictionCore, Spec, error_status
from serving.tensors import fill_proto, to_numpy

log = logging.getLogger("serving.grpc")


def _guard(method: Callable) -> Callable:
    """Map exceptions to gRPC status codes (never crash the handler)."""

    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except Exception as e:
            code, message = error_status(e)
            if not isinstance(e, ServingError):
                log.exception("internal error in %s", method.__name__)
            context.abort(code, message)

    wrapper.__name__ = method.__name__
    return wrapper


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService."""

    def __init__(self, core: PredictionCore):
        self.core = core

    @_guard
    def Predict(self, request, context):  # noqa: N802 (gRPC method names)
        if not request.HasField("model_spec"):
            raise invalid("Missing ModelSpec")
        inputs = {name: to_numpy(t, name) for name, t in request.inputs.items()}
        spec, _sig, outputs = self.core.predict(
            Spec.from_proto(request.model_spec), inputs, list(request.output_filter), "GRPC"
        )
        response = predict_pb2.PredictResponse(model_spec=spec)
        for name, value in outputs.items():
            fill_proto(response.outputs[name], value)
        return response

    @_guard
    def Classify(self, request, context):  # noqa: N802
        if not request.HasField("model_spec"):
            raise invalid("Missing ModelSpec")
        return self.core.classify(request, "GRPC")

    @_guard
    def Regress(self, request, context):  # noqa: N802
        if not request.HasField("model_spec"):
            raise invalid("Missing ModelSpec")
        return self.core.regress(request, "GRPC")

    @_guard
    def MultiInference(self, request, context):  # noqa: N802
        return self.core.multi_inference(request, "GRPC")

    @_guard
    def GetModelMetadata(self, request, context):  # noqa: N802
        if not request.HasField("model_spec"):
            raise invalid("Missing ModelSpec")
        return self.core.metadata(Spec.from_proto(request.model_spec), list(request.metadata_field))


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """tensorflow.serving.ModelService."""

    def __init__(self, core: PredictionCore, reload_config: Callable):
        self.core = core
        self.reload_config = reload_config

    @_guard
    def GetModelStatus(self, request, context):  # noqa: N802
        if not request.HasField("model_spec"):
            raise invalid("Missing ModelSpec")
        spec = Spec.from_proto(request.model_spec)
        return self.core.status(spec.name, spec.version)

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        response = model_management_pb2.ReloadConfigResponse()
        try:
            self.reload_config(request.config)
        except Exception as e:
            code, message = error_status(e)
            response.status.error_code = ERROR_CODE_NUMBER[code]
            response.status.error_message = message
        return response


def build_server(
    core: PredictionCore,
    reload_config: Callable,
    port: int,
    max_message_size: int = 0,
    max_workers: int = 64,
) -> tuple[grpc.Server, health.HealthServicer]:
    """A started-ready (not yet started) gRPC server bound to 0.0.0.0:port."""
    options = [("grpc.so_reuseport", 0)]
    if max_message_size > 0:
        options += [
            ("grpc.max_receive_message_length", max_message_size),
            ("grpc.max_send_message_length", max_message_size),
        ]
    else:  # TF Serving lifts gRPC's 4 MB default
        options += [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(core), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelService(core, reload_config), server
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    if server.add_insecure_port(f"0.0.0.0:{port}") == 0:
        raise OSError(f"could not bind gRPC port {port}")
    return server, health_servicer
