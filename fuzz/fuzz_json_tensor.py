"""Fuzz target: TF Serving's REST JSON request decoder (`serving.json_tensor`) from any bytes.

The first byte picks one of four signatures (DT_STRING [-1], DT_FLOAT [-1,3], DT_INT32
[-1,-1], or DT_FLOAT a + DT_INT32 b) and whether the body also goes through the
classify/regress `examples` decoder; the rest is the request body. `loads` + `predict_inputs`
must return or raise ServingError, within the memory bound of `_harness`.

    python fuzz/fuzz_json_tensor.py -max_total_time=60     # atheris (pip install .[fuzz])
    python fuzz/fuzz_json_tensor.py --plain 2000           # no atheris: random mutations
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as harness  # noqa: E402

json_tensor = None
SIGNATURES: list = []


def load() -> None:
    """Import the decoder (under atheris' instrumentation when fuzzing) and build signatures."""
    global json_tensor
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import meta_graph_pb2

    from serving import json_tensor as module
    from serving.servable import Signature

    json_tensor = module
    harness.configure_limits()
    specs = [
        {"s": (types_pb2.DT_STRING, [-1])},
        {"x": (types_pb2.DT_FLOAT, [-1, 3])},
        {"t": (types_pb2.DT_INT32, [-1, -1])},
        {"a": (types_pb2.DT_FLOAT, [-1]), "b": (types_pb2.DT_INT32, [-1])},
    ]
    SIGNATURES.clear()
    for spec in specs:
        proto = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
        for name, (dtype, dims) in spec.items():
            proto.inputs[name].dtype = dtype
            for d in dims:
                proto.inputs[name].tensor_shape.dim.add(size=d)
        SIGNATURES.append(Signature("serving_default", proto))


def _decode(body: bytes, selector: int) -> None:
    request = json_tensor.loads(body)
    if selector & 0x10:
        json_tensor.examples_input(request)
    else:
        json_tensor.predict_inputs(request, SIGNATURES[selector % len(SIGNATURES)])


def test_one_input(data: bytes) -> None:
    """The fuzz target: byte 0 selects the signature / decoder, the rest is the body."""
    if json_tensor is None:
        load()
    if not data:
        return
    body = data[1:]
    harness.bounded(harness.CONSTANT + harness.PER_BYTE * len(body), _decode, body, data[0])


def seed_inputs() -> list[bytes]:
    """Well-formed bodies for each signature, and a few near misses."""
    docs = [
        (0, {"instances": ["a", {"b64": "/w=="}, "caf\u00e9"]}),
        (0, {"inputs": [["x", "y"], ["z", "w"]]}),
        (1, {"instances": [[1.0, 2.5, -3], [0, 1e-3, 7]]}),
        (1, {"inputs": [[1, 2, 3]], "signature_name": "serving_default"}),
        (2, {"instances": [[1, 2], [3, 4]]}),
        (2, {"inputs": [[2147483647, -2147483648]]}),
        (3, {"instances": [{"a": 1.5, "b": 2}, {"a": -1, "b": 3}]}),
        (3, {"inputs": {"a": [1.0], "b": [7]}}),
        (0x10, {"examples": [{"x": 1, "y": [1.5, 2.0], "s": "t", "b": {"b64": "AA=="}}]}),
        (0x10, {"context": {"c": 3}, "examples": [{"x": [1, 2]}]}),
    ]
    seeds = [bytes([sel]) + json.dumps(doc).encode() for sel, doc in docs]
    seeds.append(b"\x01" + b'{"instances": [[NaN, Infinity, -Infinity]]}')
    return seeds


def main(argv: list[str] | None = None) -> None:
    harness.main("fuzz_json_tensor", load, test_one_input, seed_inputs, argv, harness.JSON_WORDS)


if __name__ == "__main__":
    main()
