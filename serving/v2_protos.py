"""The Open Inference Protocol's gRPC messages (KServe V2, package `inference`).

Rebuilt from the field lists of KServe's `grpc_predict_v2.proto` (the same messages, names and
numbers as Triton's `grpc_service.proto`), for the part the zoo serves: ServerLive,
ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer of
`inference.GRPCInferenceService`. No generated code: the server needs only protobuf.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
OPTIONAL, REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
STRING, BOOL, INT64, INT32 = _F.TYPE_STRING, _F.TYPE_BOOL, _F.TYPE_INT64, _F.TYPE_INT32
UINT32, UINT64, FLOAT, DOUBLE = _F.TYPE_UINT32, _F.TYPE_UINT64, _F.TYPE_FLOAT, _F.TYPE_DOUBLE
BYTES, MESSAGE = _F.TYPE_BYTES, _F.TYPE_MESSAGE

SERVICE = "inference.GRPCInferenceService"
_pool = descriptor_pool.DescriptorPool()


def _message(parent, name: str, fields: list[tuple], oneof: str | None = None):
    """Add a message with (name, number, type, label[, type_name[, in_oneof]]) fields."""
    msg = parent.add(name=name)
    if oneof:
        msg.oneof_decl.add(name=oneof)
    for field in fields:
        name_, number, kind, label = field[:4]
        f = msg.field.add(name=name_, number=number, type=kind, label=label)
        if len(field) > 4 and field[4]:
            f.type_name = field[4]
        if len(field) > 5 and field[5]:
            f.oneof_index = 0
    return msg


def _parameters(msg) -> None:
    """The `map<string, InferParameter> parameters` entry type inside `msg`."""
    entry = _message(
        msg.nested_type,
        "ParametersEntry",
        [
            ("key", 1, STRING, OPTIONAL),
            ("value", 2, MESSAGE, OPTIONAL, ".inference.InferParameter"),
        ],
    )
    entry.options.map_entry = True


def _build() -> None:
    fd = descriptor_pb2.FileDescriptorProto(
        name="zoo_serving/grpc_predict_v2.proto", package="inference", syntax="proto3"
    )
    m = fd.message_type
    for name in ("ServerLiveRequest", "ServerReadyRequest", "ServerMetadataRequest"):
        _message(m, name, [])
    _message(m, "ServerLiveResponse", [("live", 1, BOOL, OPTIONAL)])
    _message(m, "ServerReadyResponse", [("ready", 1, BOOL, OPTIONAL)])
    for name in ("ModelReadyRequest", "ModelMetadataRequest"):
        _message(m, name, [("name", 1, STRING, OPTIONAL), ("version", 2, STRING, OPTIONAL)])
    _message(m, "ModelReadyResponse", [("ready", 1, BOOL, OPTIONAL)])
    _message(
        m,
        "ServerMetadataResponse",
        [("name", 1, STRING, OPTIONAL), ("version", 2, STRING, OPTIONAL),
         ("extensions", 3, STRING, REPEATED)],
    )  # fmt: skip
    meta = _message(
        m,
        "ModelMetadataResponse",
        [("name", 1, STRING, OPTIONAL), ("versions", 2, STRING, REPEATED),
         ("platform", 3, STRING, OPTIONAL),
         ("inputs", 4, MESSAGE, REPEATED, ".inference.ModelMetadataResponse.TensorMetadata"),
         ("outputs", 5, MESSAGE, REPEATED, ".inference.ModelMetadataResponse.TensorMetadata")],
    )  # fmt: skip
    _message(
        meta.nested_type,
        "TensorMetadata",
        [("name", 1, STRING, OPTIONAL), ("datatype", 2, STRING, OPTIONAL),
         ("shape", 3, INT64, REPEATED)],
    )  # fmt: skip
    _message(
        m,
        "InferParameter",
        [("bool_param", 1, BOOL, OPTIONAL, None, True),
         ("int64_param", 2, INT64, OPTIONAL, None, True),
         ("string_param", 3, STRING, OPTIONAL, None, True),
         ("double_param", 4, DOUBLE, OPTIONAL, None, True),
         ("uint64_param", 5, UINT64, OPTIONAL, None, True)],
        oneof="parameter_choice",
    )  # fmt: skip
    _message(
        m,
        "InferTensorContents",
        [("bool_contents", 1, BOOL, REPEATED), ("int_contents", 2, INT32, REPEATED),
         ("int64_contents", 3, INT64, REPEATED), ("uint_contents", 4, UINT32, REPEATED),
         ("uint64_contents", 5, UINT64, REPEATED), ("fp32_contents", 6, FLOAT, REPEATED),
         ("fp64_contents", 7, DOUBLE, REPEATED), ("bytes_contents", 8, BYTES, REPEATED)],
    )  # fmt: skip
    for top, tensor, requested, raw in (
        ("ModelInferRequest", "InferInputTensor", "InferRequestedOutputTensor", "raw_input_contents"),
        ("ModelInferResponse", "InferOutputTensor", None, "raw_output_contents"),
    ):  # fmt: skip
        fields = [("model_name", 1, STRING, OPTIONAL), ("model_version", 2, STRING, OPTIONAL),
                  ("id", 3, STRING, OPTIONAL),
                  ("parameters", 4, MESSAGE, REPEATED, *_parameters_ref(top)),
                  ("inputs" if requested else "outputs", 5, MESSAGE, REPEATED,
                   f".inference.{top}.{tensor}")]  # fmt: skip
        if requested:
            fields.append(("outputs", 6, MESSAGE, REPEATED, f".inference.{top}.{requested}"))
            fields.append((raw, 7, BYTES, REPEATED))
        else:
            fields.append((raw, 6, BYTES, REPEATED))
        msg = _message(m, top, fields)
        _parameters(msg)
        inner = _message(
            msg.nested_type,
            tensor,
            [("name", 1, STRING, OPTIONAL), ("datatype", 2, STRING, OPTIONAL),
             ("shape", 3, INT64, REPEATED),
             ("parameters", 4, MESSAGE, REPEATED, f".inference.{top}.{tensor}.ParametersEntry"),
             ("contents", 5, MESSAGE, OPTIONAL, ".inference.InferTensorContents")],
        )  # fmt: skip
        _parameters(inner)
        if requested:
            out = _message(
                msg.nested_type,
                requested,
                [("name", 1, STRING, OPTIONAL),
                 ("parameters", 2, MESSAGE, REPEATED,
                  f".inference.{top}.{requested}.ParametersEntry")],
            )  # fmt: skip
            _parameters(out)
    _pool.Add(fd)


def _parameters_ref(scope: str) -> tuple:
    return (f".inference.{scope}.ParametersEntry",)


_build()


def _cls(name: str):
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"inference.{name}"))


ServerLiveRequest, ServerLiveResponse = _cls("ServerLiveRequest"), _cls("ServerLiveResponse")
ServerReadyRequest, ServerReadyResponse = _cls("ServerReadyRequest"), _cls("ServerReadyResponse")
ModelReadyRequest, ModelReadyResponse = _cls("ModelReadyRequest"), _cls("ModelReadyResponse")
ServerMetadataRequest = _cls("ServerMetadataRequest")
ServerMetadataResponse = _cls("ServerMetadataResponse")
ModelMetadataRequest = _cls("ModelMetadataRequest")
ModelMetadataResponse = _cls("ModelMetadataResponse")
ModelInferRequest, ModelInferResponse = _cls("ModelInferRequest"), _cls("ModelInferResponse")
InferTensorContents = _cls("InferTensorContents")

#: method name -> (request class, response class)
METHODS = {
    "ServerLive": (ServerLiveRequest, ServerLiveResponse),
    "ServerReady": (ServerReadyRequest, ServerReadyResponse),
    "ModelReady": (ModelReadyRequest, ModelReadyResponse),
    "ServerMetadata": (ServerMetadataRequest, ServerMetadataResponse),
    "ModelMetadata": (ModelMetadataRequest, ModelMetadataResponse),
    "ModelInfer": (ModelInferRequest, ModelInferResponse),
}
