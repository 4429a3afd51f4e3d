"""REST front end: TF Serving's /v1/models API, the Open Inference Protocol's /v2 API, and the
Prometheus endpoint.

Transport: an HTTP/1.1 server on asyncio (one `asyncio.Protocol` per connection, on the event
loop the gRPC front end shares, `serving.aio`), standard library only: keep-alive and
pipelining (answers in order), TCP_NODELAY, one write per response, orjson for JSON, chunked
and gzip request bodies, CORS and OPTIONS, and TLS (`--rest_api_ssl_config_file`; TF Serving
has no TLS on REST, its #1503). A predict waiting for its batch holds no thread; what blocks
(status, metadata, Classify/Regress, a graph run outside batching) runs in
--rest_api_num_threads worker threads (`aio.Workers`). A client that closes its connection
while its request is served has the request cancelled (its deadline too, which stops a TF2
function call), over TLS as well.

As TF Serving's http_server.cc: every path under `/v1/` (any case) reaches the API handler,
which answers 400 "Malformed request: METHOD PATH" for what it does not know; OPTIONS is a CORS
preflight (200 when the Origin header is http(s), else 400, empty body); with
--rest_api_enable_cors_support every answer carries `Access-Control-Allow-Origin: *`,
`-Methods: POST, GET` and `-Headers: Content-Type`; request_count is recorded for every
request, request_latency for successful ones with the URL's verb as API.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import ssl
import tempfile
import time
import zlib
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import unquote

import grpc
import orjson
from google.protobuf import json_format
from tensorflow_serving.apis import classification_pb2, get_model_metadata_pb2, regression_pb2

from serving import aio, deadline, json_tensor, metrics, v2, web
from serving.errors import ServingError, invalid
from serving.predict import PredictionCore, Spec, error_status

log = logging.getLogger("serving.rest")

T = TypeVar("T")

# http_rest_api_util.cc kPredictionApiGegex / kModelStatusApiRegex, matched in full
_PREDICT_PATH = re.compile(
    r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r":(?P<verb>classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/(?P<name>[^/:]+))?(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?:/(?P<meta>metadata))?",
    re.IGNORECASE,
)
_V2_MODEL = re.compile(
    r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?:/(?P<what>ready|infer|config))?/?$"
)
_ORIGIN = re.compile(r"https?://")
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 413: b"Payload Too Large",
            414: b"URI Too Long", 429: b"Too Many Requests", 431: b"Request Header Fields Too Large",
            500: b"Internal Server Error", 501: b"Not Implemented", 503: b"Service Unavailable",
            504: b"Gateway Timeout", 505: b"HTTP Version Not Supported"}  # fmt: skip
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET",
    "Access-Control-Allow-Headers": "Content-Type",
}
JSON = "application/json"


def _proto_dict(message) -> dict:
    return json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )


class Reply:
    """One HTTP answer."""

    __slots__ = ("status", "body", "content_type", "headers")

    def __init__(self, status: int, body: bytes, content_type: str | None = JSON, headers=None):
        self.status, self.body, self.content_type = status, body, content_type
        self.headers = headers or {}


class InFlight:
    """Counts the requests being served (on the event loop), so shutdown can wait for them."""

    def __init__(self):
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def __enter__(self):
        self.count += 1
        self._idle.clear()

    def __exit__(self, *exc):
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """True once no request is in flight, False if some still are after `timeout` s."""
        try:
            await asyncio.wait_for(self._idle.wait(), max(timeout, 0))
        except TimeoutError:
            return False
        return True


class RestApp:
    """Routing and translation, independent of the HTTP server plumbing."""

    def __init__(
        self,
        core: PredictionCore,
        metrics_path: str | None,
        max_body: int,
        timeout_ms: int = 0,
        cors: bool = False,
        num_threads: int = 4 * (os.cpu_count() or 1),
        web_ui: web.WebUi | None = None,
    ):
        self.core = core
        self.num_threads = num_threads  # --rest_api_num_threads: blocking work at once
        self.workers = aio.Workers("rest", num_threads)
        self.metrics_path = metrics_path
        self.max_body = max_body
        self.timeout_ms = timeout_ms  # --rest_api_timeout_in_ms; <= 0: none
        self.cors = cors  # --rest_api_enable_cors_support
        self.v2 = v2.OpenInferenceApi(core)
        self.in_flight = InFlight()
        self.web_ui = web_ui  # --enable_web_ui: the page at / and /ui/

    async def handle(self, method: str, path: str, body: bytes, headers=None) -> Reply:
        """The answer to one request (headers: a case-insensitive mapping, or None). A
        coroutine of the event loop; cancelling it (the client left) cancels the request."""
        path = path.split("?", 1)[0]
        if self.metrics_path and path == self.metrics_path and method == "GET":
            return Reply(200, metrics.render(), "text/plain; version=0.0.4")
        if self.web_ui is not None and method == "GET":
            page = self.web_ui.get(path)
            if page is not None:
                return Reply(200, page[0], page[1], dict(web.HEADERS))
        aio.serving_as(self.workers)  # unbatched graph runs use the REST workers too
        v1 = path[:4].lower() == "/v1/"
        with deadline.scope(self.timeout_ms) as limit:
            start = time.perf_counter()
            model, api, code = "", "", "OK"
            try:
                if method == "OPTIONS" and (v1 or path.startswith("/v2")):
                    origin = (headers or {}).get("Origin") or ""
                    if not _ORIGIN.search(origin):  # RE2::PartialMatch
                        code = "FAILED_PRECONDITION"
                        reply = Reply(400, b"", None)  # TF Serving: empty body
                    else:
                        reply = Reply(200, b"", None)
                elif v1:
                    model, api = _v1_model_and_verb(method, path)
                    reply = Reply(200, await self._v1(method, path, body))
                elif path == "/v2" or path.startswith("/v2/"):
                    infer = _V2_MODEL.match(path) if method == "POST" else None
                    if infer is not None and infer["what"] == "infer":
                        model, api = unquote(infer["name"]), "infer"
                    reply = await self._v2(method, path, body, headers or {})
                else:
                    raise ServingError(grpc.StatusCode.NOT_FOUND, f"Not found: {method} {path}")
            except asyncio.CancelledError:
                code = "CANCELLED"
                if limit is not None:
                    limit.cancel()
                raise
            except Exception as e:
                status_code, message = error_status(e)
                code = status_code.name
                if not isinstance(e, ServingError):
                    log.exception("internal error on %s %s", method, path)
                status = e.http_status if isinstance(e, ServingError) else 500
                reply = Reply(status, orjson.dumps({"error": message}))
            finally:
                if v1 or api == "infer":  # TF Serving's REST metrics, and the V2 infer calls
                    metrics.record_request(model, api, "REST", code, time.perf_counter() - start)
        if self.cors:
            reply.headers.update(CORS_HEADERS)
        return reply

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) in a REST worker, within the request's deadline (waiting for a free
        worker included: past it, the request is answered DEADLINE_EXCEEDED)."""
        limit = deadline.current()
        if limit is None:
            return await self.workers.call(fn, *args)
        timer = asyncio.timeout(max(limit.remaining(), 0))
        try:
            async with timer:
                return await self.workers.call(fn, *args)
        except TimeoutError:
            if not timer.expired():
                raise
            # Workers.call cancelled the deadline as it gave up: report it as passed
            raise deadline.Deadline(limit.at, limit.timeout_ms, limit.source).error() from None

    async def _v1(self, method: str, path: str, body: bytes) -> bytes:
        """http_rest_api_handler.cc ProcessRequest: what does not parse is "Malformed"."""
        malformed = invalid(f"Malformed request: {method} {path}")
        m = _v1_match(method, path)
        if m is None:
            raise malformed
        name = unquote(m["name"] or "")
        version = int(m["version"]) if m["version"] else None
        label = unquote(m["label"]) if m["label"] else None
        if method == "GET":
            if m["meta"] and m["meta"].lower() == "metadata":
                return await self._blocking(self._metadata, Spec(name, version, label))
            if not name:
                raise invalid("Missing model name in request.")
            return await self._blocking(self._status, name, version)
        verb = m["verb"]
        if verb not in ("predict", "classify", "regress"):  # the comparison is case-sensitive
            raise malformed
        request = json_tensor.loads(body)
        signature_name = request.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise invalid("'signature_name' must be a string")
        spec = Spec(name, version, label, signature_name)
        if verb == "predict":
            return await self._predict(spec, request)
        model_spec = _model_spec(spec)
        examples = json_tensor.examples_input(request)
        if verb == "classify":
            req = classification_pb2.ClassificationRequest(model_spec=model_spec, input=examples)
            response = await self._blocking(self.core.classify, req)
            return json_tensor.classify_json(response.result)
        req = regression_pb2.RegressionRequest(model_spec=model_spec, input=examples)
        response = await self._blocking(self.core.regress, req)
        return json_tensor.regress_json(response.result)

    async def _predict(self, spec: Spec, request: dict) -> bytes:
        """Decoding and encoding on the loop (as the gRPC front end does); the wait for the
        batch holds no thread, and a run outside batching goes to the REST workers."""
        output_filter = request.get("output_filter", [])
        if isinstance(output_filter, str):
            output_filter = [output_filter]
        if not isinstance(output_filter, list) or not all(
            isinstance(o, str) for o in output_filter
        ):
            raise invalid("'output_filter' must be a list of output names")
        with self.core.manager.acquire(spec.name, spec.version, spec.label) as servable:
            sig = servable.signature(spec.signature_name)
            inputs, row_format = json_tensor.predict_inputs(request, sig)
        _, _, outputs = await self.core.predict(spec, inputs, output_filter)
        return json_tensor.predict_response(outputs, row_format)

    def _status(self, name: str, version: int | None) -> bytes:
        return orjson.dumps(_proto_dict(self.core.status(name, version)))

    def _metadata(self, spec: Spec) -> bytes:
        response = self.core.metadata(spec)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sig_map)
        payload = {
            "model_spec": _proto_dict(response.model_spec),
            "metadata": {"signature_def": _proto_dict(sig_map)},
        }
        return orjson.dumps(payload)

    def _v2_metadata(self, name: str, version: str | None) -> bytes:
        return orjson.dumps(self.v2.model_metadata(name, version))

    async def _v2(self, method: str, path: str, body: bytes, headers) -> Reply:
        """The Open Inference Protocol's REST API."""
        api = self.v2
        if method == "GET" and path.rstrip("/") in ("/v2", ""):
            return Reply(200, orjson.dumps(api.server_metadata()))
        if method == "GET" and path == "/v2/health/live":
            return Reply(200, b"", None)
        if method == "GET" and path == "/v2/health/ready":
            ready = await self._blocking(api.server_ready)
            return Reply(200 if ready else 400, b"", None)
        if method == "POST" and path.rstrip("/") == "/v2/repository/index":
            ready_only = v2.index_request(body)
            return Reply(200, orjson.dumps(await self._blocking(api.repository_index, ready_only)))
        m = _V2_MODEL.match(path)
        if m is None:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Not found: {method} {path}")
        name = unquote(m["name"])
        version = unquote(m["version"]) if m["version"] else None
        if method == "GET" and m["what"] == "ready":
            ready = await self._blocking(api.model_ready, name, version)
            return Reply(200 if ready else 400, b"", None)
        if method == "GET" and m["what"] == "config":
            config = await self._blocking(api.model_config, name, version)
            return Reply(200, orjson.dumps(config))
        if method == "GET" and m["what"] is None:
            return Reply(200, await self._blocking(self._v2_metadata, name, version))
        if method == "POST" and m["what"] == "infer":
            request, all_binary, binary = v2.rest_infer_request(
                name, version, body, headers.get(v2.HEADER_LENGTH)
            )
            resolved, outputs = await api.infer(request)
            data, extra = v2.rest_infer_response(request, resolved, outputs, all_binary, binary)
            content_type = "application/octet-stream" if extra else JSON
            return Reply(200, data, content_type, extra)
        raise ServingError(grpc.StatusCode.NOT_FOUND, f"Not found: {method} {path}")


def _v1_match(method: str, path: str) -> re.Match | None:
    if method == "POST":
        return _PREDICT_PATH.fullmatch(path)
    if method == "GET":
        return _STATUS_PATH.fullmatch(path)
    return None


def _v1_model_and_verb(method: str, path: str) -> tuple[str, str]:
    """The model name and API label TF Serving's metrics use for a /v1/ request."""
    m = _v1_match(method, path)
    if m is None:
        return "", ""
    return unquote(m["name"] or ""), m["verb"] if method == "POST" else ""


def _model_spec(spec: Spec):
    from tensorflow_serving.apis import model_pb2

    out = model_pb2.ModelSpec(name=spec.name, signature_name=spec.signature_name)
    if spec.version is not None:
        out.version.value = spec.version
    elif spec.label:
        out.version_label = spec.label
    return out


class BodyTooLarge(Exception):
    """A request body over the limit once decompressed."""


def gunzip(data: bytes, limit: int) -> bytes:
    """A gzip body (every member) inflated to at most `limit` bytes; BodyTooLarge beyond it,
    found while inflating, so a bomb costs no more than the limit."""
    out, size = [], 0
    while data:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while data:
            piece = inflater.decompress(data, limit + 1 - size)
            size += len(piece)
            out.append(piece)
            if size > limit:
                raise BodyTooLarge(
                    f"Request body exceeds the limit of {limit} bytes once decompressed"
                )
            data = inflater.unconsumed_tail
            if inflater.eof:
                break
        if not inflater.eof:
            raise EOFError("Compressed file ended before the end-of-stream marker was reached")
        data = inflater.unused_data
    return b"".join(out)


# ---- the HTTP/1.1 transport: one asyncio.Protocol per connection ------------------------------

#: the request line and header block together; past it 431 (414: the request line alone)
MAX_HEAD_BYTES = 64 << 10
MAX_HEADER_FIELDS = 100
#: how much of a refused (oversize) body is read and dropped before the connection closes,
#: so a client still sending it reads the 413 instead of a reset (nginx's lingering close)
LINGER_MAX_BYTES = 32 << 20
LINGER_SECONDS = 5.0
IDLE_SECONDS = 300.0  # a connection that sends nothing for this long is closed
HEAD_SECONDS = 60.0  # a request's head must be in within this of its first byte
#: a client that half-closes (EOF) while its request runs is taken as gone after this; a
#: reset or closed connection cancels the request at once
DEPARTURE_GRACE_SECONDS = 0.1
READ_AHEAD_BYTES = 256 << 10  # buffered past what the request being read needs: then pause
TLS_HANDSHAKE_SECONDS = 10.0
TLS_SHUTDOWN_SECONDS = 5.0  # a closed TLS connection waits this long for the client's close_notify

_METHODS = frozenset(("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"))
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(r"HTTP/([0-9])\.([0-9])")
_DIGITS = re.compile(r"[0-9]{1,18}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
_MAX_TRAILERS = 100
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_BUSY_BODY = b'{"error": "Too many open connections"}'
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


class _Headers(dict):
    """Header fields by lower-case name (the first of repeated ones); lookups ignore case."""

    def get(self, key, default=None):
        return dict.get(self, key.lower(), default)

    def __getitem__(self, key):
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key):
        return dict.__contains__(self, key.lower())


class _Request:
    __slots__ = ("method", "path", "http10", "headers", "lengths", "codings", "keep_alive")

    def __init__(self, method, path, http10, headers, lengths, codings, keep_alive):
        self.method, self.path, self.http10, self.headers = method, path, http10, headers
        self.lengths, self.codings, self.keep_alive = lengths, codings, keep_alive


class _Refusal(Exception):
    """A request answered by the transport itself (`status`, {"error": message})."""

    def __init__(self, status: int, message: str, close: bool = True, linger: int = 0):
        super().__init__(message)
        self.status, self.message, self.close = status, message, close
        self.linger = linger  # bytes of the refused body still to read and drop (at most)


class _Timeout(Exception):
    """The client sent nothing within the time allowed."""


class _Connection(asyncio.Protocol):
    """One client connection: its requests are read, served and answered in order by one
    task; while a request is served the connection keeps reading (pipelined requests wait
    in the buffer, up to READ_AHEAD_BYTES) so that a client who leaves is noticed."""

    def __init__(self, server: RestServer):
        self.server = server
        self.app = server.app
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task | None = None
        self.buffer = bytearray()
        self.want = 0  # buffered bytes that wake the task waiting to read
        self.waiter: asyncio.Future | None = None
        self.eof = False  # the client closed its side (or the connection is gone)
        self.lost = False
        self.tls = False
        self.busy = False  # a request is being read, served or answered
        self.serving = False  # a request is in the app
        self.departure: asyncio.TimerHandle | None = None
        self.reading_paused = False
        self.writing_paused = False
        self.discard = -1  # >= 0: lingering, bytes still to read and drop

    # -- asyncio.Protocol callbacks
    def connection_made(self, transport) -> None:
        self.transport = transport
        server = self.server
        if server.closing or len(server.connections) >= server.max_connections:
            transport.write(_BUSY)  # no task for it: a flood of connections costs none
            transport.close()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.tls = transport.get_extra_info("sslcontext") is not None
        transport.set_write_buffer_limits(high=1, low=0)  # paused while an answer is unsent
        server.connections.add(self)
        self.task = self.loop.create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        if self.task is None:
            return
        if self.discard >= 0:
            self.discard -= len(data)
            if self.discard <= 0:
                self._wake()
            return
        self.buffer += data
        if len(self.buffer) >= self.want:
            self._wake()
        if not self.reading_paused and len(self.buffer) > self.want + READ_AHEAD_BYTES:
            self.reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        if self.serving:
            self._arm_departure()
        return not self.tls  # keep a half-closed TCP connection to answer (TLS: closes)

    def connection_lost(self, exc) -> None:
        self.lost = self.eof = True
        self.writing_paused = False
        self.server._forget(self)
        self._wake()
        if self.serving:
            self._depart()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake()

    def _busy(self, busy: bool) -> None:
        if busy != self.busy:
            self.busy = busy
            self.server._count_busy(1 if busy else -1)

    # -- departures
    def _arm_departure(self) -> None:
        if self.departure is None:
            self.departure = self.loop.call_later(DEPARTURE_GRACE_SECONDS, self._depart)

    def _depart(self) -> None:
        """The client is gone: cancel its request (the task; that cancels its deadline)."""
        if self.departure is not None:
            self.departure.cancel()
            self.departure = None
        if self.serving and self.task is not None:
            self.task.cancel()

    # -- reading
    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _pause(self, until: float) -> None:
        """Wait for the next wake-up (data, EOF, drained writes) or `until` (loop time)."""
        waiter = self.waiter = self.loop.create_future()
        timer = self.loop.call_at(until, self._wake)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None

    async def _fill(self, want: int, seconds: float | None = None) -> bool:
        """Wait until `want` bytes are buffered; False if the client closed first. Raises
        _Timeout when `seconds` (IDLE_SECONDS) pass with no byte arriving."""
        if seconds is None:
            seconds = IDLE_SECONDS
        buffer = self.buffer
        if len(buffer) >= want:
            return True
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()
        self.want = want
        try:
            while len(buffer) < want:
                if self.eof:
                    return False
                before, until = len(buffer), self.loop.time() + seconds
                await self._pause(until)
                if len(buffer) == before and not self.eof and self.loop.time() >= until:
                    raise _Timeout
        finally:
            self.want = 0
        return True

    def _take(self, n: int) -> bytes:
        buffer = self.buffer
        if n == len(buffer):
            data = bytes(buffer)
            buffer.clear()
            return data
        with memoryview(buffer) as view:
            data = bytes(view[:n])
        del buffer[:n]
        return data

    async def _line(self, limit: int, message: str) -> bytes | None:
        """One line (with its LF) of at most `limit` bytes; None if the client closed."""
        buffer = self.buffer
        while True:
            end = buffer.find(b"\n", 0, limit)
            if end >= 0:
                return self._take(end + 1)
            if len(buffer) >= limit:
                raise _Refusal(400, message)
            if not await self._fill(len(buffer) + 1):
                return None

    async def _head(self) -> _Request | None:
        """The next request's line and header fields; None when the client is done."""
        buffer = self.buffer
        while True:  # empty lines before a request are ignored (RFC 9112 2.2)
            start = 0
            while start < len(buffer) and buffer[start] in b"\r\n":
                start += 1
            if start:
                del buffer[:start]
            if buffer:
                break
            if not await self._fill(1):
                return None
        self._busy(True)
        until = self.loop.time() + HEAD_SECONDS
        scanned, checked = 0, False
        while True:
            crlf = buffer.find(b"\n\r\n", scanned, MAX_HEAD_BYTES + 3)  # the empty line
            lf = buffer.find(b"\n\n", scanned, MAX_HEAD_BYTES + 2)
            if crlf >= 0 or lf >= 0:
                end = min(
                    crlf + 3 if crlf >= 0 else len(buffer), lf + 2 if lf >= 0 else len(buffer)
                )
                break
            if len(buffer) > MAX_HEAD_BYTES:
                if buffer.find(b"\n", 0, MAX_HEAD_BYTES) < 0:
                    raise _Refusal(414, f"Request line longer than {MAX_HEAD_BYTES} bytes")
                raise _Refusal(431, f"Request header block longer than {MAX_HEAD_BYTES} bytes")
            if not checked:  # refuse a bad request line at once, not after HEAD_SECONDS
                line_end = buffer.find(b"\n")
                if line_end >= 0:
                    line = buffer[:line_end].decode("latin-1").removesuffix("\r")
                    if "\r" in line or "\x00" in line:
                        raise _Refusal(400, "Bare CR or NUL in the request head")
                    _request_line(line)
                    checked = True
            scanned = max(0, len(buffer) - 2)
            left = until - self.loop.time()
            if left <= 0:
                raise _Timeout
            if not await self._fill(len(buffer) + 1, left):
                return None
        if end > MAX_HEAD_BYTES:
            raise _Refusal(431, f"Request header block longer than {MAX_HEAD_BYTES} bytes")
        return _parse_head(self._take(end))

    async def _body(self, request: _Request) -> bytes | None:
        """The request body (Content-Length or chunked, gzip undone), at most the body limit
        in every form; None if the client left before sending it all."""
        max_body = self.app.max_body
        codings = [c for c in request.codings if c != "identity"]
        if codings and codings != ["chunked"]:
            raise _Refusal(501, f"Unsupported Transfer-Encoding {', '.join(codings)[:100]!r}")
        if codings:
            if request.lengths:  # RFC 9112 6.3: chunked wins, and the connection closes
                request.keep_alive = False
            self._continue(request)
            body = await self._chunked(max_body)
        else:
            lengths = request.lengths
            if len(set(lengths)) > 1 or not all(_DIGITS.fullmatch(v) for v in lengths):
                raise _Refusal(400, "Invalid Content-Length header")  # RFC 9112 6.3
            length = int(lengths[0]) if lengths else 0
            if length > max_body:  # a client waiting for 100 Continue sends no body
                raise _Refusal(
                    413,
                    f"Request body of {length} bytes exceeds the limit of {max_body}",
                    linger=0 if self._expects_continue(request) else length,
                )
            if length:
                self._continue(request)
                if not await self._fill(length):
                    return None  # the client went away mid-body
                body = self._take(length)
            else:
                body = b""
        if body is not None and (request.headers.get("content-encoding") or "").lower() == "gzip":
            try:
                body = gunzip(body, max_body)
            except (OSError, EOFError, zlib.error) as e:
                raise _Refusal(400, f"Invalid gzip body: {e}", close=False) from None
            except BodyTooLarge as e:
                raise _Refusal(413, str(e)) from None
        return body

    @staticmethod
    def _expects_continue(request: _Request) -> bool:
        expect = request.headers.get("expect")
        return bool(expect) and not request.http10 and expect.lower() == "100-continue"

    def _continue(self, request: _Request) -> None:
        """Answer `Expect: 100-continue` (HTTP/1.1) once the body is going to be read."""
        if self._expects_continue(request):
            self._write(_CONTINUE)

    async def _chunked(self, max_body: int) -> bytes | None:
        """A `Transfer-Encoding: chunked` body (RFC 9112 7.1), trailer fields dropped."""
        malformed = "Malformed chunked request body"
        parts, total, count = [], 0, 0
        while True:
            line = await self._line(1026, malformed)
            if line is None:
                return None
            size_text = line.split(b";", 1)[0].strip()
            if not _HEX.fullmatch(size_text):
                raise _Refusal(400, malformed)
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > max_body:
                raise _Refusal(
                    413,
                    f"Request body of {total} bytes exceeds the limit of {max_body}",
                    linger=LINGER_MAX_BYTES,
                )
            if not await self._fill(size):
                return None
            parts.append(self._take(size))
            end = await self._line(3, malformed)
            if end is None:
                return None
            if end not in (b"\r\n", b"\n"):
                raise _Refusal(400, malformed)
            count += 1
            if count % 256 == 0:  # a body of tiny chunks must not hold the loop
                await asyncio.sleep(0)
        for _ in range(_MAX_TRAILERS):
            line = await self._line(MAX_HEAD_BYTES, "Chunked request trailer line too long")
            if line is None or line in (b"\r\n", b"\n"):
                break
        else:
            raise _Refusal(400, "Too many trailer fields in a chunked request body")
        return b"".join(parts)

    async def _linger(self, length: int) -> None:
        """Read and drop what is left of a refused body, bounded in bytes and time."""
        budget = min(length, LINGER_MAX_BYTES) - len(self.buffer)
        self.buffer.clear()
        if budget <= 0 or self.eof:
            return
        self.discard = budget
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()
        until = self.loop.time() + LINGER_SECONDS
        while self.discard > 0 and not self.eof and self.loop.time() < until:
            await self._pause(until)

    # -- writing
    def _write(self, data: bytes) -> None:
        if not self.lost and not self.transport.is_closing():
            self.transport.write(data)

    def _send(self, reply: Reply, close: bool, http10: bool = False) -> None:
        """The whole answer in one write."""
        reason = _REASONS.get(reply.status, b"Error")
        head = b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\n" % (
            reply.status,
            reason,
            len(reply.body),
        )
        if reply.content_type:
            head += b"Content-Type: %s\r\n" % reply.content_type.encode()
        for key, value in reply.headers.items():
            head += f"{key}: {value}\r\n".encode("latin-1")
        if close:
            head += b"Connection: close\r\n"
        elif http10:
            head += b"Connection: keep-alive\r\n"
        self._write(head + b"\r\n" + reply.body)

    def _refuse(self, status: int, message: str, close: bool, http10: bool = False) -> None:
        reply = Reply(status, orjson.dumps({"error": message}))
        if self.app.cors:
            reply.headers.update(CORS_HEADERS)
        self._send(reply, close, http10)

    async def _drain(self) -> None:
        """Wait until all that was written is handed to the kernel (a client that reads
        nothing for IDLE_SECONDS is dropped)."""
        until = self.loop.time() + IDLE_SECONDS
        while self.writing_paused and not self.lost:
            if self.loop.time() >= until:
                raise _Timeout
            await self._pause(until)

    # -- the connection's task
    async def _serve(self) -> None:
        try:
            while not self.lost and not self.server.closing:
                self._busy(False)
                if not await self._exchange():
                    break
        except asyncio.CancelledError:
            pass  # the client left while its request was served, or the server stopped
        except _Timeout:
            pass
        except Exception:
            log.exception("REST connection failed")
        finally:
            self._busy(False)
            if self.transport is not None and not self.transport.is_closing():
                self.transport.close()

    async def _exchange(self) -> bool:
        """Read, serve and answer one request; False when the connection is to close."""
        request = None
        try:
            request = await self._head()
            if request is None:
                return False
            body = await self._body(request)
        except _Refusal as refusal:
            http10 = request is not None and request.http10
            close = refusal.close or request is None or not request.keep_alive
            self._refuse(refusal.status, refusal.message, close, http10)
            await self._drain()
            if close and refusal.linger:
                await self._linger(refusal.linger)
            return not close
        if body is None:
            return False  # the client left mid-body
        close = not request.keep_alive
        if request.method not in _METHODS:
            self._refuse(501, f"Unsupported method ({request.method!r})", close, request.http10)
        else:
            app = self.app
            with app.in_flight:
                self.serving = True
                if self.eof:
                    self._arm_departure()
                try:
                    reply = await app.handle(request.method, request.path, body, request.headers)
                finally:
                    self.serving = False
                    if self.departure is not None:
                        self.departure.cancel()
                        self.departure = None
                close = close or self.server.closing
                self._send(reply, close, request.http10)
        await self._drain()  # all of it, before the next request (or the close)
        return not close


def _request_line(line: str) -> tuple[str, str, bool]:
    """(method, target, HTTP/1.0?) of a request line (RFC 9112 3)."""
    words = line.split()
    if len(words) != 3:
        raise _Refusal(400, f"Bad request line {line[:200]!r}")
    method, target, version = words
    match = _VERSION.fullmatch(version)
    if match is None:
        raise _Refusal(400, f"Bad request version {version[:20]!r}")
    if match[1] != "1":
        if match[1] == "0":
            raise _Refusal(400, f"Bad request version {version!r}")
        raise _Refusal(505, f"Invalid HTTP version ({version})")
    if _TOKEN.fullmatch(method) is None:
        raise _Refusal(400, f"Bad request method {method[:40]!r}")
    return method, target, match[2] == "0"


def _parse_head(head: bytes) -> _Request:
    """The request line and header fields (RFC 9112 3 and 5), strictly."""
    text = head.decode("latin-1").replace("\r\n", "\n")
    if "\r" in text or "\x00" in text:
        raise _Refusal(400, "Bare CR or NUL in the request head")
    lines = text.split("\n")
    method, target, http10 = _request_line(lines[0])
    headers = _Headers()
    lengths: list[str] = []
    codings: list[str] = []
    connection: list[str] = []
    fields = 0
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":
            raise _Refusal(400, "Obsolete line folding in a header field")
        name, sep, value = line.partition(":")
        if not sep or _TOKEN.fullmatch(name) is None:
            raise _Refusal(400, f"Malformed header field {line[:100]!r}")
        fields += 1
        if fields > MAX_HEADER_FIELDS:
            raise _Refusal(431, f"More than {MAX_HEADER_FIELDS} header fields")
        key = name.lower()
        value = value.strip(" \t")
        if key == "content-length":
            lengths.append(value)
        elif key == "transfer-encoding":
            codings += [c.strip().lower() for c in value.split(",") if c.strip()]
        elif key == "connection":
            connection += [c.strip().lower() for c in value.split(",")]
        if key not in headers:
            headers[key] = value
    if http10:
        keep_alive = "keep-alive" in connection
    else:
        keep_alive = "close" not in connection
    if target.startswith("//"):  # as http.server: not a scheme-relative URL
        target = "/" + target.lstrip("/")
    return _Request(method, target, http10, headers, lengths, codings, keep_alive)


class RestServer:
    """The REST front end's listening socket and open connections, on one event loop."""

    def __init__(self, app: RestApp, loop: asyncio.AbstractEventLoop):
        self.app = app
        self.loop = loop
        # 16 connections per REST worker, at least 64; past them, a new one is answered 503
        self.max_connections = max(64, 16 * app.num_threads)
        self.connections: set[_Connection] = set()
        self.closing = False
        self._server: asyncio.Server | None = None
        self._busy = 0  # connections reading, serving or answering a request
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def port(self) -> int:
        """The TCP port listened on."""
        return self._server.sockets[0].getsockname()[1]

    def _forget(self, connection: _Connection) -> None:
        self.connections.discard(connection)

    def _count_busy(self, delta: int) -> None:
        self._busy += delta
        if self._busy:
            self._idle.clear()
        else:
            self._idle.set()

    async def shutdown(self, grace_seconds: float) -> None:
        """Stop accepting; idle connections close at once, requests being read or served get
        up to `grace_seconds` to be answered (with `Connection: close`); then every
        connection closes (requests still running are cancelled)."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            if not connection.busy:
                connection.transport.abort()  # nothing to flush; no TLS close_notify wait
        try:
            await asyncio.wait_for(self._idle.wait(), max(grace_seconds, 0))
        except TimeoutError:
            pass
        tasks = []
        for connection in list(self.connections):
            if connection.task is not None and not connection.task.done():
                connection.task.cancel()
                tasks.append(connection.task)
            connection.transport.abort()  # answers were written: the kernel sends them
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 1)
            except TimeoutError:
                pass
        self.app.workers.shutdown()


async def start_server(
    app: RestApp, port: int, host: str = "0.0.0.0", ssl_config=None
) -> RestServer:
    """The HTTP(S) server listening on host:port, on the running event loop; OSError if it
    cannot bind. At most max(64, 16 x REST workers) connections are open at once."""
    loop = asyncio.get_running_loop()
    server = RestServer(app, loop)
    context = ssl_context(ssl_config) if ssl_config is not None else None
    server._server = await loop.create_server(
        lambda: _Connection(server),
        host,
        port,
        ssl=context,
        ssl_handshake_timeout=TLS_HANDSHAKE_SECONDS if context is not None else None,
        ssl_shutdown_timeout=TLS_SHUTDOWN_SECONDS if context is not None else None,
        reuse_address=True,
        backlog=128,
    )
    return server


def ssl_context(ssl_config) -> ssl.SSLContext:
    """A server TLS context from an SSLConfig (the same file format as --ssl_config_file)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:  # load_cert_chain reads files only
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        with open(cert, "w") as f:
            f.write(ssl_config.server_cert)
        with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(ssl_config.server_key)
        context.load_cert_chain(cert, key)
    if ssl_config.custom_ca:
        context.load_verify_locations(cadata=ssl_config.custom_ca)
    if ssl_config.client_verify:
        context.verify_mode = ssl.CERT_REQUIRED
    return context
