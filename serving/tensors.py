"""TensorProto <-> numpy, with outputs written to the typed fields as TF Serving does."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from serving.errors import invalid

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


def to_numpy(proto: tensor_pb2.TensorProto, name: str = "") -> np.ndarray:
    """Decode a request TensorProto; malformed protos give INVALID_ARGUMENT, not a crash."""
    try:
        return tf.make_ndarray(proto)
    except Exception as e:  # make_ndarray raises TypeError/ValueError on bad protos
        raise invalid(f"Input '{name}' is not a valid TensorProto: {e}") from None


def to_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """Encode an output array into the typed value field of a TensorProto."""
    array = np.asarray(array)
    dtype = tf.dtypes.as_dtype(array.dtype if array.dtype != object else tf.string)
    proto = tensor_pb2.TensorProto(
        dtype=dtype.as_datatype_enum,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in array.shape]
        ),
    )
    field = _TYPED_FIELD.get(dtype.as_datatype_enum)
    if field is None:  # half, complex ...: fall back to tensor_content
        return tf.make_tensor_proto(array)
    flat = array.ravel()
    if field == "string_val":
        getattr(proto, field).extend(v if isinstance(v, bytes) else str(v).encode() for v in flat)
    else:
        getattr(proto, field).extend(flat.tolist())
    return proto
