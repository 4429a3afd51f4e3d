"""The Open Inference Protocol (KServe V2) beside TF Serving's API, on the same predict core.

REST (`/v2/health/live`, `/v2/health/ready`, `/v2`, `/v2/models/{m}[/versions/{v}]`,
`.../ready`, `POST .../infer`, with the binary tensor data extension that NVIDIA's clients use
by default) and gRPC (`inference.GRPCInferenceService`: ServerLive, ServerReady, ModelReady,
ServerMetadata, ModelMetadata, ModelInfer). A request runs `serving_default` unless its
`parameters` name another `signature_name`; its requested outputs become the output filter.
`BYTES` tensors carry raw bytes (JPEG images) or UTF-8 text, as DT_STRING does.

Readiness is the manager's: the server is ready when every configured model has an AVAILABLE
version, a model when it (or the asked version) is AVAILABLE, so `/v2/health/ready` is the fixed
URL a Kubernetes readiness probe wants (TF Serving #1754, #671) and `/v2/health/live` the
liveness one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import grpc
import numpy as np
import orjson
from tensorflow.core.framework import types_pb2

from serving import __version__, v2_protos
from serving.errors import ServingError, invalid
from serving.predict import PredictionCore, Spec
from serving.servable import DEFAULT_SIGNATURE, shape_of

SERVER_NAME = "tfzoo"
SERVER_VERSION = __version__
EXTENSIONS = ["binary_tensor_data"]
PLATFORM = "tensorflow_savedmodel"
HEADER_LENGTH = "inference-header-content-length"

# V2 datatype <-> TensorFlow dtype enum <-> numpy dtype
_DATATYPES = {
    "BOOL": (types_pb2.DT_BOOL, np.bool_),
    "UINT8": (types_pb2.DT_UINT8, np.uint8),
    "UINT16": (types_pb2.DT_UINT16, np.uint16),
    "UINT32": (types_pb2.DT_UINT32, np.uint32),
    "UINT64": (types_pb2.DT_UINT64, np.uint64),
    "INT8": (types_pb2.DT_INT8, np.int8),
    "INT16": (types_pb2.DT_INT16, np.int16),
    "INT32": (types_pb2.DT_INT32, np.int32),
    "INT64": (types_pb2.DT_INT64, np.int64),
    "FP16": (types_pb2.DT_HALF, np.float16),
    "FP32": (types_pb2.DT_FLOAT, np.float32),
    "FP64": (types_pb2.DT_DOUBLE, np.float64),
    "BYTES": (types_pb2.DT_STRING, np.object_),
}
_BY_ENUM = {enum: name for name, (enum, _) in _DATATYPES.items()}
# InferTensorContents field per datatype (gRPC, when not sent as raw bytes)
_CONTENTS = {
    "BOOL": "bool_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
    "UINT32": "uint_contents", "UINT64": "uint64_contents", "INT8": "int_contents",
    "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}  # fmt: skip


def datatype_of(array: np.ndarray) -> str:
    """The V2 datatype of an output array."""
    if array.dtype == object or array.dtype.kind in "SU":
        return "BYTES"
    for name, (_, np_type) in _DATATYPES.items():
        if array.dtype == np_type:
            return name
    raise ServingError(grpc.StatusCode.UNIMPLEMENTED, f"No V2 datatype for {array.dtype}")


def _parse_version(version: str | None) -> int | None:
    if not version:
        return None
    if not version.isdigit():
        raise invalid(f"Invalid model version: {version!r} is not an integer")
    return int(version)


# ---- BYTES tensors as raw bytes: each element is a 4-byte little-endian length + its bytes
def encode_bytes(array: np.ndarray) -> bytes:
    parts = []
    for v in array.ravel():
        b = v if isinstance(v, bytes) else str(v).encode()
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def decode_bytes(raw: bytes, count: int, name: str) -> np.ndarray:
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > len(raw):
            raise invalid(f"Input '{name}': raw BYTES data holds fewer than {count} elements")
        (n,) = struct.unpack_from("<I", raw, pos)
        out[i] = bytes(raw[pos + 4 : pos + 4 + n])
        pos += 4 + n
    if pos != len(raw):
        raise invalid(f"Input '{name}': raw BYTES data is longer than {count} elements")
    return out


def from_raw(raw: bytes, datatype: str, shape: list[int], name: str) -> np.ndarray:
    """An input sent as raw bytes (gRPC raw_input_contents, REST binary data)."""
    count = int(np.prod(shape)) if shape else 1
    if datatype == "BYTES":
        return decode_bytes(raw, count, name).reshape(shape)
    np_type = _numpy_type(datatype, name)
    if len(raw) != np.dtype(np_type).itemsize * count:
        raise invalid(f"Input '{name}': {len(raw)} bytes of data do not fit shape {shape}")
    return np.frombuffer(raw, np_type).reshape(shape).copy()


def to_raw(array: np.ndarray) -> bytes:
    if datatype_of(array) == "BYTES":
        return encode_bytes(array)
    return np.ascontiguousarray(array).tobytes()


def _numpy_type(datatype: str, name: str):
    entry = _DATATYPES.get(datatype)
    if entry is None:
        raise invalid(f"Input '{name}': unsupported datatype {datatype!r}")
    return entry[1]


@dataclass
class InferRequest:
    """A protocol-neutral inference request."""

    model: str
    version: int | None
    inputs: dict[str, np.ndarray]
    outputs: list[str]
    signature_name: str
    id: str = ""


class OpenInferenceApi:
    """The V2 operations over the predict core."""

    def __init__(self, core: PredictionCore):
        self.core = core

    def server_ready(self) -> bool:
        return self.core.manager.ready()

    def model_ready(self, name: str, version: str | None) -> bool:
        return self.core.manager.ready(name, _parse_version(version))

    def server_metadata(self) -> dict:
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}

    def model_metadata(self, name: str, version: str | None) -> dict:
        """name, available versions, platform, and serving_default's inputs and outputs."""
        spec = Spec(name, _parse_version(version))
        with self.core.manager.acquire(spec.name, spec.version) as servable:
            sig = servable.signatures.get(DEFAULT_SIGNATURE)
            tensors = {"inputs": [], "outputs": []}
            if sig is not None:
                for kind, infos in (("inputs", sig.proto.inputs), ("outputs", sig.proto.outputs)):
                    for tname in sorted(infos):
                        info = infos[tname]
                        shape = shape_of(info)
                        tensors[kind].append(
                            {
                                "name": tname,
                                "datatype": _BY_ENUM.get(info.dtype, "BYTES"),
                                "shape": [-1] if shape is None else shape,
                            }
                        )
        versions = [
            str(e.version) for e in self.core.manager.status(name) if e.state == "AVAILABLE"
        ]
        return {"name": name, "versions": versions, "platform": PLATFORM, **tensors}

    def infer(self, request: InferRequest) -> tuple[str, dict[str, np.ndarray]]:
        """(resolved version, outputs in the requested order, or all outputs sorted)."""
        spec = Spec(request.model, request.version, None, request.signature_name)
        model_spec, _sig, outputs = self.core.predict(spec, request.inputs, request.outputs)
        return str(model_spec.version.value), outputs


def _signature_name(parameters: dict) -> str:
    name = parameters.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid("parameter 'signature_name' must be a string")
    return name


# ---- REST ------------------------------------------------------------------------------------
def _json_array(value, datatype: str, shape: list[int], name: str) -> np.ndarray:
    np_type = _numpy_type(datatype, name)
    try:
        if datatype == "BYTES":
            flat = np.asarray(value, dtype=object).ravel()
            array = np.array([v.encode() if isinstance(v, str) else v for v in flat], dtype=object)
            if any(not isinstance(v, bytes) for v in array):
                raise ValueError("BYTES data must be strings")
        else:
            array = np.asarray(value, dtype=np_type)
        return array.reshape(shape)
    except (ValueError, TypeError) as e:
        raise invalid(
            f"Input '{name}': data does not match datatype {datatype} and shape {shape}: {e}"
        ) from None


def rest_infer_request(
    model: str, version: str | None, body: bytes, header_length: str | None
) -> tuple[InferRequest, bool, set[str]]:
    """Parse a REST infer body; returns (request, all outputs binary, outputs wanted binary)."""
    blob = b""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise invalid(f"Invalid {HEADER_LENGTH} header: {header_length!r}") from None
        body, blob = body[:n], body[n:]
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise invalid(f"JSON Parse error: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise invalid("The request body must be a JSON object with an 'inputs' list")
    parameters = doc.get("parameters") or {}
    inputs: dict[str, np.ndarray] = {}
    pos = 0
    for item in doc["inputs"]:
        if not isinstance(item, dict) or not {"name", "shape", "datatype"} <= set(item):
            raise invalid("Each input needs a name, a shape and a datatype")
        name, shape, datatype = item["name"], item["shape"], item["datatype"]
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if pos + size > len(blob):
                raise invalid(f"Input '{name}': binary data is shorter than binary_data_size")
            inputs[name] = from_raw(blob[pos : pos + size], datatype, shape, name)
            pos += size
        elif "data" in item:
            inputs[name] = _json_array(item["data"], datatype, shape, name)
        else:
            raise invalid(f"Input '{name}' has neither data nor binary_data_size")
    all_binary = bool(parameters.get("binary_data_output", False))
    wanted, binary = [], set()
    for out in doc.get("outputs") or []:
        wanted.append(out["name"])
        if (out.get("parameters") or {}).get("binary_data", all_binary):
            binary.add(out["name"])
    request = InferRequest(
        model, _parse_version(version), inputs, wanted, _signature_name(parameters),
        str(doc.get("id", "")),
    )  # fmt: skip
    return request, all_binary, binary


def _json_data(array: np.ndarray) -> list:
    if datatype_of(array) != "BYTES":
        return array.ravel().tolist()
    out = []
    for v in array.ravel():
        b = v if isinstance(v, bytes) else str(v).encode()
        try:
            out.append(b.decode("utf-8"))
        except UnicodeDecodeError:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "an output holds bytes that are not UTF-8: ask for it as binary data",
            ) from None
    return out


def rest_infer_response(
    request: InferRequest, version: str, outputs: dict[str, np.ndarray], all_binary: bool,
    binary: set[str],
) -> tuple[bytes, dict[str, str]]:  # fmt: skip
    """(body, extra headers) of a REST infer answer, with binary outputs appended."""
    items, blobs = [], []
    for name, array in outputs.items():
        item = {"name": name, "datatype": datatype_of(array), "shape": list(array.shape)}
        if name in binary or (all_binary and not request.outputs):
            raw = to_raw(array)
            item["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            item["data"] = _json_data(array)
        items.append(item)
    doc = {"model_name": request.model, "model_version": version, "outputs": items}
    if request.id:
        doc["id"] = request.id
    header = orjson.dumps(doc)
    if not blobs:
        return header, {}
    return header + b"".join(blobs), {"Inference-Header-Content-Length": str(len(header))}


# ---- gRPC ------------------------------------------------------------------------------------
def _grpc_param(value):
    kind = value.WhichOneof("parameter_choice")
    return getattr(value, kind) if kind else None


def grpc_infer_request(request) -> InferRequest:
    """A ModelInferRequest -> InferRequest (raw_input_contents or typed contents)."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise invalid("raw_input_contents must hold one entry per input")
    inputs = {}
    for i, tensor in enumerate(request.inputs):
        shape = list(tensor.shape)
        if raw:
            inputs[tensor.name] = from_raw(raw[i], tensor.datatype, shape, tensor.name)
            continue
        field = _CONTENTS.get(tensor.datatype)
        if field is None:
            raise invalid(f"Input '{tensor.name}': unsupported datatype {tensor.datatype!r}")
        values = list(getattr(tensor.contents, field))
        inputs[tensor.name] = _json_array(values, tensor.datatype, shape, tensor.name)
    parameters = {k: _grpc_param(v) for k, v in request.parameters.items()}
    return InferRequest(
        request.model_name,
        _parse_version(request.model_version),
        inputs,
        [o.name for o in request.outputs],
        _signature_name(parameters),
        request.id,
    )


def grpc_infer_response(request: InferRequest, version: str, outputs: dict[str, np.ndarray]):
    response = v2_protos.ModelInferResponse(
        model_name=request.model, model_version=version, id=request.id
    )
    for name, array in outputs.items():
        response.outputs.add(name=name, datatype=datatype_of(array), shape=list(array.shape))
        response.raw_output_contents.append(to_raw(array))
    return response


class GrpcInferenceService:
    """inference.GRPCInferenceService, registered as a generic handler."""

    def __init__(self, api: OpenInferenceApi, guard):
        self.api = api
        self._guard = guard  # maps exceptions to status codes, records metrics

    def ServerLive(self, request, context):  # noqa: N802 (gRPC method names)
        return v2_protos.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):  # noqa: N802
        return v2_protos.ServerReadyResponse(ready=self.api.server_ready())

    def ModelReady(self, request, context):  # noqa: N802
        return v2_protos.ModelReadyResponse(
            ready=self.api.model_ready(request.name, request.version)
        )

    def ServerMetadata(self, request, context):  # noqa: N802
        return v2_protos.ServerMetadataResponse(**self.api.server_metadata())

    def ModelMetadata(self, request, context):  # noqa: N802
        meta = self.api.model_metadata(request.name, request.version)
        response = v2_protos.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"]
        )
        for kind in ("inputs", "outputs"):
            for t in meta[kind]:
                getattr(response, kind).add(**t)
        return response

    def ModelInfer(self, request, context):  # noqa: N802
        infer = grpc_infer_request(request)
        version, outputs = self.api.infer(infer)
        return grpc_infer_response(infer, version, outputs)

    def handler(self) -> grpc.GenericRpcHandler:
        handlers = {}
        for method, (req_cls, resp_cls) in v2_protos.METHODS.items():
            infer = method == "ModelInfer"  # the one call with metrics and a deadline
            fn = self._guard(getattr(self, method), method if infer else None, timed=infer)
            handlers[method] = grpc.unary_unary_rpc_method_handler(
                fn,
                request_deserializer=req_cls.FromString,
                response_serializer=resp_cls.SerializeToString,
            )
        return grpc.method_handlers_generic_handler(v2_protos.SERVICE, handlers)
