"""One error type for the whole server, carrying a gRPC status code and its HTTP mapping,
and the one reader of TensorFlow error messages (`error_summary`)."""

from __future__ import annotations

import re

import grpc

# TF Serving's REST mapping of status codes (model_servers/http_rest_api_handler.cc).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

# tensorflow.error.Code numbers, for StatusProto in model status responses.
ERROR_CODE_NUMBER: dict[grpc.StatusCode, int] = {c: c.value[0] for c in grpc.StatusCode}

MAX_MESSAGE_CHARS = 1024

_NOISE = re.compile(
    r"^(Graph execution error:|Detected at node .*|<stack traces unavailable>"
    r"|File \".*|\[\[\{\{node .*\}\}\]\].*)$"
)
_NODE = re.compile(r"\s*\[\[\{\{node [^}]*\}\}\]\]")
_OP = re.compile(r"\s*\[Op:[^\]]*\]")


class ServingError(Exception):
    """A request failed with a status code (and optionally an HTTP code that overrides the map)."""

    def __init__(self, code: grpc.StatusCode, message: str, http_status: int | None = None):
        if len(message) > MAX_MESSAGE_CHARS:  # TF Serving truncates long messages the same way
            message = message[: MAX_MESSAGE_CHARS - 12] + "...TRUNCATED"
        super().__init__(message)
        self.code = code
        self.message = message
        self._http_status = http_status

    @property
    def http_status(self) -> int:
        """The HTTP status for the REST API."""
        return self._http_status or HTTP_STATUS.get(self.code, 500)


def invalid(message: str) -> ServingError:
    """INVALID_ARGUMENT."""
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    """NOT_FOUND."""
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def error_summary(message: str) -> str:
    """The line of a TensorFlow error message that says what went wrong ("" when none).

    Eager/function errors start with 'Graph execution error:' and a Python traceback of where
    the failing op was defined; the cause ('Unknown image file format ...') comes after it,
    followed by node and op names (`[[{{node ...}}]]`, `[Op:...]`), which are dropped.
    Used by the server and by `zoo predict`.
    """
    for raw in message.splitlines():
        line = _OP.sub("", _NODE.sub("", raw)).strip()
        if line and not _NOISE.match(line):
            return line
    return ""
