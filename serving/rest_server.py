"""REST front end: TF Serving's /v1/models API, the Open Inference Protocol's /v2 API, and the
Prometheus endpoint.

Stack: the standard library's ThreadingHTTPServer speaking HTTP/1.1 keep-alive, with
TCP_NODELAY, one write per response and orjson for JSON; the model runs in the connection's
thread, so there is no queue hop before the session. Kept after measuring it against
uvicorn + httptools (see benchmarks/serving_peers.py and README "REST transport"): for
batch-1 requests the cost that matters is per-request overhead, and an event loop adds a
thread hop per request to reach a blocking session run. What the standard library lacks is
added here: chunked request bodies, CORS and OPTIONS, and TLS (`--rest_api_ssl_config_file`;
TF Serving has no TLS on REST, its #1503).

As TF Serving's http_server.cc: every path under `/v1/` (any case) reaches the API handler,
which answers 400 "Malformed request: METHOD PATH" for what it does not know; OPTIONS is a CORS
preflight (200 when the Origin header is http(s), else 400, empty body); with
--rest_api_enable_cors_support every answer carries `Access-Control-Allow-Origin: *`,
`-Methods: POST, GET` and `-Headers: Content-Type`; request_count is recorded for every
request, request_latency for successful ones with the URL's verb as API.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import ssl
import tempfile
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import grpc
import orjson
from google.protobuf import json_format
from tensorflow_serving.apis import classification_pb2, get_model_metadata_pb2, regression_pb2

from serving import deadline, departures, json_tensor, metrics, v2
from serving.errors import ServingError, invalid
from serving.predict import PredictionCore, Spec, error_status

log = logging.getLogger("serving.rest")

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
    r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?:/(?P<what>ready|infer))?/?$"
)
_ORIGIN = re.compile(r"https?://")
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 413: b"Payload Too Large",
            429: b"Too Many Requests", 500: b"Internal Server Error", 501: b"Not Implemented",
            503: b"Service Unavailable", 504: b"Gateway Timeout"}  # fmt: skip
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
    """Counts requests being served, so shutdown can wait for them."""

    def __init__(self):
        self._n = 0
        self._cv = threading.Condition()

    def __enter__(self):
        with self._cv:
            self._n += 1

    def __exit__(self, *exc):
        with self._cv:
            self._n -= 1
            self._cv.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._cv:
            return self._cv.wait_for(lambda: self._n == 0, timeout)


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
    ):
        self.core = core
        self.num_threads = num_threads  # --rest_api_num_threads: requests served at once
        self.workers = threading.BoundedSemaphore(num_threads)
        self.metrics_path = metrics_path
        self.max_body = max_body
        self.timeout_ms = timeout_ms  # --rest_api_timeout_in_ms; <= 0: none
        self.cors = cors  # --rest_api_enable_cors_support
        self.v2 = v2.OpenInferenceApi(core)
        self.in_flight = InFlight()

    def handle(self, method: str, path: str, body: bytes, headers=None, connection=None) -> Reply:
        """The answer to one request (headers: a case-insensitive mapping, or None); with
        `connection` (the client's socket), the request is cancelled if the client leaves."""
        path = path.split("?", 1)[0]
        if self.metrics_path and path == self.metrics_path and method == "GET":
            return Reply(200, metrics.render(), "text/plain; version=0.0.4")
        v1 = path[:4].lower() == "/v1/"
        with (
            self.in_flight,
            deadline.scope(self.timeout_ms) as limit,
            departures.watching(connection, limit),
        ):
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
                    reply = Reply(200, self._v1(method, path, body))
                elif path == "/v2" or path.startswith("/v2/"):
                    infer = _V2_MODEL.match(path) if method == "POST" else None
                    if infer is not None and infer["what"] == "infer":
                        model, api = unquote(infer["name"]), "infer"
                    reply = self._v2(method, path, body, headers or {})
                else:
                    raise ServingError(grpc.StatusCode.NOT_FOUND, f"Not found: {method} {path}")
            except Exception as e:
                status_code, message = error_status(e)
                code = status_code.name
                if not isinstance(e, ServingError):
                    log.exception("internal error on %s %s", method, path)
                status = e.http_status if isinstance(e, ServingError) else 500
                reply = Reply(status, orjson.dumps({"error": message}))
            if v1 or api == "infer":  # TF Serving's REST metrics, and the V2 infer calls
                metrics.record_request(model, api, "REST", code, time.perf_counter() - start)
        if self.cors:
            reply.headers.update(CORS_HEADERS)
        return reply

    def _v1(self, method: str, path: str, body: bytes) -> bytes:
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
                return self._metadata(Spec(name, version, label))
            if not name:
                raise invalid("Missing model name in request.")
            return orjson.dumps(_proto_dict(self.core.status(name, version)))
        verb = m["verb"]
        if verb not in ("predict", "classify", "regress"):  # the comparison is case-sensitive
            raise malformed
        request = json_tensor.loads(body)
        signature_name = request.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise invalid("'signature_name' must be a string")
        spec = Spec(name, version, label, signature_name)
        if verb == "predict":
            return self._predict(spec, request)
        model_spec = _model_spec(spec)
        examples = json_tensor.examples_input(request)
        if verb == "classify":
            req = classification_pb2.ClassificationRequest(model_spec=model_spec, input=examples)
            return json_tensor.classify_json(self.core.classify(req).result)
        req = regression_pb2.RegressionRequest(model_spec=model_spec, input=examples)
        return json_tensor.regress_json(self.core.regress(req).result)

    def _predict(self, spec: Spec, request: dict) -> bytes:
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
        _, _, outputs = self.core.predict(spec, inputs, output_filter)
        return json_tensor.predict_response(outputs, row_format)

    def _metadata(self, spec: Spec) -> bytes:
        response = self.core.metadata(spec)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sig_map)
        payload = {
            "model_spec": _proto_dict(response.model_spec),
            "metadata": {"signature_def": _proto_dict(sig_map)},
        }
        return orjson.dumps(payload)

    def _v2(self, method: str, path: str, body: bytes, headers) -> Reply:
        """The Open Inference Protocol's REST API."""
        api = self.v2
        if method == "GET" and path.rstrip("/") in ("/v2", ""):
            return Reply(200, orjson.dumps(api.server_metadata()))
        if method == "GET" and path == "/v2/health/live":
            return Reply(200, b"", None)
        if method == "GET" and path == "/v2/health/ready":
            return Reply(200 if api.server_ready() else 400, b"", None)
        m = _V2_MODEL.match(path)
        if m is None:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Not found: {method} {path}")
        name = unquote(m["name"])
        version = unquote(m["version"]) if m["version"] else None
        if method == "GET" and m["what"] == "ready":
            return Reply(200 if api.model_ready(name, version) else 400, b"", None)
        if method == "GET" and m["what"] is None:
            return Reply(200, orjson.dumps(api.model_metadata(name, version)))
        if method == "POST" and m["what"] == "infer":
            request, all_binary, binary = v2.rest_infer_request(
                name, version, body, headers.get(v2.HEADER_LENGTH)
            )
            resolved, outputs = api.infer(request)
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


_DIGITS = re.compile(r"[0-9]{1,18}")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}")
_MAX_TRAILERS = 100
_BUSY_BODY = b'{"error": "Too many open connections"}'
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


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


#: how much of a refused (oversize) body is read and dropped before the connection closes
LINGER_MAX_BYTES = 256 << 20
LINGER_SECONDS = 5.0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    app: RestApp  # set on the subclass built by build_server
    timeout = 300  # idle keep-alive connections are dropped after this

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args) -> None:  # noqa: A002 (signature of the base class)
        log.debug(format, *args)

    def _send(self, reply: Reply) -> None:
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
        if self.close_connection:
            head += b"Connection: close\r\n"
        self.wfile.write(head + b"\r\n" + reply.body)

    def _refuse(self, status: int, message: str) -> None:
        reply = Reply(status, orjson.dumps({"error": message}))
        if self.app.cors:
            reply.headers.update(CORS_HEADERS)
        self._send(reply)

    def _too_big(self, length: int) -> None:
        self.close_connection = True
        self._refuse(
            413, f"Request body of {length} bytes exceeds the limit of {self.app.max_body}"
        )

    def _body(self) -> bytes | None:
        """The request body (Content-Length or chunked, gzip undone), at most the body
        limit in every form; None once refused."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            body = self._chunked()
            if body is None:
                return None
        else:
            lengths = self.headers.get_all("Content-Length") or []
            if len(set(lengths)) > 1 or not all(_DIGITS.fullmatch(v) for v in lengths):
                self.close_connection = True  # RFC 9112 6.3: a framing error, unrecoverable
                self._refuse(400, "Invalid Content-Length header")
                return None
            length = int(lengths[0]) if lengths else 0
            if length > self.app.max_body:
                self._too_big(length)
                self._discard(length)
                return None
            body = self.rfile.read(length) if length else b""
            if len(body) < length:  # the client went away mid-body
                self.close_connection = True
                return None
        if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
            try:
                body = gunzip(body, self.app.max_body)
            except (OSError, EOFError, zlib.error) as e:
                self._refuse(400, f"Invalid gzip body: {e}")
                return None
            except BodyTooLarge as e:
                self.close_connection = True
                self._refuse(413, str(e))
                return None
        return body

    def _chunked(self) -> bytes | None:
        """Read a `Transfer-Encoding: chunked` body (RFC 9112 7.1), trailers dropped."""
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1026)
            size_text = line.split(b";", 1)[0].strip()
            if not _HEX.fullmatch(size_text):
                self.close_connection = True
                self._refuse(400, "Malformed chunked request body")
                return None
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > self.app.max_body:
                self._too_big(total)
                return None
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                self.close_connection = True
                return None
            parts.append(chunk)
            self.rfile.readline(3)  # the CRLF after the chunk
        for _ in range(_MAX_TRAILERS):
            if self.rfile.readline(65537) in (b"\r\n", b"\n", b""):
                break
        else:
            self.close_connection = True
            self._refuse(400, "Too many trailer fields in a chunked request body")
            return None
        return b"".join(parts)

    def _discard(self, length: int) -> None:
        """Read and drop a refused body (bounded in bytes and time), so that a client still
        sending it reads our answer instead of a reset connection (nginx's lingering close)."""
        budget = min(length, LINGER_MAX_BYTES)
        deadline = time.monotonic() + LINGER_SECONDS
        self.connection.settimeout(LINGER_SECONDS)
        try:
            while budget > 0 and time.monotonic() < deadline:
                chunk = self.rfile.read1(min(budget, 1 << 16))
                if not chunk:
                    break
                budget -= len(chunk)
        except OSError:
            pass

    def _handle(self) -> None:
        body = self._body() if self.command in ("POST", "PUT", "PATCH") else b""
        if body is None:
            return
        workers = self.app.workers
        wait = self.app.timeout_ms / 1000 if self.app.timeout_ms > 0 else None
        if not workers.acquire(timeout=wait):
            self._refuse(503, f"All {self.app.num_threads} REST workers stayed busy for {wait} s")
            return
        try:
            reply = self.app.handle(self.command, self.path, body, self.headers, self.connection)
        finally:
            workers.release()
        self._send(reply)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _handle  # noqa: N815


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    ssl_context: ssl.SSLContext | None = None
    max_connections = 256

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._open = 0
        self._open_lock = threading.Lock()

    def process_request(self, request, client_address) -> None:
        """A thread for the connection, unless `max_connections` are open: then it is
        answered 503 at once and closed (a flood of idle connections costs no threads)."""
        with self._open_lock:
            full = self._open >= self.max_connections
            if not full:
                self._open += 1
        if full:
            try:
                request.settimeout(0.1)
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._open_lock:
                self._open -= 1

    def finish_request(self, request, client_address) -> None:
        """Run in the connection's own thread, so a slow TLS handshake blocks no one else."""
        if self.ssl_context is not None:
            try:
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as e:
                log.debug("TLS handshake with %s failed: %s", client_address, e)
                return
        super().finish_request(request, client_address)


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


def build_server(
    app: RestApp, port: int, host: str = "0.0.0.0", ssl_config=None
) -> ThreadingHTTPServer:
    """An HTTP(S) server bound to host:port, to run with serve_forever(); it holds at most
    16 connections per REST worker (at least 64) open at once."""
    handler = type("Handler", (_Handler,), {"app": app})
    server = _Server((host, port), handler)
    server.max_connections = max(64, 16 * app.num_threads)
    if ssl_config is not None:
        server.ssl_context = ssl_context(ssl_config)
    return server
