"""The abusive requests of the serving hardening work, one list shared by the probe and soak
benchmarks (benchmarks/probes.py, benchmarks/soak.py).

    from benchmarks.abuse import PROBES, Ports
    answer, seconds = PROBES[0].send(Ports(grpc=8500, rest=8501))

Each `Probe` sends one request that costs the client little and a naive server a lot (memory,
CPU, a stuck thread), and returns `(answer, elapsed seconds)`: the HTTP status (int) or the gRPC
status code's name, or what the client saw instead ("timeout", "reset", "closed", "refused").
`last_detail()` gives the start of the server's error message for the last send in this thread.

Bodies are built when a probe is sent, never at import; the big ones are streamed (the 200 MB
JSON body is one 1 MB block sent 200 times: about 0.05 s of client CPU) and the two
decompression bombs (a 1.2 MB gzip of 1.2 GB of zeros, a 1.2 MB PNG of 20000x20000 RGB pixels)
are compressed once, streaming with zlib, and kept (about 3 s of client CPU each, once per
process: `prepare()`). So no probe costs the client much per send.
"""

from __future__ import annotations

import base64
import functools
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"

Answer = int | str  # HTTP status, gRPC code name, or a client-side outcome
MB = 1 << 20
#: how much of an answer's body is read (a 200 OK to an abusive request can be huge)
READ_CAP = 4 * MB

_local = threading.local()


@dataclass(frozen=True)
class Ports:
    """Where the server listens."""

    grpc: int
    rest: int
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class Probe:
    """One abusive request."""

    name: str
    protocol: str  # REST, OIP (REST /v2), gRPC, raw HTTP
    what: str
    send_fn: Callable[[Ports, float], tuple[Answer, float]]
    #: client timeout: a hardened server answers these at once, a naive one may never
    timeout: float = 60.0

    def send(self, ports: Ports, timeout: float | None = None) -> tuple[Answer, float]:
        """Send the request; (answer, elapsed seconds)."""
        _local.detail = ""
        return self.send_fn(ports, self.timeout if timeout is None else timeout)


def last_detail() -> str:
    """The start of the answer's body (or the gRPC details) of this thread's last send."""
    return getattr(_local, "detail", "")


# ---- raw HTTP/1.1 ------------------------------------------------------------------------------
def http_exchange(
    ports: Ports,
    head: bytes,
    body: Iterable[bytes] = (),
    timeout: float = 60.0,
) -> tuple[Answer, float]:
    """Send `head` (request line and headers, without the blank line) and the body's blocks on a
    fresh connection; (HTTP status or client outcome, seconds to the end of the answer).

    A server that answers early and closes (413) is read even if sending failed.
    """
    start = time.perf_counter()
    deadline = start + timeout
    try:
        sock = socket.create_connection((ports.host, ports.rest), timeout=timeout)
    except OSError:
        return "refused", time.perf_counter() - start
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.sendall(head + b"\r\n\r\n")
            for block in body:
                sock.settimeout(max(0.01, deadline - time.perf_counter()))
                sock.sendall(block)
        except TimeoutError:
            return "timeout", time.perf_counter() - start
        except OSError:
            pass  # the server may have answered and closed: read what it said
        answer = _read_answer(sock, deadline)
    return answer, time.perf_counter() - start


def _read_answer(sock: socket.socket, deadline: float) -> Answer:
    """Status of the HTTP answer on `sock` (its body read up to READ_CAP, kept as detail)."""
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            sock.settimeout(max(0.01, deadline - time.perf_counter()))
            data = sock.recv(65536)
            if not data:
                return "closed"
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == b"content-length":
                length = int(value.strip())
        want = min(length, READ_CAP)
        while len(rest) < want:
            sock.settimeout(max(0.01, deadline - time.perf_counter()))
            data = sock.recv(min(1 << 20, want - len(rest)))
            if not data:
                break
            rest += data
        _local.detail = rest[:300].decode("utf-8", "replace")
        return status
    except TimeoutError:
        return "timeout"
    except (ValueError, IndexError):
        return "garbled"
    except OSError:
        return "reset"


def post(
    ports: Ports,
    path: str,
    body: bytes | Iterable[bytes],
    length: int | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> tuple[Answer, float]:
    """POST a body (bytes, or blocks with their total `length`) with a Content-Length."""
    if isinstance(body, bytes):
        length, body = len(body), (body,)
    lines = [f"POST {path} HTTP/1.1", f"Host: {ports.host}", "Connection: close",
             "Content-Type: application/json", f"Content-Length: {length}"]  # fmt: skip
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return http_exchange(ports, "\r\n".join(lines).encode("latin-1"), body, timeout)


# ---- gRPC ------------------------------------------------------------------------------------
def grpc_channel(ports: Ports):
    """A fresh channel without message size limits (the probes are small, answers may not be)."""
    import grpc

    options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    return grpc.insecure_channel(f"{ports.host}:{ports.grpc}", options=options)


def grpc_predict(ports: Ports, request, timeout: float) -> tuple[Answer, float]:
    """PredictionService.Predict on a fresh channel; (code name, seconds)."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    start = time.perf_counter()
    with grpc_channel(ports) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            stub.Predict(request, timeout=timeout)
            code = "OK"
        except grpc.RpcError as e:
            code = e.code().name
            _local.detail = (e.details() or "")[:300]
    return code, time.perf_counter() - start


def string_tensor(values: list[bytes], shape: list[int] | None = None):
    """A DT_STRING TensorProto (shape: as declared, default [len(values)])."""
    from tensorflow.core.framework import tensor_pb2, types_pb2

    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=values)
    for size in [len(values)] if shape is None else shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def scalar_tensor(value: int | float, dtype: str):
    """A one-element [1] TensorProto of DT_INT32 ("int32") or DT_FLOAT ("float")."""
    from tensorflow.core.framework import tensor_pb2, types_pb2

    enum, field = {"int32": (types_pb2.DT_INT32, "int_val"),
                   "float": (types_pb2.DT_FLOAT, "float_val")}[dtype]  # fmt: skip
    proto = tensor_pb2.TensorProto(dtype=enum, **{field: [value]})
    proto.tensor_shape.dim.add(size=1)
    return proto


# ---- the bodies --------------------------------------------------------------------------------
@functools.cache
def shakespeare(n: int) -> str:
    """The first n characters of tinyshakespeare, repeated if the file is shorter or absent."""
    try:
        text = SHAKESPEARE.read_text()
    except OSError:
        text = "First Citizen:\nBefore we proceed any further, hear me speak.\n"
    return (text * (n // len(text) + 1))[:n]


@functools.cache
def gzip_bomb(size: int = 1200 * MB) -> bytes:
    """gzip of `size` zero bytes (1.2 GB -> 1.2 MB), compressed in 1 MB blocks."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(MB)
    parts = [compressor.compress(zeros) for _ in range(size // MB)]
    parts.append(compressor.flush())
    return b"".join(parts)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.cache
def png_bomb(side: int = 20000) -> bytes:
    """A side x side RGB PNG of one colour (20000 -> 1.2 GB of pixels in 1.2 MB), its IDAT
    compressed 16 rows at a time."""
    compressor = zlib.compressobj(9)
    rows = 16
    block = (b"\x00" + b"\x60\x90\xc0" * side) * rows  # filter byte 0, then the pixels
    parts = [compressor.compress(block) for _ in range(side // rows)]
    parts.append(compressor.compress((b"\x00" + b"\x60\x90\xc0" * side) * (side % rows)))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"".join(
        [b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", header), _png_chunk(b"IDAT", b"".join(parts)),
         _png_chunk(b"IEND", b"")]
    )  # fmt: skip


def json_string_list(total: int = 200 * MB, item: bytes = b'"ab",') -> tuple[Iterable[bytes], int]:
    """A `{"instances": ["ab", ...]}` body of about `total` bytes as (1 MB blocks, length)."""
    head, tail = b'{"instances": [', b'"ab"]}'
    block = item * (MB // len(item))
    count = max(1, (total - len(head) - len(tail)) // len(block))

    def blocks():
        yield head
        for _ in range(count):
            yield block
        yield tail

    return blocks(), len(head) + count * len(block) + len(tail)


def _gpt_generate_inputs(prompts: list[str], max_new_tokens: int) -> dict:
    n = len(prompts)
    return {"prompt": prompts, "max_new_tokens": [max_new_tokens] * n,
            "temperature": [0.8] * n, "top_k": [0] * n, "top_p": [1.0] * n, "seed": [1] * n,
            "stop": [""] * n}  # fmt: skip


# ---- the probes --------------------------------------------------------------------------------
def _tagger_long_sentence(ports: Ports, timeout: float) -> tuple[Answer, float]:
    sentences = [" ".join(["it"] * 1000)] + ["it"] * 999
    body = orjson.dumps({"inputs": {"sentences": sentences}})
    return post(ports, "/v1/models/tagger:predict", body, timeout=timeout)


def _gpt_big_prompt(ports: Ports, timeout: float) -> tuple[Answer, float]:
    prompts = [shakespeare(MB)] + ["ROMEO:"] * 499
    body = orjson.dumps({"signature_name": "generate", "inputs": _gpt_generate_inputs(prompts, 1)})
    return post(ports, "/v1/models/gpt:predict", body, timeout=timeout)


def _seq2seq_attention(ports: Ports, timeout: float) -> tuple[Answer, float]:
    words = "a man in a blue shirt is riding his bike down the street with a dog".split()
    sentence = " ".join(words[i % len(words)] for i in range(300))
    body = orjson.dumps({
        "signature_name": "translate_with_attention",
        "inputs": {"source": [sentence] * 200, "beam_size": 2, "max_length": 100},
    })  # fmt: skip
    return post(ports, "/v1/models/seq2seq:predict", body, timeout=timeout)


def _grpc_huge_string_shape(ports: Ports, timeout: float) -> tuple[Answer, float]:
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "no_such_model"
    request.inputs["x"].CopyFrom(string_tensor([b"x"], shape=[2**28]))
    return grpc_predict(ports, request, timeout)


def _oip_huge_bytes_shape(ports: Ports, timeout: float) -> tuple[Answer, float]:
    header = orjson.dumps({"inputs": [{"name": "sentences", "shape": [2**29], "datatype": "BYTES",
                                       "parameters": {"binary_data_size": 0}}]})  # fmt: skip
    return post(ports, "/v2/models/tagger/infer", header, timeout=timeout,
                headers={"Inference-Header-Content-Length": str(len(header))})  # fmt: skip


def _negative_content_length(ports: Ports, timeout: float) -> tuple[Answer, float]:
    head = (b"POST /v1/models/tagger:predict HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: -1")  # fmt: skip
    return http_exchange(ports, head, (b'{"instances": ["a"]}',), timeout)


def _gzip_bomb(ports: Ports, timeout: float) -> tuple[Answer, float]:
    return post(ports, "/v1/models/tagger:predict", gzip_bomb(), timeout=timeout,
                headers={"Content-Encoding": "gzip"})  # fmt: skip


def _negative_chunk_size(ports: Ports, timeout: float) -> tuple[Answer, float]:
    head = (b"POST /v1/models/tagger:predict HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked")  # fmt: skip
    return http_exchange(ports, head, (b"-1\r\n{}\r\n0\r\n\r\n",), timeout)


def _gpt_score_big_text(ports: Ports, timeout: float) -> tuple[Answer, float]:
    body = orjson.dumps({"signature_name": "score", "inputs": {"text": [shakespeare(MB)]}})
    return post(ports, "/v1/models/gpt:predict", body, timeout=timeout)


#: max_new_tokens of the cancelled generation: the most gpt's generate accepts (it asserts
#: <= 10000), under the hardened server's --max_generated_tokens; 20 s or more of CPU
CANCEL_TOKENS = 10000


def _grpc_generate_cancelled(ports: Ports, timeout: float) -> tuple[Answer, float]:
    """No deadline; the client cancels after 1 s (or returns the answer if it came sooner)."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "gpt", "generate"
    for name, value in _gpt_generate_inputs(["ROMEO:"], CANCEL_TOKENS).items():
        value = value[0]
        if isinstance(value, str):
            request.inputs[name].CopyFrom(string_tensor([value.encode()]))
        else:
            kind = "float" if isinstance(value, float) else "int32"
            request.inputs[name].CopyFrom(scalar_tensor(value, kind))
    start = time.perf_counter()
    with grpc_channel(ports) as channel:
        future = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict.future(request)
        try:
            future.result(timeout=min(1.0, timeout))
            code = "OK"
        except grpc.FutureTimeoutError:
            future.cancel()
            code = "CANCELLED"
            _local.detail = "cancelled by the client after 1 s"
        except grpc.RpcError as e:
            code = e.code().name
            _local.detail = (e.details() or "")[:300]
    return code, time.perf_counter() - start


def _json_200mb(ports: Ports, timeout: float) -> tuple[Answer, float]:
    blocks, length = json_string_list()
    return post(ports, "/v1/models/tagger:predict", blocks, length, timeout=timeout)


def _json_nested(ports: Ports, timeout: float) -> tuple[Answer, float]:
    body = b'{"instances": ' + b"[" * 10000 + b"]" * 10000 + b"}"
    return post(ports, "/v1/models/tagger:predict", body, timeout=timeout)


def _oip_wrong_type(field: str) -> Callable[[Ports, float], tuple[Answer, float]]:
    """An OIP infer whose `field` has the wrong JSON type."""

    def send(ports: Ports, timeout: float) -> tuple[Answer, float]:
        item = {"name": "sentences", "shape": [1], "datatype": "BYTES", "data": ["a dog"]}
        doc = {"inputs": [item]}
        blob = b""
        if field == "binary_data_size":
            blob = struct.pack("<I", 13) + b"a dog runs ok"  # 17 bytes
            del item["data"]
            item["parameters"] = {"binary_data_size": str(len(blob))}
        elif field == "shape":
            item["shape"] = "abc"
        else:
            doc["parameters"] = [1]
            item["parameters"] = [1]
        header = orjson.dumps(doc)
        headers = {"Inference-Header-Content-Length": str(len(header))} if blob else {}
        return post(ports, "/v2/models/tagger/infer", header + blob, headers=headers,
                    timeout=timeout)  # fmt: skip

    return send


def _gpt_logits_overflow(ports: Ports, timeout: float) -> tuple[Answer, float]:
    body = orjson.dumps({"signature_name": "logits", "inputs": {"token_ids": [[2**32 + 5]]}})
    return post(ports, "/v1/models/gpt:predict", body, timeout=timeout)


def _png_bomb(ports: Ports, timeout: float) -> tuple[Answer, float]:
    encoded = base64.b64encode(png_bomb())
    body = b'{"instances": [{"b64": "' + encoded + b'"}]}'
    return post(ports, "/v1/models/cifar_convnet:predict", body, timeout=timeout)


PROBES: list[Probe] = [
    Probe("tagger_1000_words", "REST", "tagger: one 1,000-word sentence + 999 one-word ones",
          _tagger_long_sentence),
    Probe("gpt_1mb_prompt", "REST", "gpt generate: a 1 MB prompt + 499 short ones",
          _gpt_big_prompt),
    Probe("seq2seq_attention_200x300", "REST",
          "seq2seq translate_with_attention: 200 sentences x 300 words, beam 2, max_length 100",
          _seq2seq_attention),
    Probe("grpc_string_2^28_no_model", "gRPC",
          "Predict: DT_STRING shape [2**28], one string_val, unknown model",
          _grpc_huge_string_shape, timeout=30),
    Probe("oip_bytes_2^29_empty_blob", "OIP",
          "infer: BYTES shape [2**29], binary_data_size 0, empty blob", _oip_huge_bytes_shape,
          timeout=30),
    Probe("negative_content_length", "raw HTTP", "Content-Length: -1",
          _negative_content_length, timeout=10),
    Probe("gzip_bomb", "REST", "Content-Encoding gzip: 1.2 MB -> 1.2 GB of zeros", _gzip_bomb,
          timeout=30),
    Probe("negative_chunk_size", "raw HTTP", "chunked body with chunk size -1",
          _negative_chunk_size, timeout=10),
    Probe("gpt_score_1mb", "REST", "gpt score: 1 MB of text", _gpt_score_big_text),
    Probe("grpc_generate_cancelled", "gRPC",
          f"gpt generate max_new_tokens {CANCEL_TOKENS}, no deadline, cancelled after 1 s",
          _grpc_generate_cancelled, timeout=10),
    Probe("json_200mb", "REST", "a 200 MB JSON list of short strings", _json_200mb),
    Probe("json_nested_10000", "REST", "JSON nested 10,000 deep", _json_nested, timeout=30),
    Probe("oip_binary_data_size_str", "OIP", 'binary_data_size "17"',
          _oip_wrong_type("binary_data_size"), timeout=30),
    Probe("oip_shape_str", "OIP", 'shape "abc"', _oip_wrong_type("shape"), timeout=30),
    Probe("oip_parameters_list", "OIP", "parameters [1]", _oip_wrong_type("parameters"),
          timeout=30),
    Probe("gpt_logits_2^32+5", "REST", "gpt logits: token id 2**32+5", _gpt_logits_overflow,
          timeout=30),
    Probe("png_20000x20000", "REST", "cifar_convnet: a 1.2 MB PNG of 20000x20000 RGB",
          _png_bomb),
]  # fmt: skip

BY_NAME = {p.name: p for p in PROBES}


def prepare() -> None:
    """Build the cached bodies now (the bombs: a few seconds of client CPU each) and import
    the gRPC client (TensorFlow's protos), so that no probe pays for either."""
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: F401

    gzip_bomb()
    png_bomb()
    shakespeare(MB)
