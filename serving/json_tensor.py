"""TF Serving's REST JSON <-> numpy / tf.Example (util/json_tensor.cc semantics).

Row (`instances`) and columnar (`inputs`) predict requests, `{"b64": ...}` binary strings,
dtypes taken from the signature, `predictions` / `outputs` responses, and the classify/regress
`examples` -> tf.Example conversion. Unlike TF Serving, web-safe base64 is accepted too.

Every decoder here answers a malformed body with INVALID_ARGUMENT and allocates no more than
a small multiple of the body: the body's nesting depth is checked before it is parsed
(`json_body.check_depth`), an input's element count before it is converted, and integers
are range-checked against the input's dtype rather than wrapped.
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

from serving import json_body
from serving.errors import ServingError, invalid
from serving.servable import Signature, dtype_name, numpy_dtype
from serving.tensors import MAX_RANK, element_count

_FLOATS = {types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_HALF, types_pb2.DT_BFLOAT16}
_INTS = {
    types_pb2.DT_INT8, types_pb2.DT_INT16, types_pb2.DT_INT32, types_pb2.DT_INT64,
    types_pb2.DT_UINT8, types_pb2.DT_UINT16, types_pb2.DT_UINT32, types_pb2.DT_UINT64,
}  # fmt: skip


class JsonBody(dict):
    """A parsed request body, with what the pre-parse scan learnt about its bytes."""

    scan: json_body.BodyScan | None = None


def loads(body: bytes) -> JsonBody:
    """Parse a request body (orjson; stdlib json as fallback for NaN/Infinity literals), after
    refusing one nested deeper than --max_json_depth."""
    if not isinstance(body, bytes):
        body = bytes(body)
    scan = json_body.check_depth(body)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        try:
            value = json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise invalid(f"JSON Parse error: {e}") from None
        if b"\\u" in body:
            _refuse_lone_surrogates(value)
    if not isinstance(value, dict):
        raise invalid("JSON Parse error: the request body must be a JSON object")
    parsed = JsonBody(value)
    parsed.scan = scan
    return parsed


def _refuse_lone_surrogates(value) -> None:
    """INVALID_ARGUMENT for a string (or key) holding a lone UTF-16 surrogate ("\\ud800"),
    which the stdlib parser accepts but orjson, TF Serving's RapidJSON and protobuf refuse."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise invalid("JSON Parse error: a string holds a lone surrogate") from None
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())


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


def _to_bytes(value, name: str, depth: int = 0):
    if isinstance(value, list):
        if depth >= MAX_RANK:
            raise invalid(f"Input '{name}' is nested deeper than {MAX_RANK} lists")
        return [_to_bytes(v, name, depth + 1) for v in value]
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate ("\ud800"), which json accepts
            raise invalid(f"Input '{name}' holds a string that is not valid Unicode") from None
    if _is_b64(value):
        return _b64decode(value["b64"])
    raise invalid(
        f"Input '{name}' expects DT_STRING values (strings or {{\"b64\": ...}}), got {type(value).__name__}"
    )


def _string_array(value, sig: Signature, name: str) -> np.ndarray:
    """A DT_STRING input: strings (UTF-8) and {"b64": ...} objects, as an object array."""
    try:
        array = np.array(_to_bytes(value, name), dtype=object)
    except ValueError:
        array = None
    if array is None or any(not isinstance(v, bytes) for v in array.flat):
        raise invalid(
            f"Input '{name}' is a ragged list: every row must have the same shape. {sig.spec_text()}"
        )
    return array


def _family(dt: int, name: str) -> str:
    """The JSON values a (non-string) dtype takes: "f" numbers, "i" integers, "b" booleans."""
    if dt in _FLOATS:
        return "f"
    if dt in _INTS:
        return "i"
    if dt == types_pb2.DT_BOOL:
        return "b"
    raise ServingError(
        grpc.StatusCode.UNIMPLEMENTED,
        f"Input '{name}' has dtype {dtype_name(dt)}, which the REST API does not support",
    )


def to_array(
    value, sig: Signature, name: str, scan: json_body.BodyScan | None = None
) -> np.ndarray:
    """One JSON value -> array of the input's declared dtype, or a clear error.

    scan: the body's pre-parse scan (`JsonBody.scan`); without one, the values' JSON types
    are checked before numpy converts them (slower, equally strict).
    """
    info = sig.proto.inputs.get(name)
    if info is None:  # unknown name: reported with the expected names by validate_inputs
        return np.asarray(0)
    dt = info.dtype
    shape = json_body.nested_shape(value, MAX_RANK)
    if len(shape) > MAX_RANK:
        raise invalid(f"Input '{name}' is nested deeper than {MAX_RANK} lists")
    count = element_count(shape, f"input '{name}'")
    if dt == types_pb2.DT_STRING:
        return _string_array(value, sig, name)
    family = _family(dt, name)
    target = numpy_dtype(dt)
    try:
        return json_body.numeric_array(
            value, target, family, scan is not None and scan.numpy_may_judge(count, family)
        )
    except json_body.Mismatch as e:
        if e.kind == "ragged":
            raise invalid(f"Input '{name}' is {e}. {sig.spec_text()}") from None
        if e.kind == "range":
            raise invalid(f"Input '{name}' ({dtype_name(dt)}) has {e}") from None
        raise invalid(
            f"Input '{name}' expects {dtype_name(dt)} values but got {e}. {sig.spec_text()}"
        ) from None


def predict_inputs(body: dict, sig: Signature) -> tuple[dict[str, np.ndarray], bool]:
    """Decode `instances` (row format) or `inputs` (columnar); returns (inputs, is_row).

    `body` is what `loads` returned (a plain dict works too, with slower type checks).
    """
    scan = getattr(body, "scan", None)
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
            return {names[0]: to_array(rows, sig, names[0], scan)}, True
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
        return {k: to_array(v, sig, k, scan) for k, v in columns.items()}, True
    cols = body["inputs"]
    if isinstance(cols, dict) and not _is_b64(cols):
        return {k: to_array(v, sig, k, scan) for k, v in cols.items()}, False
    if len(names) != 1:
        raise invalid(f"'inputs' must be an object keyed by input name. {sig.spec_text()}")
    return {names[0]: to_array(cols, sig, names[0], scan)}, False


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
    if array.ndim == 0:  # orjson writes numpy scalars, not 0-d arrays
        return array[()]
    return np.ascontiguousarray(array)


_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def _finite_or_raw(value, splicer: json_body.Splicer):
    """`value` (from _jsonable) as is, or, when it holds NaN or +-Infinity, a placeholder for
    its JSON with TF Serving's tokens for those (orjson would write null)."""
    if not json_body.has_nonfinite(value):
        return value
    return splicer.add(json_body.nonfinite_json(value, np.ravel(value), _NUMPY))


def predict_response(outputs: dict[str, np.ndarray], row_format: bool) -> bytes:
    """`{"predictions": ...}` for row requests, `{"outputs": ...}` for columnar ones.

    NaN and +-Infinity are written `NaN`, `Infinity`, `-Infinity`, as TF Serving does.
    """
    names = list(outputs)
    splicer = json_body.Splicer()
    if not row_format:
        if len(names) == 1:
            payload = {"outputs": _finite_or_raw(_jsonable(outputs[names[0]], names[0]), splicer)}
        else:
            payload = {
                "outputs": {n: _finite_or_raw(_jsonable(outputs[n], n), splicer) for n in names}
            }
    elif len(names) == 1:
        payload = {"predictions": _finite_or_raw(_jsonable(outputs[names[0]], names[0]), splicer)}
    else:
        sizes = {n: (outputs[n].shape[0] if outputs[n].ndim else None) for n in names}
        if len(set(sizes.values())) != 1 or None in sizes.values():
            raise invalid(
                f"Tensor name: {names[0]} has inconsistent batch size: {sizes} "
                "(use the columnar 'inputs' format for such signatures)"
            )
        columns = {n: _jsonable(outputs[n], n) for n in names}
        count = next(iter(sizes.values()))
        rows = [{n: columns[n][i] for n in names} for i in range(count)]
        for n in names:
            if json_body.has_nonfinite(columns[n]):
                for row in rows:
                    row[n] = _finite_or_raw(row[n], splicer)
        payload = {"predictions": rows}
    return splicer.dumps(payload, _NUMPY)


def _feature(value, name: str) -> feature_pb2.Feature:
    values = value if isinstance(value, list) else [value]
    feature = feature_pb2.Feature()
    if not values:
        return feature
    try:
        if all(isinstance(v, str) or _is_b64(v) for v in values):
            feature.bytes_list.value.extend(
                _b64decode(v["b64"]) if _is_b64(v) else v.encode("utf-8") for v in values
            )
            return feature
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            feature.int64_list.value.extend(values)
            return feature
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            feature.float_list.value.extend(float(v) for v in values)
            return feature
    except (ValueError, OverflowError, UnicodeEncodeError) as e:  # int64 range, lone surrogates
        raise invalid(f"Feature '{name}' has a value protobuf refuses: {e}") from None
    raise invalid(
        f"Feature '{name}' must be a number, a string, {{\"b64\": ...}} or a flat list of one "
        "of these"
    )


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


def _results_json(payload: dict) -> bytes:
    """orjson's text, or, where a score is NaN or +-Infinity (orjson writes those as null, and
    nothing else here is null), the stdlib's, which writes them as TF Serving does."""
    text = orjson.dumps(payload)
    if b"null" not in text:
        return text
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def classify_json(result: classification_pb2.ClassificationResult) -> bytes:
    """`{"results": [[[label, score], ...], ...]}`."""
    rows = [[[c.label, c.score] for c in cl.classes] for cl in result.classifications]
    return _results_json({"results": rows})


def regress_json(result: regression_pb2.RegressionResult) -> bytes:
    """`{"results": [value, ...]}`."""
    return _results_json({"results": [r.value for r in result.regressions]})
