"""Fuzz target: the Open Inference Protocol's gRPC ModelInfer decoding
(`serving.v2.grpc_infer_request`) from any bytes, parsed as a ModelInferRequest.

Bytes that are not a ModelInferRequest are skipped (protobuf refuses them before the server
would see them); every request that parses must decode or raise ServingError, within the
memory bound of `_harness`.

    python fuzz/fuzz_v2_grpc.py -max_total_time=60     # atheris (pip install .[fuzz])
    python fuzz/fuzz_v2_grpc.py --plain 2000           # no atheris: random mutations
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as harness  # noqa: E402

v2 = None
v2_protos = None


def load() -> None:
    """Import the decoder (under atheris' instrumentation when fuzzing)."""
    global v2, v2_protos
    from serving import v2 as module
    from serving import v2_protos as protos

    v2, v2_protos = module, protos
    harness.configure_limits()


def test_one_input(data: bytes) -> None:
    """The fuzz target: `data` as a serialized ModelInferRequest."""
    if v2 is None:
        load()
    try:
        request = v2_protos.ModelInferRequest.FromString(data)
    except Exception:  # google.protobuf.message.DecodeError: not a request at all
        return
    harness.bounded(harness.CONSTANT + harness.PER_BYTE * len(data), v2.grpc_infer_request, request)


def seed_inputs() -> list[bytes]:
    """Requests with raw and typed contents, as NVIDIA's gRPC client sends them."""
    if v2_protos is None:
        load()
    seeds = []
    request = v2_protos.ModelInferRequest(model_name="m", model_version="1", id="a")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    request.raw_input_contents.append(struct.pack("<2f", 1.0, 2.0))
    request.outputs.add(name="y")
    seeds.append(request.SerializeToString())
    request = v2_protos.ModelInferRequest(model_name="m")
    request.inputs.add(name="s", datatype="BYTES", shape=[2])
    request.raw_input_contents.append(struct.pack("<I", 2) + b"hi" + struct.pack("<I", 0))
    request.parameters["signature_name"].string_param = "serving_default"
    seeds.append(request.SerializeToString())
    for datatype, field, values in (
        ("INT32", "int_contents", [1, -2, 3]),
        ("INT8", "int_contents", [1, -2, 3]),
        ("UINT64", "uint64_contents", [1, 2**64 - 1, 3]),
        ("FP64", "fp64_contents", [1.5, -2.0, 3e300]),
        ("BOOL", "bool_contents", [True, False, True]),
        ("BYTES", "bytes_contents", [b"a", b"", b"\xff"]),
    ):
        request = v2_protos.ModelInferRequest(model_name="m")
        tensor = request.inputs.add(name="x", datatype=datatype, shape=[3])
        getattr(tensor.contents, field).extend(values)
        seeds.append(request.SerializeToString())
    return seeds


def main(argv: list[str] | None = None) -> None:
    harness.main("fuzz_v2_grpc", load, test_one_input, seed_inputs, argv)


if __name__ == "__main__":
    main()
