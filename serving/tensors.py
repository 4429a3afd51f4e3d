"""TensorProto <-> numpy, with outputs written to the typed fields as TF Serving does."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving.errors import invalid

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


# dtypes whose tensor_content is the raw array bytes (no strings, no resources)
_RAW_DTYPES = {
    e: np.dtype(tf.dtypes.as_dtype(e).as_numpy_dtype)
    for e in (
        types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_INT32, types_pb2.DT_INT64,
        types_pb2.DT_INT16, types_pb2.DT_INT8, types_pb2.DT_UINT8, types_pb2.DT_UINT16,
        types_pb2.DT_UINT32, types_pb2.DT_UINT64, types_pb2.DT_BOOL, types_pb2.DT_HALF,
    )
}  # fmt: skip


def to_numpy(proto: tensor_pb2.TensorProto, name: str = "") -> np.ndarray:
    """Decode a request TensorProto; malformed protos give INVALID_ARGUMENT, not a crash."""
    raw = _RAW_DTYPES.get(proto.dtype)
    if raw is not None and proto.tensor_content and not proto.tensor_shape.unknown_rank:
        # fast path for what tf.make_tensor_proto sends: one copy, no Python per element
        shape = [d.size for d in proto.tensor_shape.dim]
        if min(shape, default=0) >= 0 and len(proto.tensor_content) == raw.itemsize * math.prod(
            shape
        ):
            return np.frombuffer(proto.tensor_content, raw).reshape(shape).copy()
    try:
        return tf.make_ndarray(proto)
    except Exception as e:  # make_ndarray raises TypeError/ValueError on bad protos
        raise invalid(f"Input '{name}' is not a valid TensorProto: {e}") from None


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
