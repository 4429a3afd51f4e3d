"""gRPC front end: tensorflow.serving.PredictionService + ModelService, the Open Inference
Protocol's inference.GRPCInferenceService, and (on request) grpc.health.v1.

Thin translation only: TensorProto <-> numpy and status codes; everything else is PredictionCore.
The server is grpc.aio on the front ends' event loop (`serving.aio`): Predict decodes, waits
for its batch and encodes there, holding no thread; the other methods run in
--grpc_max_threads worker threads.
What follows TF Serving (model_servers/server.cc BuildAndStart, prediction_service_impl.cc):
- the client's deadline becomes the run timeout of Predict/Classify/Regress/MultiInference;
- request_count / request_latency are recorded for Predict, Classify and Regress only, with
  API `Predict`/`Classify`/`Regress` and latency only when the request succeeded;
- the standard health service exists only with --enable_grpc_healthcheck_service, and
  serves "" plus the short names "ModelService" and "PredictionService";
- --grpc_channel_arguments `k=v,k=v` (ints passed as ints), credentials from
  --ssl_config_file (SSLConfig: server_key, server_cert, custom_ca, client_verify), the TCP
  port and/or a Unix socket (--grpc_socket_path), and no 4 MB message limit.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable

import grpc
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import aio, deadline, metrics
from serving.errors import ERROR_CODE_NUMBER, ServingError, invalid
from serving.predict import PredictionCore, Spec, error_status
from serving.tensors import fill_proto, to_numpy

log = logging.getLogger("serving.grpc")

HEALTH_SERVICES = ("", "ModelService", "PredictionService")


class Front:
    """What every gRPC method shares: the workers that run its blocking parts."""

    def __init__(self, workers: aio.Workers):
        self.workers = workers

    def blocking(self, method: Callable) -> Callable[..., Awaitable]:
        """A blocking method(request, context) as a coroutine run in the workers."""

        @functools.wraps(method)
        async def run(request, context):
            return await self.workers.call(method, request, context)

        return run

    def guard(self, method: Callable, api: str | None = None, timed: bool = False) -> Callable:
        """Map exceptions to gRPC status codes (never crash the handler); with `api`, record
        TF Serving's request metrics under that API name; with `timed`, run under the
        client's deadline, which a cancelled call cancels."""
        workers = self.workers

        @functools.wraps(method)
        async def wrapper(request, context):
            start = time.perf_counter()
            code_name = "OK"
            aio.serving_as(workers)
            try:
                if timed:
                    with deadline.client_scope(context.time_remaining()) as limit:
                        try:
                            return await method(request, context)
                        except asyncio.CancelledError:
                            if limit is not None:
                                limit.cancel()
                            raise
                return await method(request, context)
            except asyncio.CancelledError:
                code_name = "CANCELLED"
                raise
            except Exception as e:
                code, message = error_status(e)
                code_name = code.name
                if not isinstance(e, ServingError):
                    log.exception("internal error in %s", method.__name__)
                await context.abort(code, message)
            finally:
                if api is not None:
                    model = _model_name(request)
                    elapsed = time.perf_counter() - start
                    metrics.record_request(model, api, "GRPC", code_name, elapsed)

        return wrapper


def _model_name(request) -> str:
    spec = getattr(request, "model_spec", None)
    if spec is not None:
        return spec.name
    return getattr(request, "model_name", "")


def _need_spec(request) -> None:
    if not request.HasField("model_spec"):
        raise invalid("Missing ModelSpec")


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService: Predict on the event loop (it waits for its
    batch holding no thread), the rest in the workers."""

    def __init__(self, core: PredictionCore, front: Front):
        self.core = core
        self.Predict = front.guard(self._predict, "Predict", timed=True)
        self.Classify = front.guard(front.blocking(self._classify), "Classify", timed=True)
        self.Regress = front.guard(front.blocking(self._regress), "Regress", timed=True)
        self.MultiInference = front.guard(front.blocking(self._multi_inference), timed=True)
        self.GetModelMetadata = front.guard(front.blocking(self._metadata))

    async def _predict(self, request, context):
        _need_spec(request)
        inputs = {name: to_numpy(t, name) for name, t in request.inputs.items()}
        spec, _sig, outputs = await self.core.predict(
            Spec.from_proto(request.model_spec), inputs, list(request.output_filter), request
        )
        response = predict_pb2.PredictResponse(model_spec=spec)
        for name, value in outputs.items():
            fill_proto(response.outputs[name], value)
        return response

    def _classify(self, request, context):
        _need_spec(request)
        return self.core.classify(request)

    def _regress(self, request, context):
        _need_spec(request)
        return self.core.regress(request)

    def _multi_inference(self, request, context):
        return self.core.multi_inference(request)

    def _metadata(self, request, context):
        _need_spec(request)
        return self.core.metadata(Spec.from_proto(request.model_spec), list(request.metadata_field))


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """tensorflow.serving.ModelService."""

    def __init__(self, core: PredictionCore, reload_config: Callable, front: Front):
        self.core = core
        self.reload_config = reload_config
        self.GetModelStatus = front.guard(front.blocking(self._status))
        self.HandleReloadConfigRequest = front.blocking(self._reload)

    def _status(self, request, context):
        _need_spec(request)
        spec = Spec.from_proto(request.model_spec)
        return self.core.status(spec.name, spec.version)

    def _reload(self, request, context):
        """Errors come back in the response's status, not as an RPC error (model_service_impl.cc)."""
        response = model_management_pb2.ReloadConfigResponse()
        try:
            self.reload_config(request.config)
        except Exception as e:
            code, message = error_status(e)
            response.status.error_code = ERROR_CODE_NUMBER[code]
            response.status.error_message = message
        return response


def parse_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """`k=v,k=v` -> gRPC options, values that parse as int passed as int (server.cc)."""
    options = []
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        try:
            options.append((key, int(value)))
        except ValueError:
            options.append((key, value))
    return options


def server_credentials(ssl_config) -> grpc.ServerCredentials:
    """TF Serving's BuildServerCredentials for an SSLConfig."""
    return grpc.ssl_server_credentials(
        [(ssl_config.server_key.encode(), ssl_config.server_cert.encode())],
        root_certificates=ssl_config.custom_ca.encode() or None,
        require_client_auth=ssl_config.client_verify,
    )


async def build_server(
    core: PredictionCore,
    reload_config: Callable,
    port: int,
    max_message_size: int = 0,
    max_workers: int = 64,
    *,
    socket_path: str = "",
    channel_arguments: str = "",
    ssl_config=None,
    health_check: bool = False,
    extra_services: tuple = (),
):
    """A not yet started grpc.aio server on 0.0.0.0:port (port 0: none) and/or a Unix
    socket, and its health servicer (None unless health_check). Call it on the event loop
    that will run the server. `extra_services` are callables Front -> generic handler.

    `max_workers` threads (--grpc_max_threads) run the methods' blocking parts; requests
    waiting for a batch hold none, so they do not bound how many requests are in flight.
    """
    options = [("grpc.so_reuseport", 0)]
    if max_message_size > 0:
        options += [
            ("grpc.max_receive_message_length", max_message_size),
            ("grpc.max_send_message_length", max_message_size),
        ]
    else:  # TF Serving lifts gRPC's 4 MB default
        options += [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    options += parse_channel_arguments(channel_arguments)
    front = Front(aio.Workers("grpc", max_workers))
    server = grpc.aio.server(
        handlers=[make(front) for make in extra_services],
        options=options,
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(core, front), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelService(core, reload_config, front), server
    )
    health_servicer = None
    if health_check:
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc

        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        for service in HEALTH_SERVICES:
            await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)

    def listen(address: str) -> None:
        if ssl_config is not None:
            bound = server.add_secure_port(address, server_credentials(ssl_config))
        else:
            bound = server.add_insecure_port(address)
        if bound == 0 and not address.startswith("unix:"):
            raise OSError(f"could not bind gRPC to {address}")

    if port:
        listen(f"0.0.0.0:{port}")
    if socket_path:
        listen(f"unix:{socket_path}")
    return server, health_servicer
