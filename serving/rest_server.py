"""REST front end: TF Serving's /v1/models API and the Prometheus endpoint.

Stack: the standard library's ThreadingHTTPServer speaking HTTP/1.1 keep-alive, with
TCP_NODELAY, one write per response and orjson for JSON. For batch-1 requests the cost that
matters is per-request overhead, and this adds ~0.2-0.4 ms on this machine (well inside the
2 ms budget over an in-process call) with no extra dependency or event-loop/thread handoff;
the model runs in the connection's thread, so there is no queue hop before the session.
"""

from __future__ import annotations

import gzip
import logging
import re
import socket
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import grpc
import orjson
from google.protobuf import json_format
from tensorflow_serving.apis import classification_pb2, get_model_metadata_pb2, regression_pb2

from serving import deadline, json_tensor, metrics
from serving.errors import ServingError, invalid
from serving.predict import PredictionCore, Spec, error_status

log = logging.getLogger("serving.rest")

_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?::(?P<verb>[A-Za-z]+)|/(?P<meta>metadata))?/?$",
    re.IGNORECASE,
)
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 413: b"Payload Too Large",
            429: b"Too Many Requests", 500: b"Internal Server Error", 501: b"Not Implemented",
            503: b"Service Unavailable", 504: b"Gateway Timeout"}  # fmt: skip


def _proto_dict(message) -> dict:
    return json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )


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
    ):
        self.core = core
        self.metrics_path = metrics_path
        self.max_body = max_body
        self.timeout_ms = timeout_ms  # --rest_api_timeout_in_ms; <= 0: none
        self.in_flight = InFlight()

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, bytes, str]:
        """(HTTP status, body, content type) for one request."""
        with self.in_flight, deadline.scope(self.timeout_ms):
            try:
                return 200, *self._route(method, path, body)
            except Exception as e:
                code, message = error_status(e)
                if not isinstance(e, ServingError):
                    log.exception("internal error on %s %s", method, path)
                status = e.http_status if isinstance(e, ServingError) else 500
                return status, orjson.dumps({"error": message}), "application/json"

    def _route(self, method: str, path: str, body: bytes) -> tuple[bytes, str]:
        path = path.split("?", 1)[0]
        if self.metrics_path and path == self.metrics_path and method == "GET":
            return metrics.render(), "text/plain; version=0.0.4"
        if path.lower().rstrip("/") == "/v1/models":
            raise invalid("Missing model name in request.")
        m = _PATH.match(path)
        if m is None or not path[:4].lower() == "/v1/":
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Malformed request: {method} {path}")
        name = unquote(m["name"])
        version = None
        if m["version"] is not None:
            if not m["version"].isdigit():
                raise invalid(f"Invalid version: {m['version']!r} is not an integer")
            version = int(m["version"])
        label = unquote(m["label"]) if m["label"] else None
        verb = (m["verb"] or "").lower()
        if method == "GET" and not verb:
            if m["meta"]:
                return self._metadata(Spec(name, version, label)), "application/json"
            status = self.core.status(name, version)
            return orjson.dumps(_proto_dict(status)), "application/json"
        if method != "POST" or verb not in ("predict", "classify", "regress"):
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Malformed request: {method} {path}")
        request = json_tensor.loads(body)
        signature_name = request.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise invalid("'signature_name' must be a string")
        spec = Spec(name, version, label, signature_name)
        if verb == "predict":
            return self._predict(spec, request), "application/json"
        model_spec = _model_spec(spec)
        examples = json_tensor.examples_input(request)
        if verb == "classify":
            req = classification_pb2.ClassificationRequest(model_spec=model_spec, input=examples)
            return json_tensor.classify_json(
                self.core.classify(req, "REST").result
            ), "application/json"
        req = regression_pb2.RegressionRequest(model_spec=model_spec, input=examples)
        return json_tensor.regress_json(self.core.regress(req, "REST").result), "application/json"

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
        _, _, outputs = self.core.predict(spec, inputs, output_filter, "REST")
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


def _model_spec(spec: Spec):
    from tensorflow_serving.apis import model_pb2

    out = model_pb2.ModelSpec(name=spec.name, signature_name=spec.signature_name)
    if spec.version is not None:
        out.version.value = spec.version
    elif spec.label:
        out.version_label = spec.label
    return out


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

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        reason = _REASONS.get(status, b"Error")
        head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (
            status,
            reason,
            content_type.encode(),
            len(body),
        )
        if self.close_connection:
            head += b"Connection: close\r\n"
        self.wfile.write(head + b"\r\n" + body)

    def _body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.app.max_body:
            self.close_connection = True
            err = {
                "error": f"Request body of {length} bytes exceeds the limit of {self.app.max_body}"
            }
            self._reply(413, orjson.dumps(err), "application/json")
            self._discard(length)
            return None
        body = self.rfile.read(length) if length else b""
        if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError, zlib.error) as e:
                self._reply(
                    400, orjson.dumps({"error": f"Invalid gzip body: {e}"}), "application/json"
                )
                return None
        return body

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

    def do_GET(self) -> None:  # noqa: N802
        self._reply(*self.app.handle("GET", self.path, b""))

    def do_POST(self) -> None:  # noqa: N802
        body = self._body()
        if body is not None:
            self._reply(*self.app.handle("POST", self.path, body))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def build_server(app: RestApp, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """An HTTP server bound to host:port, to run with serve_forever()."""
    handler = type("Handler", (_Handler,), {"app": app})
    return _Server((host, port), handler)
