"""Property-based tests of the four request decoders on random (mostly malformed) input.

For every input: the decoder returns or raises ServingError (nothing else), and the memory it
allocates (tracemalloc's peak over the call) stays within a constant plus a multiple of the
input's size, plus, where TensorProto's broadcast may fill a shape from one value, what
--max_request_elements allows (set small here).
"""

from __future__ import annotations

import json
import os
import tracemalloc

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving import json_tensor, limits, tensors, v2, v2_protos
from serving.errors import ServingError
from tests.serving.test_decoders_hardening import signature

MB = 1 << 20
MAX_ELEMENTS = 1 << 12
#: allowed peak: CONSTANT + PER_BYTE x input bytes (+ BROADCAST x MAX_ELEMENTS for protos)
CONSTANT, PER_BYTE, BROADCAST = 2 * MB, 64, 16
SETTINGS = settings(
    # ZOO_HYPOTHESIS_EXAMPLES=5000 for a longer search than the test suite's
    max_examples=int(os.environ.get("ZOO_HYPOTHESIS_EXAMPLES", "250")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

SIGNATURES = [
    signature(s=(types_pb2.DT_STRING, [-1])),
    signature(x=(types_pb2.DT_FLOAT, [-1, 3])),
    signature(t=(types_pb2.DT_INT32, [-1, -1])),
    signature(a=(types_pb2.DT_FLOAT, [-1]), b=(types_pb2.DT_INT32, [-1])),
]


@pytest.fixture(scope="module", autouse=True)
def small_limits():
    """MAX_ELEMENTS for the module (restored after)."""
    before = limits.current()
    limits.configure(limits.RequestLimits(max_request_elements=MAX_ELEMENTS))
    yield
    limits.configure(before)


def decode_within(bound: int, fn, *args):
    """fn(*args), which may raise ServingError only, allocating at most `bound` bytes."""
    tracemalloc.start()  # only around the call: tracing hypothesis's own work is slow
    try:
        result = fn(*args)
    except ServingError:
        result = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak <= bound, f"{fn.__name__} allocated {peak} bytes, bound {bound}"
    return result


# ---- random JSON ------------------------------------------------------------------------------
numbers = st.one_of(
    st.integers(),  # unbounded: beyond int64 and uint64 too
    st.integers(-(2**31) - 2, 2**31 + 2),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 2**63, 2**64 - 1, 2**64, 1e39, 65504.0, 70000.0]),
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    numbers,
    st.text(max_size=8),
    st.text(alphabet="ab", min_size=200, max_size=2000),
    st.fixed_dictionaries({"b64": st.one_of(st.text(max_size=12), numbers)}),
    st.dictionaries(st.sampled_from(["b64", "x", "a", "b"]), numbers, max_size=2),
)
json_values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=40,
)


@st.composite
def tensors_json(draw):
    """A rectangular nested list of one kind of leaf, with maybe one odd element."""
    shape = draw(st.lists(st.integers(0, 6), min_size=0, max_size=4))
    leaf = draw(st.sampled_from([numbers, st.integers(-50, 50), st.text(max_size=5), leaves]))
    count = int(np.prod(shape)) if shape else 1
    flat = draw(st.lists(leaf, min_size=count, max_size=count))
    value = np.array(flat + [None], dtype=object)[:-1].reshape(shape).tolist() if shape else flat[0]
    if draw(st.booleans()) and isinstance(value, list) and value:
        value[draw(st.integers(0, len(value) - 1))] = draw(json_values)
    return value


@st.composite
def deep(draw):
    depth = draw(st.integers(0, 3000))
    return "[" * depth + draw(st.sampled_from(["1", '"s"', "NaN", "true"])) + "]" * depth


@st.composite
def predict_bodies(draw) -> bytes:
    value = draw(st.one_of(tensors_json(), json_values))
    kind = draw(st.sampled_from(["instances", "inputs", "named", "deep", "raw", "random"]))
    if kind == "named":
        rows = draw(st.lists(st.fixed_dictionaries({"a": tensors_json(), "b": tensors_json()})))
        doc = {draw(st.sampled_from(["instances", "inputs"])): rows}
    elif kind in ("instances", "inputs"):
        doc = {kind: value}
    elif kind == "deep":
        return ('{"instances": ' + draw(deep()) + "}").encode()
    elif kind == "raw":
        return draw(st.binary(max_size=200))
    else:
        doc = draw(json_values)
    text = json.dumps(doc)  # NaN / Infinity literals: the stdlib fallback's path
    if draw(st.booleans()):  # a mutation: cut, or a byte flipped
        at = draw(st.integers(0, len(text)))
        text = (
            text[:at] + draw(st.sampled_from(["", "[", "]", '"', "\\", "{", "\ud800"])) + text[at:]
        )
    return text.encode("utf-8", "surrogatepass")


@SETTINGS
@given(body=predict_bodies(), which=st.integers(0, len(SIGNATURES) - 1))
def test_json_tensor_decoder(body, which):
    sig = SIGNATURES[which]

    def decode(b):
        request = json_tensor.loads(b)
        inputs, _ = json_tensor.predict_inputs(request, sig)
        for name, array in inputs.items():  # what was decoded has the signature's dtype
            if name in sig.proto.inputs:
                want = np.object_ if sig.proto.inputs[name].dtype == types_pb2.DT_STRING else None
                assert want is None or array.dtype == want
        return inputs

    decode_within(CONSTANT + PER_BYTE * len(body), decode, body)


# ---- the Open Inference Protocol's REST body --------------------------------------------------
DATATYPES = ["BOOL", "UINT8", "INT8", "INT32", "INT64", "UINT64", "FP16", "FP32", "FP64", "BYTES"]
dims = st.one_of(
    st.integers(0, 8),
    st.integers(-3, 2**64),
    st.sampled_from([2**29, 2**31, 2**63 - 1, True]),
    st.floats(allow_nan=False),
    st.text(max_size=3),
)
oip_shapes = st.one_of(st.lists(dims, max_size=4), st.lists(st.integers(0, 5), max_size=3), leaves)


@st.composite
def oip_inputs(draw):
    item = {
        "name": draw(st.one_of(st.sampled_from(["x", "y"]), st.integers(), st.none())),
        "shape": draw(oip_shapes),
        "datatype": draw(st.one_of(st.sampled_from(DATATYPES), st.text(max_size=5), numbers)),
    }
    choice = draw(st.sampled_from(["data", "binary", "both", "params", "none"]))
    if choice in ("data", "both"):
        item["data"] = draw(st.one_of(tensors_json(), json_values))
    if choice in ("binary", "both"):
        size = st.one_of(st.integers(0, 64), st.integers(), st.text(max_size=3), st.booleans())
        item["parameters"] = {"binary_data_size": draw(size)}
    if choice == "params":
        item["parameters"] = draw(json_values)
    if draw(st.booleans()):
        drop = draw(st.sampled_from(["name", "shape", "datatype"]))
        item.pop(drop, None)
    return item


@st.composite
def oip_bodies(draw) -> tuple[bytes, str | None]:
    doc = {"inputs": draw(st.lists(oip_inputs(), max_size=3))}
    if draw(st.booleans()):
        doc["outputs"] = draw(
            st.one_of(
                json_values,
                st.lists(
                    st.fixed_dictionaries(
                        {"name": st.one_of(st.text(max_size=3), numbers)},
                        optional={"parameters": json_values},
                    ),
                    max_size=3,
                ),
            )
        )
    if draw(st.booleans()):
        doc["parameters"] = draw(json_values)
    if draw(st.booleans()):
        doc["id"] = draw(json_values)
    if draw(st.integers(0, 9)) == 0:
        doc = draw(json_values)
    header = orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS) if _jsonable(doc) else b"{"
    tail = draw(st.one_of(st.binary(max_size=128), st.just(b"")))
    length = draw(
        st.one_of(
            st.none(),
            st.just(str(len(header))),
            st.integers(-5, len(header) + len(tail) + 5).map(str),
            st.text(max_size=6),
        )
    )
    return header + tail, length


def _jsonable(doc) -> bool:
    try:
        orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return False
    return True


@SETTINGS
@given(body=oip_bodies())
def test_oip_rest_decoder(body):
    data, header_length = body
    decode_within(
        CONSTANT + PER_BYTE * len(data), v2.rest_infer_request, "m", None, data, header_length
    )


# ---- the Open Inference Protocol's gRPC request ------------------------------------------------
int64s = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-2, 8))
CONTENTS = {
    "bool_contents": st.booleans(),
    "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": st.integers(-(2**63), 2**63 - 1),
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32),
    "fp64_contents": st.floats(),
    "bytes_contents": st.binary(max_size=8),
}


@st.composite
def grpc_requests(draw):
    request = v2_protos.ModelInferRequest(model_name=draw(st.text(max_size=4)))
    request.model_version = draw(st.one_of(st.just(""), st.text(max_size=25)))
    for _ in range(draw(st.integers(0, 3))):
        tensor = request.inputs.add(
            name=draw(st.sampled_from(["x", "y", ""])),
            datatype=draw(st.one_of(st.sampled_from(DATATYPES), st.text(max_size=4))),
            shape=draw(st.lists(int64s, max_size=4)),
        )
        for field in draw(st.lists(st.sampled_from(sorted(CONTENTS)), max_size=2)):
            getattr(tensor.contents, field).extend(draw(st.lists(CONTENTS[field], max_size=8)))
    raws = draw(st.integers(0, 3))
    for _ in range(raws):
        request.raw_input_contents.append(draw(st.binary(max_size=64)))
    if draw(st.booleans()):
        request.parameters["signature_name"].string_param = draw(st.text(max_size=4))
    if draw(st.booleans()):
        request.parameters["signature_name"].int64_param = 3
    return request


@SETTINGS
@given(request=grpc_requests())
def test_oip_grpc_decoder(request):
    bound = CONSTANT + PER_BYTE * request.ByteSize()
    decode_within(bound, v2.grpc_infer_request, request)


# ---- TensorProto (gRPC Predict) ---------------------------------------------------------------
DTYPE_ENUMS = sorted(types_pb2.DataType.values())
TYPED_FIELDS = {
    "float_val": st.floats(width=32),
    "double_val": st.floats(),
    "int_val": st.integers(-(2**31), 2**31 - 1),
    "int64_val": st.integers(-(2**63), 2**63 - 1),
    "uint32_val": st.integers(0, 2**32 - 1),
    "uint64_val": st.integers(0, 2**64 - 1),
    "bool_val": st.booleans(),
    "half_val": st.integers(-(2**31), 2**31 - 1),
    "scomplex_val": st.floats(width=32),
    "dcomplex_val": st.floats(),
    "string_val": st.binary(max_size=300),
}


@st.composite
def tensor_protos(draw):
    proto = tensor_pb2.TensorProto(
        dtype=draw(st.one_of(st.sampled_from(DTYPE_ENUMS), st.integers(-5, 400)))
    )
    proto.tensor_shape.unknown_rank = draw(st.integers(0, 9)) == 0
    for d in draw(st.lists(int64s, max_size=5)):
        proto.tensor_shape.dim.add(size=d)
    for field in draw(st.lists(st.sampled_from(sorted(TYPED_FIELDS)), max_size=2)):
        getattr(proto, field).extend(draw(st.lists(TYPED_FIELDS[field], max_size=10)))
    content = draw(st.sampled_from(["none", "random", "exact"]))
    if content == "random":
        proto.tensor_content = draw(st.binary(max_size=64))
    elif content == "exact":
        count = int(np.prod([max(d.size, 0) for d in proto.tensor_shape.dim] or [1]))
        width = draw(st.sampled_from([1, 2, 4, 8, 16]))
        if 0 < count * width <= 4096:
            proto.tensor_content = bytes(count * width)
    return proto


@SETTINGS
@given(proto=tensor_protos())
def test_tensor_proto_decoder(proto):
    bound = CONSTANT + PER_BYTE * proto.ByteSize() + BROADCAST * MAX_ELEMENTS
    array = decode_within(bound, tensors.to_numpy, proto, "x")
    if array is not None:
        assert array.size <= MAX_ELEMENTS
        assert array.shape == tuple(d.size for d in proto.tensor_shape.dim)
