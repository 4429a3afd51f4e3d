"""TF Serving's REST JSON <-> numpy / tf.Example (util/json_tensor.cc semantics).

Row (`instances`) and columnar (`inputs`) predict requests, `{"b64": ...}` binary strings,
dtypes taken from the signature, `predictions` / `outputs` responses, and the classify/regress
`examples` -> tf.Example conversion. Unlike TF Serving, web-safe base64 is accepted too.
"""

from __future__ import annotations

import base64
import binascii
import json

import grpc
import numpy as np
import orjson
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2

from serving.errors import ServingError, invalid
from serving.servable import Signature, dtype_name, numpy_dtype

_FLOATS = {types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_HALF, types_pb2.DT_BFLOAT16}
_INTS = {
    types_pb2.DT_INT8, types_pb2.DT_INT16, types_pb2.DT_INT32, types_pb2.DT_INT64,
    types_pb2.DT_UINT8, types_pb2.DT_UINT16, types_pb2.DT_UINT32, types_pb2.DT_UINT64,
}  # fmt: skip


def loads(body: bytes) -> dict:
    """Parse a request body (orjson; stdlib json as fallback for NaN/Infinity literals)."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        try:
            value = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise invalid(f"JSON Parse error: {e}") from None
    if not isinstance(value, dict):
        raise invalid("JSON Parse error: the request body must be a JSON object")
    return value


def _is_b64(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _b64decode(text) -> bytes:
    if not isinstance(text, str):
        raise invalid('"b64" value must be a string')
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"Unable to base64 decode: {text[:40]!r}") from None


def _to_bytes(value, name: str):
    if isinstance(value, list):
        return [_to_bytes(v, name) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8")
    if _is_b64(value):
        return _b64decode(value["b64"])
    raise invalid(
        f"Input '{name}' expects DT_STRING values (strings or {{\"b64\": ...}}), got {type(value).__name__}"
    )


def to_array(value, sig: Signature, name: str) -> np.ndarray:
    """One JSON value -> array of the input's declared dtype, or a clear error."""
    info = sig.proto.inputs.get(name)
    if info is None:  # unknown name: reported with the expected names by validate_inputs
        return np.asarray(0)
    dt = info.dtype
    try:
        if dt == types_pb2.DT_STRING:
            array = np.array(_to_bytes(value, name), dtype=object)
            if array.dtype != object or any(not isinstance(v, bytes) for v in array.flat):
                raise ValueError("ragged")
            return array
        array = np.asarray(value)
    except ValueError:
        raise invalid(
            f"Input '{name}' is a ragged list: every row must have the same shape. {sig.spec_text()}"
        ) from None
    kind = array.dtype.kind
    if array.size == 0 and kind == "f":
        kind = "i" if dt in _INTS else kind
    if dt in _FLOATS:
        ok = kind in "fiu"
    elif dt in _INTS:
        ok = kind in "iu"
    elif dt == types_pb2.DT_BOOL:
        ok = kind == "b"
    else:
        raise ServingError(
            grpc.StatusCode.UNIMPLEMENTED,
            f"Input '{name}' has dtype {dtype_name(dt)}, which the REST API does not support",
        )
    if not ok:
        got = {
            "U": "strings",
            "O": "mixed values or null",
            "f": "non-integer numbers",
            "b": "booleans",
        }
        raise invalid(
            f"Input '{name}' expects {dtype_name(dt)} values but got "
            f"{got.get(kind, array.dtype.name)}. {sig.spec_text()}"
        )
    try:
        return array.astype(numpy_dtype(dt), copy=False)
    except OverflowError:
        raise invalid(f"Input '{name}' has values out of range for {dtype_name(dt)}") from None


def predict_inputs(body: dict, sig: Signature) -> tuple[dict[str, np.ndarray], bool]:
    """Decode `instances` (row format) or `inputs` (columnar); returns (inputs, is_row)."""
    has_rows, has_cols = "instances" in body, "inputs" in body
    if has_rows == has_cols:
        raise invalid(
            "JSON object must have exactly one of 'instances' (row format) or 'inputs' "
            "(columnar format)"
        )
    names = list(sig.proto.inputs)
    if has_rows:
        rows = body["instances"]
        if not isinstance(rows, list) or not rows:
            raise invalid("'instances' must be a non-empty JSON list")
        named = isinstance(rows[0], dict) and not _is_b64(rows[0])
        if not named:
            if len(names) != 1:
                raise invalid(
                    f"The signature has {len(names)} inputs, so each instance must be a JSON "
                    f"object with keys {sorted(names)}. {sig.spec_text()}"
                )
            return {names[0]: to_array(rows, sig, names[0])}, True
        columns: dict[str, list] = {}
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or _is_b64(row):
                raise invalid(
                    f"Failed to process element: {i} of 'instances' list: expected an object"
                )
            if set(row) != set(rows[0]):
                raise invalid(
                    f"Failed to process element: {i} of 'instances' list: its keys "
                    f"{sorted(row)} differ from element 0's {sorted(rows[0])}"
                )
            for k, v in row.items():
                columns.setdefault(k, []).append(v)
        return {k: to_array(v, sig, k) for k, v in columns.items()}, True
    cols = body["inputs"]
    if isinstance(cols, dict) and not _is_b64(cols):
        return {k: to_array(v, sig, k) for k, v in cols.items()}, False
    if len(names) != 1:
        raise invalid(f"'inputs' must be an object keyed by input name. {sig.spec_text()}")
    return {names[0]: to_array(cols, sig, names[0])}, False


def _jsonable(array: np.ndarray, name: str):
    """Something orjson (with OPT_SERIALIZE_NUMPY) writes as TF Serving would."""
    if array.dtype == object or array.dtype.kind == "S":
        as_b64 = name.endswith("_bytes")

        def conv(v):
            if isinstance(v, bytes):
                if not as_b64:
                    try:
                        return v.decode("utf-8")
                    except UnicodeDecodeError:
                        pass
                return {"b64": base64.b64encode(v).decode()}
            return v

        return (
            np.vectorize(conv, otypes=[object])(array).tolist()
            if array.ndim
            else conv(array.item())
        )
    if array.dtype in (np.float16,) or array.dtype.kind == "V":
        array = array.astype(np.float32)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return np.ascontiguousarray(array)


def predict_response(outputs: dict[str, np.ndarray], row_format: bool) -> bytes:
    """`{"predictions": ...}` for row requests, `{"outputs": ...}` for columnar ones."""
    names = list(outputs)
    if not row_format:
        if len(names) == 1:
            payload = {"outputs": _jsonable(outputs[names[0]], names[0])}
        else:
            payload = {"outputs": {n: _jsonable(outputs[n], n) for n in names}}
    elif len(names) == 1:
        payload = {"predictions": _jsonable(outputs[names[0]], names[0])}
    else:
        sizes = {n: (outputs[n].shape[0] if outputs[n].ndim else None) for n in names}
        if len(set(sizes.values())) != 1 or None in sizes.values():
            raise invalid(
                f"Tensor name: {names[0]} has inconsistent batch size: {sizes} "
                "(use the columnar 'inputs' format for such signatures)"
            )
        columns = {n: _jsonable(outputs[n], n) for n in names}
        count = next(iter(sizes.values()))
        payload = {"predictions": [{n: columns[n][i] for n in names} for i in range(count)]}
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def _feature(value, name: str) -> feature_pb2.Feature:
    values = value if isinstance(value, list) else [value]
    feature = feature_pb2.Feature()
    if not values:
        return feature
    if all(isinstance(v, str) or _is_b64(v) for v in values):
        feature.bytes_list.value.extend(
            _b64decode(v["b64"]) if _is_b64(v) else v.encode("utf-8") for v in values
        )
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        feature.int64_list.value.extend(values)
    elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        feature.float_list.value.extend(float(v) for v in values)
    else:
        raise invalid(
            f"Feature '{name}' must be a number, a string, {{\"b64\": ...}} or a flat list of one "
            "of these"
        )
    return feature


def _example(obj, where: str) -> example_pb2.Example:
    if not isinstance(obj, dict):
        raise invalid(f"{where} must be a JSON object of features")
    example = example_pb2.Example()
    for k, v in obj.items():
        example.features.feature[k].CopyFrom(_feature(v, k))
    return example


def examples_input(body: dict) -> input_pb2.Input:
    """The `examples` (+ optional `context`) of a classify/regress body as an Input proto."""
    examples = body.get("examples")
    if not isinstance(examples, list) or not examples:
        raise invalid("'examples' must be a non-empty JSON list of objects")
    request_input = input_pb2.Input()
    if "context" in body:
        target = request_input.example_list_with_context
        target.context.CopyFrom(_example(body["context"], "'context'"))
    else:
        target = request_input.example_list
    for i, ex in enumerate(examples):
        target.examples.add().CopyFrom(_example(ex, f"examples[{i}]"))
    return request_input


def classify_json(result: classification_pb2.ClassificationResult) -> bytes:
    """`{"results": [[[label, score], ...], ...]}`."""
    rows = [[[c.label, c.score] for c in cl.classes] for cl in result.classifications]
    return orjson.dumps({"results": rows})


def regress_json(result: regression_pb2.RegressionResult) -> bytes:
    """`{"results": [value, ...]}`."""
    return orjson.dumps({"results": [r.value for r in result.regressions]})
