"""TensorProto <-> numpy, with outputs written to the typed fields as TF Serving does.

Requests are decoded without `tf.make_ndarray`, which builds whatever shape a proto declares:
TensorProto semantics repeat the last value sent to fill the shape, so a 150-byte proto
could ask for gigabytes. `to_numpy` reads the declared shape first, refuses it over
--max_request_elements, and checks it against what was sent before building anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving import limits
from serving.errors import invalid

#: the most dims a request tensor may have: numpy 1's limit, and numpy 2's for iterating one
#: (`.flat`); TensorFlow allows 254, no model here needs more than a handful
MAX_RANK = 32
_INT64_MAX = (1 << 63) - 1

_DTYPE_ENUM: dict[np.dtype, int] = {}  # numpy dtype -> DataType enum, filled on first use

_TYPED_FIELD = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_STRING: "string_val",
}

# the dtypes a request may carry: numpy dtype, the typed field its values travel in, and
# the numpy dtype of that field's values when it differs (narrow ints in int_val, the bits
# of half floats in half_val, complex numbers as (re, im) pairs)
_REQUEST_DTYPES: dict[int, tuple[np.dtype, str, np.dtype | None]] = {
    e: (np.dtype(tf.dtypes.as_dtype(e).as_numpy_dtype), field, np.dtype(wire) if wire else None)
    for e, field, wire in (
        (types_pb2.DT_FLOAT, "float_val", None),
        (types_pb2.DT_DOUBLE, "double_val", None),
        (types_pb2.DT_INT32, "int_val", None),
        (types_pb2.DT_INT16, "int_val", np.int32),
        (types_pb2.DT_INT8, "int_val", np.int32),
        (types_pb2.DT_UINT8, "int_val", np.int32),
        (types_pb2.DT_UINT16, "int_val", np.int32),
        (types_pb2.DT_INT64, "int64_val", None),
        (types_pb2.DT_UINT32, "uint32_val", None),
        (types_pb2.DT_UINT64, "uint64_val", None),
        (types_pb2.DT_BOOL, "bool_val", None),
        (types_pb2.DT_HALF, "half_val", np.int32),
        (types_pb2.DT_BFLOAT16, "half_val", np.int32),
        (types_pb2.DT_COMPLEX64, "scomplex_val", np.float32),
        (types_pb2.DT_COMPLEX128, "dcomplex_val", np.float64),
        (types_pb2.DT_STRING, "string_val", None),
    )
}
_VALUE_FIELDS = frozenset(
    f.name for f in tensor_pb2.TensorProto.DESCRIPTOR.fields if f.name.endswith("_val")
)


def _dtype_text(dtype_enum: int) -> str:
    """'DT_FLOAT', or the number of a value no DataType has."""
    try:
        return types_pb2.DataType.Name(dtype_enum)
    except ValueError:
        return f"DataType {dtype_enum}"


def element_count(dims: Sequence[int], what: str) -> int:
    """The elements of a tensor of shape `dims` (each already checked to be >= 0), refused
    with INVALID_ARGUMENT over --max_request_elements, before anything of that size is built.

    what: the tensor, for the message ("input 'x'").
    """
    count = math.prod(dims)
    lim = limits.current()
    if count > lim.max_request_elements:
        shown = count if count <= _INT64_MAX else f"over 2**63 ({list(dims)})"
        raise lim.exceeded("max_request_elements", f"the element count of {what}", shown)
    # numpy refuses a shape whose size in bytes would not fit in int64, even with a zero dim
    if count == 0 and math.prod(d for d in dims if d) > _INT64_MAX // 16:
        raise invalid(f"{what} has a shape too large to represent: {list(dims)}")
    return count


def checked_shape(dims: Sequence[int], what: str) -> list[int]:
    """`dims` as a list of ints, refused unless each is an int in 0..2**63-1 (a bool is not)
    and there are at most MAX_RANK."""
    if len(dims) > MAX_RANK:
        raise invalid(f"{what} has {len(dims)} dims, more than the {MAX_RANK} a tensor may have")
    for d in dims:
        if type(d) is not int or not 0 <= d <= _INT64_MAX:
            raise invalid(f"{what} has an invalid shape {list(dims)!r}: dims must be integers >= 0")
    return list(dims)


def to_numpy(proto: tensor_pb2.TensorProto, name: str = "") -> np.ndarray:
    """Decode a request TensorProto; malformed protos give INVALID_ARGUMENT, not a crash.

    As in TensorFlow, a typed field may hold fewer values than the shape: the last one is
    repeated to fill it (one value broadcast), and none at all means zeros; the filled
    tensor still counts against --max_request_elements, and a string repeated is one
    object referenced, not copied. tensor_content must hold exactly the shape's bytes.
    """
    what = f"Input '{name}'"
    spec = _REQUEST_DTYPES.get(proto.dtype)
    if spec is None:
        raise invalid(f"{what} has dtype {_dtype_text(proto.dtype)}, which requests cannot carry")
    np_type, field, wire = spec
    if proto.tensor_shape.unknown_rank:
        raise invalid(f"{what} has a shape of unknown rank; a request tensor needs its dims")
    shape = checked_shape([d.size for d in proto.tensor_shape.dim], what)
    count = element_count(shape, f"input '{name}'")
    if proto.tensor_content:
        return _from_content(proto, np_type, shape, count, what)
    _check_fields(proto, field, what)
    values = getattr(proto, field)
    per_element = 2 if wire is not None and wire.kind == "f" else 1  # complex: (re, im)
    sent, odd = divmod(len(values), per_element)
    if odd:
        raise invalid(f"{what} has an odd number of {field} values: each is a (re, im) pair")
    if sent > count:
        raise invalid(
            f"{what} has {sent} values in {field}, more than the {count} of its shape {shape}"
        )
    if field == "string_val":
        array = np.empty(count, dtype=object)
        if sent:
            items = list(values)
            array[:sent] = items
            array[sent:] = items[-1]  # one object, referenced count - sent times
        else:
            array[:] = b""
        return array.reshape(shape)
    if not sent:
        return np.zeros(shape, np_type)
    array = _typed_values(values, np_type, wire, what)
    if sent < count:
        array = np.concatenate([array, np.full(count - sent, array[-1], np_type)])
    return array.reshape(shape)


def _from_content(proto, np_type: np.dtype, shape: list[int], count: int, what: str):
    """A tensor sent as raw bytes in tensor_content: exactly count * itemsize of them."""
    if np_type.kind == "O":
        raise invalid(f"{what}: DT_STRING values must be sent in string_val, not tensor_content")
    content = proto.tensor_content
    if len(content) != np_type.itemsize * count:
        raise invalid(
            f"{what}: tensor_content holds {len(content)} bytes, but shape {shape} of "
            f"{_dtype_text(proto.dtype)} needs {np_type.itemsize * count}"
        )
    array = np.frombuffer(content, np_type).reshape(shape)
    if np_type == np.bool_:  # any nonzero byte is true (numpy keeps the byte as it is)
        return np.not_equal(array.view(np.uint8), 0)  # not `!=`: see json_body
    # a read-only view of the request's bytes: the one copy is into the batch (or the
    # session's input tensor), not here
    return array


def _check_fields(proto, field: str, what: str) -> None:
    """Refuse values sent in a typed field the dtype does not read (TensorFlow would ignore
    them and fill the tensor with zeros)."""
    for descriptor, _ in proto.ListFields():
        if descriptor.name in _VALUE_FIELDS and descriptor.name != field:
            raise invalid(
                f"{what} is {_dtype_text(proto.dtype)}, whose values travel in {field}, "
                f"but it carries {descriptor.name}"
            )


def _typed_values(values, np_type: np.dtype, wire: np.dtype | None, what: str) -> np.ndarray:
    """The values of a typed field as an array of np_type, range-checked where the field is
    wider than the dtype."""
    if wire is None:
        return np.fromiter(values, np_type, len(values))
    raw = np.fromiter(values, wire, len(values))
    if wire.kind == "f":  # complex pairs
        return raw.view(np_type)
    if np_type.kind == "i" or np_type.kind == "u":
        info = np.iinfo(np_type)
    else:  # half_val: the 16 bits of a half or bfloat16
        info = np.iinfo(np.uint16)
    if raw.min() < info.min or raw.max() > info.max:
        raise invalid(f"{what} has values out of range for {np_type.name} ({info.min}..{info.max})")
    narrowed = raw.astype(info.dtype)
    return narrowed if narrowed.dtype == np_type else narrowed.view(np_type)


def fill_proto(proto: tensor_pb2.TensorProto, array: np.ndarray) -> None:
    """Write an output array into an (empty) TensorProto in place, e.g. a response's
    `outputs[name]`, which saves building and copying a separate message."""
    array = np.asarray(array)
    dtype_enum = _DTYPE_ENUM.get(array.dtype)
    if dtype_enum is None:
        dtype_enum = tf.dtypes.as_dtype(
            array.dtype if array.dtype != object else tf.string
        ).as_datatype_enum
        _DTYPE_ENUM[array.dtype] = dtype_enum
    field = _TYPED_FIELD.get(dtype_enum)
    if field is None:  # half, complex ...: fall back to tensor_content
        proto.CopyFrom(tf.make_tensor_proto(array))
        return
    proto.dtype = dtype_enum
    dims = proto.tensor_shape.dim
    for s in array.shape:
        dims.add(size=s)
    flat = array.ravel()
    if field == "string_val":
        getattr(proto, field).extend(v if isinstance(v, bytes) else str(v).encode() for v in flat)
    else:
        getattr(proto, field).extend(flat.tolist())
