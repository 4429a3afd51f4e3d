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

Request decoding (REST JSON, the binary extension, gRPC raw and typed contents) answers any
malformed request with INVALID_ARGUMENT and builds nothing larger than what was sent: a
declared shape is checked against --max_request_elements and against the data that came
with it before anything is allocated, and values against the datatype's range.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import grpc
import numpy as np
import orjson
from tensorflow.core.framework import types_pb2

from serving import __version__, json_body, v2_protos
from serving.errors import ServingError, invalid
from serving.predict import PredictionCore, Spec
from serving.servable import DEFAULT_SIGNATURE, shape_of
from serving.tensors import MAX_RANK, checked_shape, element_count

SERVER_NAME = "tfzoo"
SERVER_VERSION = __version__
EXTENSIONS = ["binary_tensor_data"]
PLATFORM = "tensorflow_savedmodel"
#: The manager's version states as the repository index names them.
_INDEX_STATES = {"AVAILABLE": "READY", "START": "LOADING", "LOADING": "LOADING"}
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
# numpy dtype of each InferTensorContents field
_CONTENTS_DTYPE = {
    "bool_contents": np.bool_, "int_contents": np.int32, "int64_contents": np.int64,
    "uint_contents": np.uint32, "uint64_contents": np.uint64, "fp32_contents": np.float32,
    "fp64_contents": np.float64, "bytes_contents": np.object_,
}  # fmt: skip
# JSON values each datatype takes ("f" numbers, "i" integers, "b" booleans)
_FAMILY = {"BOOL": "b", "FP16": "f", "FP32": "f", "FP64": "f"}
_MAX_VERSION_DIGITS = 19  # int64


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
    if (
        not (version.isascii() and version.isdigit())
        or len(version) > _MAX_VERSION_DIGITS
        or int(version) >= 1 << 63
    ):
        raise invalid(f"Invalid model version: {version[:40]!r} is not an int64 version")
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
    """`count` length-prefixed elements; refused before allocating when `raw` cannot hold
    them (each needs its 4-byte length at least)."""
    if count > len(raw) // 4:
        raise invalid(
            f"Input '{name}': {len(raw)} bytes of raw BYTES data cannot hold {count} elements "
            "(each needs a 4-byte length)"
        )
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > len(raw):
            raise invalid(f"Input '{name}': raw BYTES data holds fewer than {count} elements")
        (n,) = struct.unpack_from("<I", raw, pos)
        end = pos + 4 + n
        if end > len(raw):
            raise invalid(
                f"Input '{name}': BYTES element {i} is {n} bytes long, but only "
                f"{len(raw) - pos - 4} bytes follow its length"
            )
        out[i] = bytes(raw[pos + 4 : end])
        pos = end
    if pos != len(raw):
        raise invalid(f"Input '{name}': raw BYTES data is longer than {count} elements")
    return out


def from_raw(raw: bytes, datatype: str, shape: list[int], name: str) -> np.ndarray:
    """An input sent as raw bytes (gRPC raw_input_contents, REST binary data)."""
    shape = checked_shape(shape, f"Input '{name}'")
    np_type = _numpy_type(datatype, name)
    count = element_count(shape, f"input '{name}'")
    if datatype == "BYTES":
        return decode_bytes(raw, count, name).reshape(shape)
    if len(raw) != np.dtype(np_type).itemsize * count:
        raise invalid(
            f"Input '{name}': {len(raw)} bytes of data do not fit shape {shape} of {datatype} "
            f"({np.dtype(np_type).itemsize * count} bytes)"
        )
    array = np.frombuffer(raw, np_type).reshape(shape)
    if datatype == "BOOL":  # any nonzero byte is true (numpy would keep the byte as it is)
        return np.not_equal(array.view(np.uint8), 0)  # not `!=`: see json_body
    return array  # a read-only view: the one copy is into the batch or the session's tensor


def to_raw(array: np.ndarray) -> bytes:
    if datatype_of(array) == "BYTES":
        return encode_bytes(array)
    return np.ascontiguousarray(array).tobytes()


def _numpy_type(datatype: str, name: str):
    entry = _DATATYPES.get(datatype) if isinstance(datatype, str) else None
    if entry is None:
        raise invalid(f"Input '{name}': unsupported datatype {str(datatype)[:40]!r}")
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

    def model_config(self, name: str, version: str | None) -> dict:
        """Triton's model configuration extension (`GET /v2/models/{m}/config`): the
        platform, and the version's model card (`serving.card`) as string `parameters`."""
        with self.core.manager.acquire(name, _parse_version(version)) as servable:
            facts = dict(servable.card)
        return {
            "name": name,
            "platform": PLATFORM,
            "backend": "tensorflow",
            "parameters": {key: {"string_value": value} for key, value in facts.items()},
        }

    def repository_index(self, ready_only: bool = False) -> list[dict]:
        """Triton's repository index (`POST /v2/repository/index`): every configured model
        version with its state (READY, LOADING or UNAVAILABLE) and the reason it is not."""
        index = []
        for name in self.core.manager.model_names():
            try:
                entries = self.core.manager.status(name)
            except ServingError as err:  # configured, no version found yet: as Triton lists it
                if not ready_only:
                    index.append({"name": name, "state": "UNAVAILABLE", "reason": err.message})
                continue
            for entry in sorted(entries, key=lambda e: e.version):
                state = _INDEX_STATES.get(entry.state, "UNAVAILABLE")
                if ready_only and state != "READY":
                    continue
                reason = entry.error.message if entry.error is not None else ""
                index.append(
                    {"name": name, "version": str(entry.version), "state": state, "reason": reason}
                )
        return index

    async def infer(self, request: InferRequest) -> tuple[str, dict[str, np.ndarray]]:
        """(resolved version, outputs in the requested order, or all outputs sorted)."""
        spec = Spec(request.model, request.version, None, request.signature_name)
        model_spec, _sig, outputs = await self.core.predict(spec, request.inputs, request.outputs)
        return str(model_spec.version.value), outputs


def index_request(body: bytes) -> bool:
    """The `ready` flag of a repository index request body (empty: every version)."""
    if not body.strip():
        return False
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise invalid(f"Malformed repository index request: {err}") from None
    if not isinstance(doc, dict):
        raise invalid("A repository index request must be a JSON object")
    ready = doc.get("ready", False)
    if not isinstance(ready, bool):
        raise invalid("'ready' of a repository index request must be a boolean")
    return ready


def _signature_name(parameters: dict) -> str:
    name = parameters.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid("parameter 'signature_name' must be a string")
    return name


# ---- REST ------------------------------------------------------------------------------------
def _bytes_array(values: list, count: int, name: str) -> np.ndarray:
    """BYTES data: strings (sent as UTF-8) or bytes, `count` of them."""
    items = [v.encode("utf-8") if isinstance(v, str) else v for v in values]
    if len(items) != count or not all(isinstance(v, bytes) for v in items):
        raise invalid(f"Input '{name}': BYTES data must be {count} strings")
    out = np.empty(count, dtype=object)
    out[:] = items
    return out


def _json_array(
    value, datatype: str, shape: list[int], name: str, scan: json_body.BodyScan | None = None
) -> np.ndarray:
    """JSON `data` (flat or nested, row-major) as an array of `datatype` and `shape`.

    The values sent must number exactly the shape's elements: that is checked from the
    lists' lengths before numpy sees them. scan: the body's pre-parse scan (without one the
    values' JSON types are checked first, which is slower).
    """
    np_type = _numpy_type(datatype, name)
    count = element_count(shape, f"input '{name}'")
    nested = json_body.nested_shape(value, MAX_RANK)
    if len(nested) > MAX_RANK:
        raise invalid(f"Input '{name}': data is nested deeper than {MAX_RANK} lists")
    if math.prod(nested) != count:
        raise invalid(
            f"Input '{name}': data holds {math.prod(nested)} values (nested {nested}), "
            f"but shape {shape} has {count} elements"
        )
    if datatype == "BYTES":
        try:
            flat = np.asarray(value, dtype=object).ravel().tolist()
        except ValueError:
            flat = []
        return _bytes_array(flat, count, name).reshape(shape)
    family = _FAMILY.get(datatype, "i")
    try:
        array = json_body.numeric_array(
            value,
            np.dtype(np_type),
            family,
            scan is not None and scan.numpy_may_judge(count, family),
        )
    except json_body.Mismatch as e:
        if e.kind == "type":
            raise invalid(f"Input '{name}': datatype {datatype} does not take {e}") from None
        raise invalid(f"Input '{name}' ({datatype}, shape {shape}) has {e}") from None
    return array.reshape(shape)


def _parameters(holder: dict, where: str) -> dict:
    """The `parameters` object of a request, input or output ({} when absent or null)."""
    params = holder.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise invalid(f"'parameters' of {where} must be a JSON object")
    return params


def _flag(params: dict, key: str, default: bool, where: str) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise invalid(f"parameter '{key}' of {where} must be true or false")
    return value


def _header_length(value: str | None, body_size: int) -> int | None:
    """The inference-header-content-length header: 0..body size, or None when absent."""
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or int(text) > body_size:
        raise invalid(
            f"Invalid {HEADER_LENGTH} header: {value[:40]!r} (an integer from 0 to the body's "
            f"{body_size} bytes)"
        )
    return int(text)


def _rest_input(item, index: int) -> tuple[str, list[int], str, dict]:
    """(name, shape, datatype, parameters) of one `inputs` entry, each of the right type."""
    where = f"inputs[{index}]"
    if not isinstance(item, dict) or not {"name", "shape", "datatype"} <= set(item):
        raise invalid(f"{where}: each input needs a name, a shape and a datatype")
    name, shape, datatype = item["name"], item["shape"], item["datatype"]
    if not isinstance(name, str):
        raise invalid(f"{where}: 'name' must be a string")
    if not isinstance(datatype, str):
        raise invalid(f"Input '{name}': 'datatype' must be a string")
    if not isinstance(shape, list):
        raise invalid(f"Input '{name}': 'shape' must be a list of integers")
    return name, checked_shape(shape, f"Input '{name}'"), datatype, _parameters(item, where)


def _rest_outputs(doc: dict, all_binary: bool) -> tuple[list[str], set[str]]:
    """(the requested output names, those wanted as binary data)."""
    outputs = doc.get("outputs")
    if outputs is None:
        return [], set()
    if not isinstance(outputs, list):
        raise invalid("'outputs' must be a list of objects with a 'name'")
    wanted, binary = [], set()
    for j, out in enumerate(outputs):
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise invalid(f"outputs[{j}]: each requested output needs a string 'name'")
        wanted.append(out["name"])
        where = f"output '{out['name']}'"
        if _flag(_parameters(out, where), "binary_data", all_binary, where):
            binary.add(out["name"])
    return wanted, binary


def rest_infer_request(
    model: str, version: str | None, body: bytes, header_length: str | None
) -> tuple[InferRequest, bool, set[str]]:
    """Parse a REST infer body; returns (request, all outputs binary, outputs wanted binary)."""
    blob = b""
    n = _header_length(header_length, len(body))
    if n is not None:
        body, blob = body[:n], body[n:]
    scan = json_body.check_depth(body)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise invalid(f"JSON Parse error: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise invalid("The request body must be a JSON object with an 'inputs' list")
    parameters = _parameters(doc, "the request")
    inputs: dict[str, np.ndarray] = {}
    pos = 0
    for index, item in enumerate(doc["inputs"]):
        name, shape, datatype, params = _rest_input(item, index)
        if name in inputs:
            raise invalid(f"Input '{name}' appears more than once")
        size = params.get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0:
                raise invalid(f"Input '{name}': binary_data_size must be an integer >= 0")
            if pos + size > len(blob):
                raise invalid(f"Input '{name}': binary data is shorter than binary_data_size")
            inputs[name] = from_raw(blob[pos : pos + size], datatype, shape, name)
            pos += size
        elif "data" in item:
            inputs[name] = _json_array(item["data"], datatype, shape, name, scan)
        else:
            raise invalid(f"Input '{name}' has neither data nor binary_data_size")
    if pos != len(blob):
        raise invalid(f"{len(blob) - pos} bytes of binary data follow the inputs' binary_data_size")
    all_binary = _flag(parameters, "binary_data_output", False, "the request")
    wanted, binary = _rest_outputs(doc, all_binary)
    request_id = doc.get("id", "")
    if not isinstance(request_id, str):
        raise invalid("'id' must be a string")
    request = InferRequest(
        model, _parse_version(version), inputs, wanted, _signature_name(parameters), request_id
    )
    return request, all_binary, binary


def _json_data(array: np.ndarray, splicer: json_body.Splicer) -> list | str:
    """An output's values as a flat JSON list; NaN and +-Infinity as TF Serving writes them."""
    if datatype_of(array) != "BYTES":
        values = array.ravel().tolist()
        if json_body.has_nonfinite(array):
            return splicer.add(json_body.nonfinite_json(values, array.ravel()))
        return values
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
    splicer = json_body.Splicer()
    for name, array in outputs.items():
        item = {"name": name, "datatype": datatype_of(array), "shape": list(array.shape)}
        if name in binary or (all_binary and not request.outputs):
            raw = to_raw(array)
            item["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            item["data"] = _json_data(array, splicer)
        items.append(item)
    doc = {"model_name": request.model, "model_version": version, "outputs": items}
    if request.id:
        doc["id"] = request.id
    header = splicer.dumps(doc)
    if not blobs:
        return header, {}
    return header + b"".join(blobs), {"Inference-Header-Content-Length": str(len(header))}


# ---- gRPC ------------------------------------------------------------------------------------
def _grpc_param(value):
    kind = value.WhichOneof("parameter_choice")
    return getattr(value, kind) if kind else None


def _contents_array(tensor, shape: list[int]) -> np.ndarray:
    """An input sent in typed contents (InferTensorContents): exactly one value an element,
    in the field of its datatype, each within the datatype's range."""
    name, datatype = tensor.name, tensor.datatype
    field = _CONTENTS.get(datatype)
    if field is None:
        raise invalid(f"Input '{name}': unsupported datatype {datatype[:40]!r} in contents")
    np_type = np.dtype(_numpy_type(datatype, name))
    count = element_count(shape, f"input '{name}'")
    for descriptor, _ in tensor.contents.ListFields():
        if descriptor.name != field:
            raise invalid(
                f"Input '{name}' is {datatype}, whose values travel in {field}, but it "
                f"carries {descriptor.name}"
            )
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise invalid(
            f"Input '{name}' has {len(values)} values in {field}, but shape {shape} has "
            f"{count} elements"
        )
    if datatype == "BYTES":
        return _bytes_array(list(values), count, name).reshape(shape)
    array = np.fromiter(values, _CONTENTS_DTYPE[field], count)
    if array.dtype != np_type:  # INT8/16 in int_contents, UINT8/16 in uint_contents
        info = np.iinfo(np_type)
        if count and (int(array.min()) < info.min or int(array.max()) > info.max):
            raise invalid(
                f"Input '{name}' ({datatype}) has values out of its range {info.min}..{info.max}"
            )
        array = array.astype(np_type)
    return array.reshape(shape)


def grpc_infer_request(request) -> InferRequest:
    """A ModelInferRequest -> InferRequest (raw_input_contents or typed contents)."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise invalid("raw_input_contents must hold one entry per input")
    inputs = {}
    for i, tensor in enumerate(request.inputs):
        name = tensor.name
        if name in inputs:
            raise invalid(f"Input '{name}' appears more than once")
        shape = checked_shape(list(tensor.shape), f"Input '{name}'")
        if raw:
            inputs[name] = from_raw(raw[i], tensor.datatype, shape, name)
        else:
            inputs[name] = _contents_array(tensor, shape)
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

    def __init__(self, api: OpenInferenceApi, guard, blocking):
        self.api = api
        self._guard = guard  # maps exceptions to status codes, records metrics
        self._blocking = blocking  # a blocking method -> a coroutine run in the workers

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

    async def ModelInfer(self, request, context):  # noqa: N802
        infer = grpc_infer_request(request)
        version, outputs = await self.api.infer(infer)
        return grpc_infer_response(infer, version, outputs)

    def handler(self) -> grpc.GenericRpcHandler:
        """The service's methods for a grpc.aio server: ModelInfer on the event loop, the
        others (quick, blocking) in the front end's workers."""
        handlers = {}
        for method, (req_cls, resp_cls) in v2_protos.METHODS.items():
            infer = method == "ModelInfer"  # the one call with metrics and a deadline
            fn = getattr(self, method)
            if not infer:
                fn = self._blocking(fn)
            fn = self._guard(fn, method if infer else None, timed=infer)
            handlers[method] = grpc.unary_unary_rpc_method_handler(
                fn,
                request_deserializer=req_cls.FromString,
                response_serializer=resp_cls.SerializeToString,
            )
        return grpc.method_handlers_generic_handler(v2_protos.SERVICE, handlers)
