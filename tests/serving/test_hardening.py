"""The server in front of a careless or hostile client: every probe of the hardening issue gets
a 4xx (or gRPC INVALID_ARGUMENT / DEADLINE_EXCEEDED), costs the server no more than its size,
and leaves it answering good requests.

One server for the module, with small limits so that the probes stay small here:
- `img`: a TF2 image model that declares nothing (the generic checks: image headers);
- `text`: the same SavedModel declaring its string input as text and the `slow` loop count as
  new tokens (serving.cost's declaration), so the padded-text and generation bounds apply;
- `gen`: the same SavedModel declaring `slow` a generator (capped, falsely, at 10 steps, so
  that a long loop passes the cost check): it runs as a cancellable TF2 function;
- `tf1slow`: a TF1 session model whose loop runs as long as asked.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import threading
import time
import zlib
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.cost import COSTS_PATH
from tests.harness import png_of_side
from tests.server_process import start_server
from tests.serving import tf2_model
from tests.serving.conftest import launch
from tests.serving.test_deadline import ENDLESS, export_tf1_slow

MAX_BODY = 1 << 20
LIMIT_FLAGS = (
    "--max_padded_text_bytes=4096",
    "--max_generated_tokens=1000",
    "--max_image_pixels=1000000",
    f"--rest_api_max_body_bytes={MAX_BODY}",
    "--rest_api_num_threads=2",
    "--grpc_default_timeout_in_ms=1500",
)


def rss_mb(pid: int) -> float:
    """Resident memory of a process (MB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class PeakRss:
    """The peak resident memory of a process while the block runs, sampled every 10 ms."""

    def __init__(self, pid: int):
        self.pid, self.before, self.peak = pid, rss_mb(pid), 0.0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_mb(self.pid))

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb(self.pid))

    @property
    def growth(self) -> float:
        return self.peak - self.before


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening")
    tf2_model.export(root / "img" / "1")
    shutil.copytree(root / "img", root / "text")
    (root / "text" / "1" / COSTS_PATH).write_text(
        json.dumps(
            {
                "serving_default": {"inputs": {"image_bytes": {"kind": "text", "weight": 2}}},
                "slow": {"inputs": {"n": {"kind": "new_tokens"}}},
            }
        )
    )
    shutil.copytree(root / "img", root / "gen")
    (root / "gen" / "1" / COSTS_PATH).write_text(  # a generator: runs as a TF2 function
        json.dumps({"slow": {"inputs": {"n": {"kind": "new_tokens", "cap": 10}}}})
    )
    export_tf1_slow(root / "tf1slow" / "1")
    config = root / "models.config"
    config.write_text(
        "model_config_list {\n"
        + "".join(
            f'  config {{ name: "{m}" base_path: "{root / m}" model_platform: "tensorflow" }}\n'
            for m in ("img", "text", "gen", "tf1slow")
        )
        + "}\n"
    )
    srv = start_server(f"--model_config_file={config}", *LIMIT_FLAGS)
    yield srv
    srv.stop()


def answers_good_requests(server) -> None:
    """The server still answers a real image over REST and gRPC."""
    jpeg = tf2_model.jpeg(0)
    import base64

    body = {"instances": [{"b64": base64.b64encode(jpeg).decode()}]}
    code, out = server.http("POST", "/v1/models/img:predict", body)
    assert code == 200, out
    assert out["predictions"][0]["classes"] in tf2_model.CLASSES
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "img"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([jpeg]))
    with server.channel() as channel:
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 30)
    assert reply.outputs["classes"].string_val[0].decode() in tf2_model.CLASSES


def raw_http(server, request: bytes, timeout: float = 10) -> tuple[int, bytes]:
    """Send bytes as they are; (status, body) of the answer."""
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            if b"\r\n\r\n" in data:
                length = [
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if length and len(body) >= length[0]:
                    break
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


# ---- memory amplification before validation ---------------------------------------------
def test_padded_text_is_bounded_before_the_run(server):
    """The tagger probe: one 1,000-word sentence and 999 one-word ones (8.9 KB) would pad to
    a million words; refused by its declared cost, and it costs nothing."""
    rows = [" ".join(["a"] * 1000)] + ["a"] * 999
    with PeakRss(server.proc.pid) as rss:
        code, out = server.http("POST", "/v1/models/text:predict", {"instances": rows})
    assert code == 400, out
    assert "--max_padded_text_bytes" in out["error"]
    assert "3998000" in out["error"]  # 1,000 rows x 1,999 bytes x weight 2
    assert rss.growth < 50, rss.growth
    answers_good_requests(server)


def test_generation_is_bounded_before_the_run(server):
    """A loop count declared as new tokens: 10**8 steps are refused at once."""
    start = time.monotonic()
    code, out = server.http(
        "POST", "/v1/models/text:predict", {"signature_name": "slow", "instances": [ENDLESS]}
    )
    assert code == 400, out
    assert "--max_generated_tokens" in out["error"] and str(ENDLESS) in out["error"]
    assert time.monotonic() - start < 5


def test_image_pixels_are_read_from_the_header(server):
    """A 5000 x 5000 PNG of 25 KB would decode to 75 MB: refused from its header alone, for a
    model that declares nothing."""
    import base64

    png = png_of_side(5000)
    assert len(png) < 100_000
    body = {"instances": [{"b64": base64.b64encode(png).decode()}]}
    with PeakRss(server.proc.pid) as rss:
        code, out = server.http("POST", "/v1/models/img:predict", body)
    assert code == 400, out
    assert "--max_image_pixels" in out["error"] and "25000000" in out["error"]
    assert rss.growth < 30, rss.growth
    # a corrupt image is the model's to refuse, with a 400 too
    body = {"instances": [{"b64": base64.b64encode(b"\xff\xd8\xffnot a jpeg").decode()}]}
    code, out = server.http("POST", "/v1/models/img:predict", body)
    assert code == 400, out
    answers_good_requests(server)


def test_grpc_string_tensor_declaring_2_28_elements_costs_nothing(server):
    """One string_val declared as [2**28], to a model that does not exist: 4 GB before."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "nope"
    tensor = request.inputs["x"]
    tensor.dtype = types_pb2.DT_STRING
    tensor.tensor_shape.dim.add(size=2**28)
    tensor.string_val.append(b"a")
    with PeakRss(server.proc.pid) as rss, server.channel() as channel:
        with pytest.raises(grpc.RpcError) as err:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "--max_request_elements" in err.value.details()
    assert rss.growth < 30, rss.growth
    answers_good_requests(server)


def test_oip_bytes_tensor_declaring_2_29_elements_costs_nothing(server):
    """A 150-byte OIP request: BYTES [2**29] with an empty binary blob (4 GB before)."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image_bytes",
                    "shape": [2**29],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 0},
                }
            ]
        }
    ).encode()
    with PeakRss(server.proc.pid) as rss:
        code, out = server.http(
            "POST",
            "/v2/models/img/infer",
            header,
            {"Inference-Header-Content-Length": str(len(header))},
        )
    assert code == 400, out
    assert "--max_request_elements" in out["error"]
    assert rss.growth < 30, rss.growth


@pytest.mark.parametrize(
    "path, body, words",
    [
        ("/v1/models/img:predict", b"[" * 10_000 + b"]" * 10_000, "--max_json_depth"),
        ("/v1/models/img:predict", b'{"instances":' + b"[" * 5000 + b"]" * 5000 + b"}", "depth"),
        (
            "/v2/models/img/infer",
            b'{"inputs":[{"name":"image_bytes","shape":[1],"datatype":"BYTES",'
            b'"parameters":{"binary_data_size":"17"}}]}',
            "binary_data_size",
        ),
        (
            "/v2/models/img/infer",
            b'{"inputs":[{"name":"image_bytes","shape":"abc","datatype":"BYTES","data":["a"]}]}',
            "shape",
        ),
        (
            "/v2/models/img/infer",
            b'{"inputs":[{"name":"image_bytes","shape":[1],"datatype":"BYTES","data":["a"]}],'
            b'"parameters":[1]}',
            "parameters",
        ),
        (
            "/v1/models/img:predict",
            b'{"signature_name":"slow","instances":[4294967301]}',
            "out of range for int32",
        ),
        (
            "/v1/models/img:predict",
            b'{"signature_name":"slow","instances":[18446744073709551615]}',
            "out of range for int32",
        ),
    ],
)
def test_malformed_bodies_are_400_without_exception_text(server, path, body, words):
    """Deep nesting (a RecursionError before), OIP fields of the wrong type (500s with
    Python's TypeError / AttributeError text before), integers that wrapped silently."""
    code, out = server.http("POST", path, body)
    assert code == 400, out
    assert words in out["error"]
    for leak in ("Error:", "Traceback", "object has no attribute", "unsupported operand"):
        assert leak not in out["error"], out


def test_nan_and_infinity_are_written_as_tf_serving_writes_them(server):
    """TF Serving's JSON writer prints NaN / Infinity (RapidJSON kWriteNanAndInfFlag); a
    NaN pixel gives NaN probabilities."""
    pixels = np.full((1, 32, 32, 3), np.nan).tolist()
    body = json.dumps({"signature_name": "predict_pixels", "instances": pixels}).encode()
    head = b"POST /v1/models/img:predict HTTP/1.1\r\nContent-Length: %d\r\n\r\n"
    status, raw = raw_http(server, head % len(body) + body)
    assert status == 200, raw
    assert raw.startswith(b'{"predictions":[[NaN,NaN,'), raw[:80]
    assert b"null" not in raw


# ---- the body limit ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "length", [b"-5", b"+5", b"5_0", b"0x10", b" ", b"99999999999999999999999"]
)
def test_malformed_content_length_is_400(server, length):
    head = b"POST /v1/models/img:predict HTTP/1.1\r\nHost: x\r\nContent-Length: " + length
    status, body = raw_http(server, head + b"\r\n\r\n{}")
    assert status == 400, body
    assert b"Content-Length" in body


def test_conflicting_content_lengths_are_400(server):
    head = b"POST /v1/models/img:predict HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 9\r\n"
    status, _ = raw_http(server, head + b"\r\n{}")
    assert status == 400


@pytest.mark.parametrize("size", [b"-5", b"0x5", b"+5", b"", b"5 5"])
def test_malformed_chunk_sizes_are_400(server, size):
    request = (
        b"POST /v1/models/img:predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        + size
        + b"\r\n{}\r\n0\r\n\r\n"
    )
    status, body = raw_http(server, request)
    assert status == 400, body
    assert b"chunked" in body


def test_gzip_bomb_stops_at_the_body_limit(server):
    """40 MB of zeros in 40 KB of gzip: inflated only up to the 1 MB limit, then 413."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = b"\x00" * (1 << 20)
    bomb = b"".join(deflate.compress(zeros) for _ in range(40)) + deflate.flush()
    assert len(bomb) < 100_000
    with PeakRss(server.proc.pid) as rss:
        code, out = server.http(
            "POST", "/v1/models/img:predict", bomb, {"Content-Encoding": "gzip"}
        )
    assert code == 413, out
    assert "once decompressed" in out["error"]
    assert rss.growth < 20, rss.growth
    # a gzip body under the limit is still read
    body = gzip.compress(json.dumps({"instances": [["x"]]}).encode())
    code, out = server.http("POST", "/v1/models/img:predict", body, {"Content-Encoding": "gzip"})
    assert code == 400 and "JSON" not in out["error"], out  # parsed; the model refuses "x"
    answers_good_requests(server)


def test_body_over_the_limit_is_413_chunked_or_not(server):
    big = b"[" + b"1," * MAX_BODY + b"1]"
    code, out = server.http("POST", "/v1/models/img:predict", big)
    assert code == 413 and str(MAX_BODY) in out["error"], out
    chunk = b"%x\r\n" % len(big) + big + b"\r\n0\r\n\r\n"
    status, body = raw_http(
        server,
        b"POST /v1/models/img:predict HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk,
    )
    assert status == 413, body


# ---- workers, connections, deadlines ---------------------------------------------------------
def test_rest_workers_are_bounded_by_rest_api_num_threads(server):
    """Two workers: while two slow requests hold them, a fast one waits for the first of them."""
    done: dict[str, float] = {}

    def slow(key: str) -> None:
        body = {"instances": [40_000]}  # a few seconds of matmuls
        server.http("POST", "/v1/models/tf1slow:predict", body)
        done[key] = time.monotonic()

    threads = [threading.Thread(target=slow, args=(k,)) for k in ("a", "b")]
    for t in threads:
        t.start()
    time.sleep(0.5)  # both slow requests are running
    code, _ = server.http("GET", "/v1/models/img")
    done["fast"] = time.monotonic()
    for t in threads:
        t.join()
    assert code == 200
    assert done["fast"] >= min(done["a"], done["b"]) - 0.05, done


def test_idle_connections_are_capped(server):
    """Past 64 open connections (16 per worker, at least 64) a new one is answered 503 and
    closed at once; the server keeps its thread count and answers once they are gone."""
    threads_before = int(
        next(
            line.split()[1]
            for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines()
            if line.startswith("Threads:")
        )
    )
    idle = [socket.create_connection(("127.0.0.1", server.rest_port)) for _ in range(80)]
    try:
        time.sleep(0.5)
        status, body = raw_http(server, b"GET /v1/models/img HTTP/1.1\r\n\r\n", timeout=5)
        assert status == 503 and b"connections" in body
        threads = int(
            next(
                line.split()[1]
                for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines()
                if line.startswith("Threads:")
            )
        )
        assert threads <= threads_before + 64 + 2, (threads_before, threads)
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.5)
    answers_good_requests(server)


def test_grpc_request_without_deadline_gets_the_servers_default(server):
    """A deadline-less Predict of an endless loop stops at --grpc_default_timeout_in_ms."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tf1slow"
    request.inputs["n"].CopyFrom(tf.make_tensor_proto(np.array([ENDLESS], np.int32)))
    start = time.monotonic()
    with server.channel() as channel:
        with pytest.raises(grpc.RpcError) as err:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "--grpc_default_timeout_in_ms" in err.value.details()
    assert time.monotonic() - start < 15
    answers_good_requests(server)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def becomes_busy(pid: int, cpu: float = 0.3, timeout: float = 60.0) -> float:
    """Waits until the process has used `cpu` more CPU seconds (a loop is running), however
    loaded the machine; returns what it used, less than `cpu` only if `timeout` passed."""
    start, deadline = cpu_seconds(pid), time.monotonic() + timeout
    while (used := cpu_seconds(pid) - start) < cpu and time.monotonic() < deadline:
        time.sleep(0.05)
    return used


def becomes_quiet(pid: int, window: float = 0.5, below: float = 0.05, timeout: float = 15.0):
    """Waits for a `window` in which the process uses under `below` CPU seconds (its loop
    has stopped); returns whether one came before `timeout`. A loop still running takes a
    share of a core in every window, even on a loaded machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(window)
        if cpu_seconds(pid) - before < below:
            return True
    return False


def test_grpc_cancel_stops_a_generator(server):
    """A client that cancels an endless generation frees the cores at once (before: the
    loop ran to the end, 8 such requests kept both cores busy for 58 s)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "gen"
    request.model_spec.signature_name = "slow"
    request.inputs["n"].CopyFrom(tf.make_tensor_proto(np.array([ENDLESS], np.int32)))
    with server.channel() as channel:
        call = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict.future(
            request, 120
        )
        assert becomes_busy(server.proc.pid) >= 0.3  # the loop runs
        call.cancel()
        assert becomes_quiet(server.proc.pid)
    answers_good_requests(server)


def test_rest_client_that_leaves_stops_a_generator(server):
    body = json.dumps({"signature_name": "slow", "instances": [ENDLESS]}).encode()
    head = b"POST /v1/models/gen:predict HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)
    sock = socket.create_connection(("127.0.0.1", server.rest_port))
    sock.sendall(head + body)
    assert becomes_busy(server.proc.pid) >= 0.3  # the loop runs
    sock.close()
    assert becomes_quiet(server.proc.pid)
    answers_good_requests(server)


# ---- settings ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "flag, text",
    [
        ("--max_padded_text_bytes=0", "--max_padded_text_bytes must be positive"),
        ("--batching_parameters_file={batching}", "num_batch_threads is 3000; at most 64"),
    ],
)
def test_unbounded_settings_refuse_to_start(tmp_path, flag, text):
    batching = tmp_path / "batching.txt"
    batching.write_text("num_batch_threads { value: 3000 }\n")
    tf2_model.export(tmp_path / "img" / "1")
    proc, lines, reader = launch(
        "--port=0",
        "--grpc_socket_path=" + str(tmp_path / "sock"),
        "--enable_batching",
        "--model_name=img",
        f"--model_base_path={tmp_path / 'img'}",
        flag.format(batching=batching),
        ready="never printed",
        timeout=120,
    )
    assert proc.wait(timeout=120) == 255
    reader.join(5)
    output = "\n".join(lines)
    assert "Failed to start server. Error: INVALID_ARGUMENT" in output and text in output
