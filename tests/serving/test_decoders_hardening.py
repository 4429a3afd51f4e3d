"""The request decoders on their own (no server): every malformed request is INVALID_ARGUMENT
with a message naming the input or the flag, and none costs more memory than its size.

One regression test (or a parametrized group) for each defect the probe found, numbered as in
its report: (1) TensorProto broadcast, (2) OIP declared counts, (3) OIP field types,
(4) JSON depth, (5) integer wrap-around, (6) NaN/Infinity in responses, (7) any other
exception. Memory is tracemalloc's peak (numpy reports its buffers to it).
"""

from __future__ import annotations

import math
import tracemalloc

import grpc
import numpy as np
import orjson
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import classification_pb2, regression_pb2

from serving import json_body, json_tensor, limits, tensors, v2, v2_protos
from serving.errors import ServingError
from serving.servable import Signature

MB = 1 << 20
FLAG_ELEMENTS = "--max_request_elements"
# what Python exception text looks like in a message: none of it may reach a client
PYTHON_TEXT = (
    "Traceback",
    "object has no attribute",
    "not supported between",
    "unhashable",
    "invalid literal",
    "object is not",
    "NoneType",
    "can't multiply",
    "unsupported operand",
)


def signature(**inputs: tuple[int, list[int] | None]) -> Signature:
    """A predict Signature whose inputs are name=(dtype enum, dims or None for unknown rank)."""
    proto = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    for name, (dtype, dims) in inputs.items():
        info = proto.inputs[name]
        info.dtype = dtype
        info.name = f"{name}:0"
        if dims is None:
            info.tensor_shape.unknown_rank = True
        for d in dims or []:
            info.tensor_shape.dim.add(size=d)
    proto.outputs["y"].dtype = types_pb2.DT_FLOAT
    return Signature("serving_default", proto)


def refused(fn, *args) -> tuple[ServingError, int]:
    """(the ServingError fn(*args) raises, tracemalloc's peak bytes while it ran)."""
    tracemalloc.start()
    try:
        fn(*args)
    except ServingError as e:
        return e, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    raise AssertionError(f"{fn.__name__} accepted the request")


def assert_invalid(error: ServingError, *words: str) -> None:
    """INVALID_ARGUMENT (HTTP 400), naming each of `words` (in any case), with no Python
    exception text."""
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error.message
    assert error.http_status == 400
    for word in words:
        assert word.lower() in error.message.lower(), (word, error.message)
    for text in PYTHON_TEXT:
        assert text not in error.message, error.message


def rest_v1(body: bytes, sig: Signature) -> dict[str, np.ndarray]:
    """What the REST predict handler does with a body: loads, then predict_inputs."""
    return json_tensor.predict_inputs(json_tensor.loads(body), sig)[0]


def oip(doc: dict, blob: bytes = b"", header_length: str | None = None):
    """v2.rest_infer_request on `doc` (JSON) followed by `blob` (binary data)."""
    header = orjson.dumps(doc)
    if blob and header_length is None:
        header_length = str(len(header))
    return v2.rest_infer_request("m", None, header + blob, header_length)


def proto_of(dtype: int, dims: list[int], **fields) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype, **fields)
    for d in dims:
        proto.tensor_shape.dim.add(size=d)
    return proto


@pytest.fixture
def small_limits():
    """max_request_elements of 4096 for the test (restored after)."""
    before = limits.current()
    limits.configure(limits.RequestLimits(max_request_elements=4096))
    yield limits.current()
    limits.configure(before)


def test_tracemalloc_sees_numpy_buffers():
    """The memory bound below means something: numpy reports its allocations."""
    tracemalloc.start()
    buf = np.ones(20 * MB, np.uint8)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del buf
    assert peak >= 20 * MB


# ---- (1) TensorProto: declared elements checked before anything is built ----------------------
def test_string_proto_broadcast_to_2_28_is_refused_without_allocating():
    proto = proto_of(types_pb2.DT_STRING, [2**28], string_val=[b"x"])
    assert proto.ByteSize() < 50
    error, peak = refused(tensors.to_numpy, proto, "images")
    assert_invalid(error, "input 'images'", FLAG_ELEMENTS, str(2**28))
    assert peak < 1 * MB


@pytest.mark.parametrize(
    "dtype,field", [(types_pb2.DT_FLOAT, "float_val"), (types_pb2.DT_INT64, "int64_val")]
)
def test_numeric_proto_broadcast_over_the_limit_is_refused(dtype, field):
    proto = proto_of(dtype, [1 << 16, 1 << 16], **{field: [1]})
    error, peak = refused(tensors.to_numpy, proto, "x")
    assert_invalid(error, "input 'x'", FLAG_ELEMENTS)
    assert peak < 1 * MB


def test_proto_broadcast_within_the_limit_follows_tensorflow():
    """One value fills the shape, fewer repeat the last, none means zeros (TensorFlow's rule)."""
    one = tensors.to_numpy(proto_of(types_pb2.DT_FLOAT, [2, 3], float_val=[1.5]), "x")
    assert one.shape == (2, 3) and one.dtype == np.float32 and (one == 1.5).all()
    some = tensors.to_numpy(proto_of(types_pb2.DT_INT32, [4], int_val=[7, 8]), "x")
    assert some.tolist() == [7, 8, 8, 8]
    none = tensors.to_numpy(proto_of(types_pb2.DT_DOUBLE, [2]), "x")
    assert none.tolist() == [0.0, 0.0]
    for proto in (
        proto_of(types_pb2.DT_FLOAT, [2, 3], float_val=[1.5]),
        proto_of(types_pb2.DT_INT32, [4], int_val=[7, 8]),
    ):
        np.testing.assert_array_equal(tensors.to_numpy(proto, "x"), tf.make_ndarray(proto))


def test_string_broadcast_references_one_object():
    """One 1 MB string filling 1000 elements costs 1000 references, not 1000 copies."""
    proto = proto_of(types_pb2.DT_STRING, [1000], string_val=[b"s" * MB])
    tracemalloc.start()
    array = tensors.to_numpy(proto, "x")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert array.shape == (1000,) and array[999] == b"s" * MB
    assert len({id(v) for v in array}) == 1
    assert peak < 4 * MB


@pytest.mark.parametrize(
    "proto,words",
    [
        (proto_of(types_pb2.DT_FLOAT, [-1], float_val=[1]), ["input 'x'", "shape [-1]"]),
        (proto_of(types_pb2.DT_FLOAT, [2**40] * 3), ["input 'x'", FLAG_ELEMENTS]),
        (proto_of(types_pb2.DT_FLOAT, [0, 2**62]), ["input 'x'", "too large"]),
        (proto_of(types_pb2.DT_FLOAT, [1] * 33), ["input 'x'", "33 dims"]),
        (proto_of(types_pb2.DT_FLOAT, [3], float_val=[1, 2, 3, 4]), ["input 'x'", "4 values"]),
        (proto_of(types_pb2.DT_FLOAT, [2], tensor_content=b"abc"), ["input 'x'", "3 bytes"]),
        (proto_of(types_pb2.DT_FLOAT, [1], tensor_content=b"x" * 8), ["input 'x'", "8 bytes"]),
        (proto_of(types_pb2.DT_STRING, [1], tensor_content=b"abcd"), ["input 'x'", "string_val"]),
        (proto_of(types_pb2.DT_INT32, [2], int64_val=[1, 2]), ["input 'x'", "int64_val"]),
        (proto_of(types_pb2.DT_INT8, [1], int_val=[300]), ["input 'x'", "int8"]),
        (proto_of(types_pb2.DT_UINT8, [1], int_val=[-1]), ["input 'x'", "uint8"]),
        (proto_of(types_pb2.DT_HALF, [1], half_val=[70000]), ["input 'x'", "float16"]),
        (proto_of(types_pb2.DT_COMPLEX64, [1], scomplex_val=[1.0]), ["input 'x'", "pair"]),
        (proto_of(types_pb2.DT_RESOURCE, [1]), ["input 'x'", "DT_RESOURCE"]),
        (proto_of(999, [1]), ["input 'x'", "999"]),
    ],
    ids=[
        "negative-dim",
        "overflowing-dims",
        "unrepresentable-with-zero",
        "rank-33",
        "more-values-than-shape",
        "short-content",
        "long-content",
        "string-content",
        "foreign-field",
        "int8-range",
        "uint8-range",
        "half-bits-range",
        "odd-complex",
        "resource",
        "unknown-dtype",
    ],
)
def test_malformed_tensor_protos_are_invalid_argument(proto, words):
    error, _ = refused(tensors.to_numpy, proto, "x")
    assert_invalid(error, *words)


def test_unknown_rank_is_refused():
    proto = proto_of(types_pb2.DT_FLOAT, [], float_val=[1.0, 2.0])
    proto.tensor_shape.unknown_rank = True
    error, _ = refused(tensors.to_numpy, proto, "x")
    assert_invalid(error, "input 'x'", "unknown rank")


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.array([1, -2, 127], np.int8),
        np.array([65535], np.uint16),
        np.array([2**64 - 1], np.uint64),
        np.array([1.5, np.inf, np.nan], np.float16),
        np.array([True, False]),
        np.array([1 + 2j], np.complex64),
        np.array([[b"a", b""], [b"\xff", b"bc"]], object),
        np.float64(2.5),
    ],
    ids=lambda a: str(np.asarray(a).dtype),
)
def test_valid_protos_decode_as_tensorflow_does(array):
    """Both what tf.make_tensor_proto sends (tensor_content) and typed fields."""
    for proto in (tf.make_tensor_proto(array), _typed_proto(array)):
        got, want = tensors.to_numpy(proto, "x"), tf.make_ndarray(proto)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def _typed_proto(array) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto()
    tensors.fill_proto(proto, np.asarray(array))
    return proto


# ---- (2) OIP: declared counts checked against the data before allocating ----------------------
def test_oip_bytes_shape_2_29_with_an_empty_blob_is_refused_without_allocating():
    doc = {
        "inputs": [
            {
                "name": "text",
                "shape": [2**29],
                "datatype": "BYTES",
                "parameters": {"binary_data_size": 0},
            }
        ]
    }
    body = orjson.dumps(doc)
    assert len(body) < 150
    error, peak = refused(v2.rest_infer_request, "m", None, body, str(len(body)))
    assert_invalid(error, "input 'text'", FLAG_ELEMENTS, str(2**29))
    assert peak < 1 * MB


def test_oip_bytes_count_over_the_blob_is_refused_before_allocating():
    """Within the element limit, but 100 bytes cannot hold 4000 length-prefixed elements."""
    doc = {"inputs": [{"name": "t", "shape": [4000], "datatype": "BYTES"}]}
    doc["inputs"][0]["parameters"] = {"binary_data_size": 100}
    error, peak = refused(oip, doc, b"\0" * 100)
    assert_invalid(error, "Input 't'", "100 bytes", "4000 elements")
    assert peak < 1 * MB


def test_oip_bytes_element_longer_than_the_data_is_refused():
    raw = (1000).to_bytes(4, "little") + b"abc"
    doc = {"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES"}]}
    doc["inputs"][0]["parameters"] = {"binary_data_size": len(raw)}
    error, _ = refused(oip, doc, raw)
    assert_invalid(error, "Input 't'", "1000 bytes")


def test_oip_binary_bytes_round_trip():
    array = np.array([b"ab", b"", b"\xff\x00"], object)
    raw = v2.to_raw(array)
    doc = {"inputs": [{"name": "t", "shape": [3], "datatype": "BYTES"}]}
    doc["inputs"][0]["parameters"] = {"binary_data_size": len(raw)}
    request, _, _ = oip(doc, raw)
    assert request.inputs["t"].tolist() == array.tolist()


@pytest.mark.parametrize("size", [11, 13])
def test_oip_numeric_binary_needs_the_exact_length(size):
    doc = {"inputs": [{"name": "x", "shape": [3], "datatype": "FP32"}]}
    doc["inputs"][0]["parameters"] = {"binary_data_size": size}
    error, _ = refused(oip, doc, b"\0" * size)
    assert_invalid(error, "Input 'x'", f"{size} bytes", "12 bytes")


def test_oip_binary_bool_bytes_are_normalised():
    doc = {"inputs": [{"name": "b", "shape": [3], "datatype": "BOOL"}]}
    doc["inputs"][0]["parameters"] = {"binary_data_size": 3}
    request, _, _ = oip(doc, b"\x00\x01\x07")
    assert request.inputs["b"].tolist() == [False, True, True]


@pytest.mark.parametrize(
    "shape,data,words",
    [
        ([2**40], [1.0], [FLAG_ELEMENTS]),
        ([3], [1.0, 2.0], ["2 values", "3 elements"]),
        ([2, 2], [[1.0, 2.0]], ["2 values", "4 elements"]),
        ([2], [[1.0, 2.0], [3.0, 4.0]], ["4 values", "2 elements"]),
        ([2, 2], [[1.0, 2.0], [3.0]], ["ragged"]),
    ],
    ids=["over-limit", "fewer", "fewer-nested", "more", "ragged"],
)
def test_oip_json_data_must_match_the_shape(shape, data, words):
    doc = {"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": data}]}
    error, peak = refused(oip, doc)
    assert_invalid(error, "'x'", *words)
    assert peak < 1 * MB


def test_oip_json_data_flat_or_nested_decodes():
    for data in ([1, 2, 3, 4], [[1, 2], [3, 4]]):
        doc = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "INT64", "data": data}]}
        request, _, _ = oip(doc)
        assert request.inputs["x"].tolist() == [[1, 2], [3, 4]]
        assert request.inputs["x"].dtype == np.int64


def _grpc_request(datatype: str, shape: list[int], raw: bytes | None = None, **contents):
    request = v2_protos.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=shape)
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    if raw is not None:
        request.raw_input_contents.append(raw)
    return request


@pytest.mark.parametrize(
    "request_,words",
    [
        (_grpc_request("BYTES", [2**29], raw=b""), [FLAG_ELEMENTS]),
        (_grpc_request("BYTES", [40], raw=b"\0" * 20), ["20 bytes", "40 elements"]),
        (_grpc_request("FP32", [2], raw=b"\0" * 7), ["7 bytes"]),
        (_grpc_request("FP32", [-1], raw=b""), ["shape [-1]"]),
        (_grpc_request("INT32", [2**30], int_contents=[1]), [FLAG_ELEMENTS]),
        (_grpc_request("INT32", [3], int_contents=[1, 2]), ["2 values", "3 elements"]),
        (_grpc_request("INT32", [2], int64_contents=[1, 2]), ["int64_contents"]),
        (_grpc_request("INT8", [2], int_contents=[1, 300]), ["INT8", "-128..127"]),
        (_grpc_request("UINT16", [1], uint_contents=[70000]), ["UINT16", "0..65535"]),
        (_grpc_request("FP16", [1], fp32_contents=[1.0]), ["FP16"]),
        (_grpc_request("WHAT", [1], int_contents=[1]), ["WHAT"]),
    ],
    ids=[
        "bytes-2**29",
        "bytes-over-raw",
        "short-raw",
        "negative-dim",
        "contents-over-limit",
        "contents-fewer",
        "contents-foreign-field",
        "int8-range",
        "uint16-range",
        "fp16-contents",
        "unknown-datatype",
    ],
)
def test_oip_grpc_malformed_inputs_are_invalid_argument(request_, words):
    error, peak = refused(v2.grpc_infer_request, request_)
    assert_invalid(error, "'x'", *words)
    assert peak < 1 * MB


def test_oip_grpc_typed_contents_decode():
    request = v2.grpc_infer_request(_grpc_request("INT8", [2], int_contents=[-128, 127]))
    assert request.inputs["x"].dtype == np.int8
    assert request.inputs["x"].tolist() == [-128, 127]
    request = v2.grpc_infer_request(_grpc_request("BYTES", [1, 2], bytes_contents=[b"a", b"b"]))
    assert request.inputs["x"].tolist() == [[b"a", b"b"]]


# ---- (3) OIP: fields of the wrong type ---------------------------------------------------------
def _input(**changes):
    item = {"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}
    item.update(changes)
    return {key: value for key, value in item.items() if value is not None}


@pytest.mark.parametrize(
    "doc",
    [
        {"inputs": [_input(data=None, parameters={"binary_data_size": "17"})]},
        {"inputs": [_input(data=None, parameters={"binary_data_size": -1})]},
        {"inputs": [_input(data=None, parameters={"binary_data_size": True})]},
        {"inputs": [_input(data=None, parameters={"binary_data_size": 1.5})]},
        {"inputs": [_input(shape="abc")]},
        {"inputs": [_input(shape=[1.5])]},
        {"inputs": [_input(shape=[-1])]},
        {"inputs": [_input(shape=[[1]])]},
        {"inputs": [_input(shape=[True])]},
        {"inputs": [_input(shape=None)]},
        {"inputs": [_input(parameters=[1])]},
        {"inputs": [_input(datatype=5)]},
        {"inputs": [_input(datatype=["FP32"])]},
        {"inputs": [_input(name=7)]},
        {"inputs": [_input(name=None)]},
        {"inputs": [_input(data=None)]},
        {"inputs": [_input(), _input()]},
        {"inputs": [1]},
        {"inputs": "x"},
        {"inputs": [_input()], "parameters": [1]},
        {"inputs": [_input()], "parameters": {"binary_data_output": "yes"}},
        {"inputs": [_input()], "parameters": {"signature_name": 3}},
        {"inputs": [_input()], "outputs": "x"},
        {"inputs": [_input()], "outputs": [{"parameters": {}}]},
        {"inputs": [_input()], "outputs": [{"name": 3}]},
        {"inputs": [_input()], "outputs": ["y"]},
        {"inputs": [_input()], "outputs": [{"name": "y", "parameters": [1]}]},
        {"inputs": [_input()], "outputs": [{"name": "y", "parameters": {"binary_data": 1}}]},
        {"inputs": [_input()], "id": {"a": 1}},
        [1, 2],
        "inputs",
    ],
)
def test_oip_fields_of_the_wrong_type_are_invalid_argument(doc):
    error, _ = refused(oip, doc)
    assert_invalid(error)


@pytest.mark.parametrize(
    "header_length,body_tail", [("-1", b""), ("+5", b""), ("1_0", b""), ("999", b""), ("x", b"")]
)
def test_oip_bad_header_length_is_invalid_argument(header_length, body_tail):
    body = orjson.dumps({"inputs": [_input()]}) + body_tail
    error, _ = refused(v2.rest_infer_request, "m", None, body, header_length)
    assert_invalid(error, v2.HEADER_LENGTH)


def test_oip_unused_binary_data_is_refused():
    error, _ = refused(oip, {"inputs": [_input()]}, b"trailing")
    assert_invalid(error, "8 bytes of binary data")


@pytest.mark.parametrize("version", ["9" * 5000, "1.5", "-1", "٣", str(2**63)])
def test_oip_bad_model_versions_are_invalid_argument(version):
    body = orjson.dumps({"inputs": [_input()]})
    error, _ = refused(v2.rest_infer_request, "m", version, body, None)
    assert_invalid(error, "version")


# ---- (4) JSON nesting depth --------------------------------------------------------------------
def test_orjson_refuses_depth_over_1024_by_itself():
    """The premise: orjson stops at 1024 (the stdlib fallback would recurse until it fails)."""
    orjson.loads(b"[" * 1024 + b"]" * 1024)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(b"[" * 1025 + b"]" * 1025)


@pytest.mark.parametrize("literal", [b"1", b"NaN"], ids=["orjson", "stdlib-fallback"])
def test_json_nested_10000_deep_is_invalid_argument(literal):
    body = b'{"instances": ' + b"[" * 10_000 + literal + b"]" * 10_000 + b"}"
    error, peak = refused(json_tensor.loads, body)
    assert_invalid(error, "--max_json_depth", "10001")
    assert peak < 2 * MB


def test_json_depth_limit_is_exact_and_ignores_strings():
    limit = limits.current().max_json_depth
    ok = b'{"a": "]]]]\\"[[[[", "b": ' + b"[" * (limit - 1) + b"1" + b"]" * (limit - 1) + b"}"
    assert json_body.scan(ok).depth == limit
    json_tensor.loads(ok)
    too_deep = b'{"a": "]]]]", "b": ' + b"[" * limit + b"1" + b"]" * limit + b"}"
    error, _ = refused(json_tensor.loads, too_deep)
    assert_invalid(error, "--max_json_depth", str(limit + 1))


@pytest.mark.parametrize(
    "body,depth",
    [
        (b"{}", 1),
        (b'"[[["', 0),
        (b'["\\\\", ["a"]]', 2),
        (b'["\\\\\\"[", {"k": [[]]}]', 4),
        (b'{"\\u005b": "\\\\"}', 1),
    ],
)
def test_depth_scan_handles_escapes(body, depth):
    assert json_body.scan(body).depth == depth


def test_oip_nested_10000_deep_is_invalid_argument():
    body = b'{"inputs": [{"name": "x", "data": ' + b"[" * 10_000 + b"]" * 10_000 + b"}]}"
    error, _ = refused(v2.rest_infer_request, "m", None, body, None)
    assert_invalid(error, "--max_json_depth")


@pytest.mark.parametrize("depth", [33, 5000])
@pytest.mark.parametrize("dtype", [types_pb2.DT_FLOAT, types_pb2.DT_STRING])
def test_deep_lists_never_reach_numpy_or_recursion(dtype, depth):
    """predict_inputs on a dict that did not come through loads (no depth check); numpy
    iterates at most 32 dims."""
    value: list = ["s" if dtype == types_pb2.DT_STRING else 1.0]
    for _ in range(depth - 1):
        value = [value]
    error, _ = refused(json_tensor.predict_inputs, {"inputs": value}, signature(x=(dtype, None)))
    assert_invalid(error, "Input 'x'", "nested deeper")


# ---- (5) integers out of the dtype's range -----------------------------------------------------
TOKENS = signature(token_ids=(types_pb2.DT_INT32, [-1, -1]))


@pytest.mark.parametrize("value", [2**32 + 5, 2**64 - 1, 2**31, -(2**31) - 1])
def test_int32_values_out_of_range_are_refused_not_wrapped(value):
    body = orjson.dumps({"instances": [[1, 2]]}).replace(b"2]]", str(value).encode() + b"]]")
    error, _ = refused(rest_v1, body, TOKENS)
    assert_invalid(error, "Input 'token_ids'", "DT_INT32")


def test_int32_bounds_are_kept_exactly():
    body = orjson.dumps({"instances": [[2**31 - 1, -(2**31)]]})
    array = rest_v1(body, TOKENS)["token_ids"]
    assert array.dtype == np.int32 and array.tolist() == [[2**31 - 1, -(2**31)]]


@pytest.mark.parametrize(
    "dtype,value,name",
    [
        (types_pb2.DT_UINT8, -1, "DT_UINT8"),
        (types_pb2.DT_INT8, 128, "DT_INT8"),
        (types_pb2.DT_INT64, 2**63, "DT_INT64"),
        (types_pb2.DT_UINT64, -1, "DT_UINT64"),
        (types_pb2.DT_FLOAT, 1e300, "DT_FLOAT"),
        (types_pb2.DT_HALF, 70000.0, "DT_HALF"),
        (types_pb2.DT_HALF, 70000, "DT_HALF"),
    ],
)
def test_values_out_of_the_dtype_range_are_refused(dtype, value, name):
    body = orjson.dumps({"inputs": {"x": [value]}})
    error, _ = refused(rest_v1, body, signature(x=(dtype, [-1])))
    assert_invalid(error, "Input 'x'", name)


def test_uint64_max_is_kept():
    body = orjson.dumps({"inputs": {"x": [2**64 - 1]}})
    array = rest_v1(body, signature(x=(types_pb2.DT_UINT64, [-1])))["x"]
    assert array.dtype == np.uint64 and int(array[0]) == 2**64 - 1


@pytest.mark.parametrize(
    "datatype,value", [("INT32", 2**32 + 5), ("INT32", 2**64 - 1), ("UINT8", 256), ("FP32", 1e39)]
)
def test_oip_json_values_out_of_range_are_refused(datatype, value):
    doc = {"inputs": [{"name": "x", "shape": [1], "datatype": datatype, "data": [value]}]}
    error, _ = refused(oip, doc)
    assert_invalid(error, "Input 'x'", datatype)


def test_oip_json_refuses_what_numpy_would_coerce():
    """np.asarray(data, dtype) would truncate 1.5 to 1, parse "2", and make True a 1."""
    for datatype, data in (("INT32", [1.5]), ("FP32", ["2"]), ("FP32", [True]), ("INT64", [None])):
        doc = {"inputs": [{"name": "x", "shape": [1], "datatype": datatype, "data": data}]}
        error, _ = refused(oip, doc)
        assert_invalid(error, "Input 'x'", datatype)


# ---- (6) NaN and Infinity in responses --------------------------------------------------------
def test_predict_response_writes_nan_and_infinity_as_tf_serving():
    y = np.array([[1.5, np.nan], [np.inf, -np.inf]], np.float32)
    assert json_tensor.predict_response({"y": y}, True) == (
        b'{"predictions":[[1.5,NaN],[Infinity,-Infinity]]}'
    )
    assert json_tensor.predict_response({"y": y, "s": np.array([b"a", b"b"], object)}, True) == (
        b'{"predictions":[{"y":[1.5,NaN],"s":"a"},{"y":[Infinity,-Infinity],"s":"b"}]}'
    )
    assert json_tensor.predict_response({"y": y[0], "z": np.float32(np.nan)}, False) == (
        b'{"outputs":{"y":[1.5,NaN],"z":NaN}}'
    )


def test_finite_responses_are_unchanged():
    y = {"y": np.array([[0.1, 2.0]], np.float32), "n": np.array([b"null"], object)}
    want = orjson.dumps(
        {"outputs": {"y": y["y"], "n": ["null"]}}, option=orjson.OPT_SERIALIZE_NUMPY
    )
    assert json_tensor.predict_response(y, False) == want


def test_a_model_output_cannot_forge_a_placeholder():
    text = np.array([b"@@zoo-raw-0000000000000000-0@@"], object)
    out = json_tensor.predict_response({"t": text, "y": np.array([np.nan])}, False)
    assert out == b'{"outputs":{"t":["@@zoo-raw-0000000000000000-0@@"],"y":[NaN]}}'


def test_oip_response_writes_nan_and_infinity():
    request = v2.InferRequest("m", None, {}, [], "")
    outputs = {"y": np.array([np.nan, 1.0, -np.inf], np.float32)}
    body, _ = v2.rest_infer_response(request, "1", outputs, False, set())
    assert b'"data":[NaN,1.0,-Infinity]' in body


def test_classify_and_regress_write_nan():
    result = classification_pb2.ClassificationResult()
    result.classifications.add().classes.add(label="a", score=float("nan"))
    assert json_tensor.classify_json(result) == b'{"results":[[["a",NaN]]]}'
    regression = regression_pb2.RegressionResult()
    regression.regressions.add(value=float("-inf"))
    assert json_tensor.regress_json(regression) == b'{"results":[-Infinity]}'


def test_nan_and_infinity_literals_are_accepted_in_requests():
    body = b'{"instances": [[NaN, Infinity, -Infinity]]}'
    array = rest_v1(body, signature(x=(types_pb2.DT_FLOAT, [-1, 3])))["x"]
    assert np.isnan(array[0, 0]) and array[0, 1] == np.inf and array[0, 2] == -np.inf


# ---- (7) anything else a malformed body can raise ---------------------------------------------
STRINGS = signature(s=(types_pb2.DT_STRING, [-1]))
FLOATS = signature(x=(types_pb2.DT_FLOAT, [-1, 3]))
TWO = signature(a=(types_pb2.DT_FLOAT, [-1]), b=(types_pb2.DT_INT32, [-1]))


@pytest.mark.parametrize(
    "body,sig",
    [
        (b'{"instances": [1, "a", [2]]}', FLOATS),
        (b'{"instances": [[1, 2, 3], [4, 5]]}', FLOATS),
        (b'{"instances": [[1, 2, {"b64": "AA=="}]]}', FLOATS),
        (b'{"instances": [[1, 2, null]]}', FLOATS),
        (b'{"instances": [[1, 2, true]]}', FLOATS),
        (b'{"instances": [{"b64": 5}]}', STRINGS),
        (b'{"instances": [{"b64": "%%%"}]}', STRINGS),
        (b'{"instances": [{"b64": "\xc3\xa9"}]}', STRINGS),
        (b'{"instances": [["a"], "b"]}', STRINGS),
        (b'{"instances": [1]}', STRINGS),
        (b'{"instances": ["\\ud800"], "x": NaN}', STRINGS),
        (b'{"instances": [{"\\ud800b": 1, "a": 2}]}', TWO),
        (b'{"inputs": {"\\udc00": [1]}}', TWO),
        (b'{"instances": [{"a": 1, "b": 2}, 3]}', TWO),
        (b'{"instances": [{"a": 1}, {"b": 2}]}', TWO),
        (b'{"instances": [{"a": 1.5, "b": 2.5}]}', TWO),
        (b'{"instances": "x"}', FLOATS),
        (b'{"instances": []}', FLOATS),
        (b'{"inputs": [1], "instances": [1]}', FLOATS),
        (b"[1, 2]", FLOATS),
        (b"\xff\xfe", FLOATS),
        (b'{"instances": [NaN', FLOATS),
        (b'{"instances": [1e400, "\xff"]}', FLOATS),
        (b"", FLOATS),
    ],
)
def test_malformed_predict_bodies_are_invalid_argument(body, sig):
    error, _ = refused(rest_v1, body, sig)
    assert_invalid(error)


@pytest.mark.parametrize(
    "body",
    [
        b'{"examples": [{"x": 9223372036854775808}]}',
        b'{"examples": [{"x": [[1]]}]}',
        b'{"examples": [{"x": {"b64": 1}}]}',
        b'{"examples": [1]}',
        b'{"examples": [{"x": 1}], "context": [1]}',
        b'{"examples": [{"x": ["\\ud800"]}], "y": NaN}',
        b'{"examples": {}}',
    ],
)
def test_malformed_examples_are_invalid_argument(body):
    error, _ = refused(lambda b: json_tensor.examples_input(json_tensor.loads(b)), body)
    assert_invalid(error)


def test_unsupported_rest_dtype_is_unimplemented():
    sig = signature(c=(types_pb2.DT_COMPLEX64, [-1]))
    with pytest.raises(ServingError) as caught:
        rest_v1(b'{"instances": [1]}', sig)
    assert caught.value.code == grpc.StatusCode.UNIMPLEMENTED


def test_a_long_string_among_numbers_is_not_padded_to_every_element():
    """np.asarray would make a '<U100000' array of 2000 elements (800 MB) out of this."""
    body = orjson.dumps({"instances": [["s" * 100_000, 1.0, 1.0]] + [[1.0, 1.0, 1.0]] * 1999})
    error, peak = refused(rest_v1, body, FLOATS)
    assert_invalid(error, "Input 'x'", "strings")
    assert peak < 64 * len(body)
    # without the body's scan (a plain dict) the types are checked first too
    doc = orjson.loads(body)
    error, peak = refused(json_tensor.predict_inputs, doc, FLOATS)
    assert_invalid(error, "Input 'x'", "strings")
    assert peak < 8 * MB


def test_oip_long_string_among_numbers_is_not_padded():
    data = ["s" * 100_000] + [1.0] * 1999
    doc = {"inputs": [{"name": "x", "shape": [2000], "datatype": "FP32", "data": data}]}
    error, peak = refused(oip, doc)
    assert_invalid(error, "Input 'x'", "FP32", "strings")
    assert peak < 16 * MB


def test_well_formed_requests_still_decode():
    body = orjson.dumps({"instances": [{"a": 1.5, "b": 2}, {"a": -1, "b": 3}]})
    inputs = rest_v1(body, TWO)
    assert inputs["a"].dtype == np.float32 and inputs["a"].tolist() == [1.5, -1.0]
    assert inputs["b"].dtype == np.int32 and inputs["b"].tolist() == [2, 3]
    body = b'{"inputs": ["caf\\u00e9", {"b64": "/w=="}, {"b64": "_w"}]}'
    assert rest_v1(body, STRINGS)["s"].tolist() == ["café".encode(), b"\xff", b"\xff"]
    body = orjson.dumps({"instances": [[True, False]]})
    assert rest_v1(body, signature(m=(types_pb2.DT_BOOL, [-1, 2])))["m"].tolist() == [[True, False]]
    assert math.isclose(float(rest_v1(b'{"inputs": 2}', FLOATS)["x"]), 2.0)
