"""Fuzz target: TensorProto -> numpy for gRPC Predict (`serving.tensors.to_numpy`) from any
bytes, parsed as a TensorProto.

Bytes that are not a TensorProto are skipped; every proto that parses must decode or raise
ServingError, allocating at most the bound of `_harness` (which allows a broadcast
of one value up to its small --max_request_elements).

    python fuzz/fuzz_tensor_proto.py -max_total_time=60     # atheris (pip install .[fuzz])
    python fuzz/fuzz_tensor_proto.py --plain 2000           # no atheris: random mutations
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as harness  # noqa: E402

tensors = None
tensor_pb2 = None


def load() -> None:
    """Import the decoder (under atheris' instrumentation when fuzzing)."""
    global tensors, tensor_pb2
    from tensorflow.core.framework import tensor_pb2 as protos

    from serving import tensors as module

    tensors, tensor_pb2 = module, protos
    harness.configure_limits()


def test_one_input(data: bytes) -> None:
    """The fuzz target: `data` as a serialized TensorProto (a Predict input)."""
    if tensors is None:
        load()
    try:
        proto = tensor_pb2.TensorProto.FromString(data)
    except Exception:  # google.protobuf.message.DecodeError: not a TensorProto at all
        return
    bound = (
        harness.CONSTANT + harness.PER_BYTE * len(data) + harness.BROADCAST * harness.MAX_ELEMENTS
    )
    harness.bounded(bound, tensors.to_numpy, proto, "x")


def seed_inputs() -> list[bytes]:
    """What tf.make_tensor_proto sends (tensor_content) and typed fields of every dtype."""
    if tensors is None:
        load()
    import numpy as np
    import tensorflow as tf

    arrays = [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array([1, -2], np.int8),
        np.array([2**40], np.int64),
        np.array([1.5], np.float16),
        np.array([True, False]),
        np.array([1 + 2j], np.complex64),
        np.array([b"jpeg", b""], object),
    ]
    seeds = []
    for array in arrays:
        seeds.append(tf.make_tensor_proto(array).SerializeToString())
        typed = tensor_pb2.TensorProto()
        tensors.fill_proto(typed, array)
        seeds.append(typed.SerializeToString())
    broadcast = tensor_pb2.TensorProto(dtype=tf.string.as_datatype_enum, string_val=[b"x"])
    broadcast.tensor_shape.dim.add(size=8)
    seeds.append(broadcast.SerializeToString())
    return seeds


def main(argv: list[str] | None = None) -> None:
    harness.main("fuzz_tensor_proto", load, test_one_input, seed_inputs, argv)


if __name__ == "__main__":
    main()
