"""Fuzz target: the Open Inference Protocol's REST infer body (`serving.v2.rest_infer_request`),
JSON header and binary tensor data, from any bytes.

Byte 0 picks how the inference-header-content-length header is made; the rest is split at
the first b"\\x00|" into the JSON header and the binary data that follows it:
0: no header (the whole rest is the body); 1: the exact header length; 2: a number read
from the data's first two bytes; 3: the text of the data's first eight bytes.

    python fuzz/fuzz_v2_rest.py -max_total_time=60     # atheris (pip install .[fuzz])
    python fuzz/fuzz_v2_rest.py --plain 2000           # no atheris: random mutations
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as harness  # noqa: E402

v2 = None
SEPARATOR = b"\x00|"


def load() -> None:
    """Import the decoder (under atheris' instrumentation when fuzzing)."""
    global v2
    from serving import v2 as module

    v2 = module
    harness.configure_limits()


def split(data: bytes) -> tuple[bytes, str | None]:
    """(body, header length text) that `data` encodes (see the module's docstring)."""
    mode, rest = data[0] % 4, data[1:]
    header, sep, tail = rest.partition(SEPARATOR)
    if mode == 0 or not sep:
        return rest, None
    if mode == 1:
        return header + tail, str(len(header))
    if mode == 2:
        return header + tail, str(int.from_bytes(tail[:2], "little"))
    return header + tail, tail[:8].decode("latin-1")


def test_one_input(data: bytes) -> None:
    """The fuzz target: a REST infer body and its header-length header."""
    if v2 is None:
        load()
    if not data:
        return
    body, length = split(data)
    bound = harness.CONSTANT + harness.PER_BYTE * len(body)
    harness.bounded(bound, v2.rest_infer_request, "m", None, body, length)


def _seed(doc: dict, blob: bytes = b"") -> bytes:
    header = json.dumps(doc).encode()
    return (b"\x01" + header + SEPARATOR + blob) if blob else (b"\x00" + header)


def seed_inputs() -> list[bytes]:
    """JSON and binary requests as NVIDIA's clients send them, and a few near misses."""
    text = b"".join(struct.pack("<I", len(s)) + s for s in (b"hello", b"", b"\xff"))
    floats = struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)
    return [
        _seed(
            {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        ),
        _seed(
            {
                "id": "7",
                "inputs": [{"name": "t", "shape": [1, 2], "datatype": "INT64", "data": [[1, 2]]}],
                "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
                "parameters": {"signature_name": "serving_default"},
            }
        ),
        _seed({"inputs": [{"name": "s", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]}),
        _seed(
            {
                "inputs": [
                    {
                        "name": "s",
                        "shape": [3],
                        "datatype": "BYTES",
                        "parameters": {"binary_data_size": len(text)},
                    },
                    {
                        "name": "x",
                        "shape": [2, 2],
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": len(floats)},
                    },
                ],
                "parameters": {"binary_data_output": True},
            },
            text + floats,
        ),  # fmt: skip
        _seed({"inputs": [{"name": "b", "shape": [2], "datatype": "BOOL", "data": [True, False]}]}),
    ]


def main(argv: list[str] | None = None) -> None:
    harness.main("fuzz_v2_rest", load, test_one_input, seed_inputs, argv, harness.JSON_WORDS)


if __name__ == "__main__":
    main()
