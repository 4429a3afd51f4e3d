"""Request deadlines: TF Serving answers DEADLINE_EXCEEDED (HTTP 504).

Two sources, as in TF Serving: REST requests get --rest_api_timeout_in_ms
(http_rest_api_handler.cc sets RunOptions.timeout_in_ms), gRPC requests get the client's own
deadline (prediction_service_impl.cc: `run_options.set_timeout_in_ms(
DeadlineToTimeoutMillis(context->raw_deadline()))` for Predict, Classify, Regress and
MultiInference). A front end opens `scope(timeout_ms)` around a request; the code that runs the model reads
`current()` from the same context (a thread, or an asyncio task of the async front ends: the
deadline is a ContextVar), so no signature in between has to carry the deadline:
- TF2 signature functions run under a `CancellationManager` that one watchdog thread cancels
  when the deadline passes, so the runtime stops the graph (a long loop really stops, the
  thread and the CPU are freed).
- TF1 sessions get `RunOptions.timeout_in_ms`, which the session enforces itself: the
  configured budget for REST; for gRPC the time left, rounded up to a power of two ms so that
  a few cached callables serve every deadline.
- A request waiting in a batch queue gives up waiting at the deadline.

TensorFlow keeps the active CancellationManager in one process-wide global
(`tensorflow.python.eager.cancellation.context()`), which concurrent requests would clobber;
`install()` makes the lookup per thread (falling back to the global for any other user).
"""

from __future__ import annotations

import contextlib
import contextvars
import heapq
import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
from tensorflow.python.eager import cancellation

from serving.errors import ServingError

_local = threading.local()  # the TF cancellation manager of the call running in a thread
_deadline: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "deadline", default=None
)


@dataclass(frozen=True)
class Deadline:
    """When a request must be answered (time.monotonic()), the budget a session run gets
    (`timeout_ms`), and where the deadline came from (for the error message).

    A deadline can also be cancelled (the gRPC client cancelled or went away): it then counts
    as passed everywhere, and the TF2 function calls running under it are cancelled.
    """

    at: float
    timeout_ms: int
    source: str = "--rest_api_timeout_in_ms"
    cancelled: threading.Event = field(default_factory=threading.Event, compare=False)
    _managers: list = field(default_factory=list, compare=False, repr=False)

    def remaining(self) -> float:
        """Seconds left (negative once passed or cancelled)."""
        if self.cancelled.is_set():
            return -1.0
        return self.at - time.monotonic()

    def cancel(self) -> None:
        """Give up the request: its queued work is dropped and its TF2 calls cancelled."""
        self.cancelled.set()
        for manager in list(self._managers):
            manager.start_cancel()

    def error(self) -> ServingError:
        """TF Serving's DEADLINE_EXCEEDED for this deadline (CANCELLED once cancelled)."""
        if self.cancelled.is_set():
            return ServingError(grpc.StatusCode.CANCELLED, "The client cancelled the request")
        return ServingError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"Deadline exceeded: the request did not finish within {self.timeout_ms} ms "
            f"({self.source})",
        )


def current() -> Deadline | None:
    """The deadline of the request this thread is serving, if any."""
    return _deadline.get()


@contextlib.contextmanager
def scope(timeout_ms: int) -> Iterator[Deadline | None]:
    """Serve one request under a deadline timeout_ms from now (<= 0: no deadline)."""
    if timeout_ms <= 0:
        yield None
        return
    limit = Deadline(time.monotonic() + timeout_ms / 1000.0, timeout_ms)
    token = _deadline.set(limit)
    try:
        yield limit
    finally:
        _deadline.reset(token)


_default_client_ms = 0


def set_default_client_timeout(timeout_ms: int) -> None:
    """The deadline of gRPC requests whose client sets none (--grpc_default_timeout_in_ms;
    <= 0: none, as in TF Serving)."""
    global _default_client_ms
    _default_client_ms = timeout_ms


@contextlib.contextmanager
def client_scope(seconds_left: float | None) -> Iterator[Deadline | None]:
    """Serve one gRPC request under the client's deadline (None or absurdly far: the
    server's default, if any)."""
    source = "the client's deadline"
    if seconds_left is None or seconds_left > 1e8:
        if _default_client_ms <= 0:
            yield None
            return
        seconds_left = _default_client_ms / 1000.0
        source = "--grpc_default_timeout_in_ms"
    limit = Deadline(time.monotonic() + seconds_left, _budget_ms(seconds_left), source)
    token = _deadline.set(limit)
    try:
        yield limit
    finally:
        _deadline.reset(token)


def _budget_ms(seconds_left: float) -> int:
    """A session run budget: the time left, rounded up to a power of two ms."""
    ms = max(1, int(seconds_left * 1000))
    return 1 << (ms - 1).bit_length()


def for_batch(limits: list[Deadline | None]) -> Deadline | None:
    """The deadline a batch runs under: the latest of its requests' (none if one has none),
    as batching_session.cc:746-783 takes the largest remaining timeout for the batch."""
    if not limits or any(limit is None for limit in limits):
        return None
    latest = max(limits, key=lambda limit: limit.at)
    return Deadline(latest.at, _budget_ms(latest.remaining()), latest.source)


@contextlib.contextmanager
def bound(limit: Deadline | None) -> Iterator[Deadline | None]:
    """Run this block (in this thread) under an existing deadline."""
    token = _deadline.set(limit)
    try:
        yield limit
    finally:
        _deadline.reset(token)


# ---- cancellation of TF2 function calls ---------------------------------------------------
_global_context = cancellation.context


def _thread_context():
    manager = getattr(_local, "cancellation", None)
    return manager if manager is not None else _global_context()


def install() -> None:
    """Make TensorFlow's active cancellation manager per thread (idempotent)."""
    cancellation.context = _thread_context


class _Watchdog:
    """One thread that cancels managers whose deadlines have passed."""

    def __init__(self):
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, cancellation.CancellationManager]] = []
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, at: float, manager: cancellation.CancellationManager) -> int:
        with self._cv:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="deadlines", daemon=True)
                self._thread.start()
            key = next(self._ids)
            heapq.heappush(self._heap, (at, key, manager))
            if self._heap[0][1] == key:  # new earliest deadline: wake the loop
                self._cv.notify()
            return key

    def _loop(self) -> None:
        with self._cv:
            while True:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, _, manager = heapq.heappop(self._heap)
                    manager.start_cancel()
                self._cv.wait(self._heap[0][0] - now if self._heap else None)

    def forget(self, key: int) -> None:
        """Stop watching (the call finished); cheap enough for every request."""
        with self._cv:
            for i, item in enumerate(self._heap):
                if item[1] == key:
                    self._heap[i] = self._heap[-1]
                    self._heap.pop()
                    heapq.heapify(self._heap)
                    return


_watchdog = _Watchdog()


@contextlib.contextmanager
def cancel_at(deadline: Deadline | None) -> Iterator[cancellation.CancellationManager | None]:
    """Run TF2 function calls in this block under a manager cancelled at the deadline."""
    if deadline is None:
        yield None
        return
    if deadline.remaining() <= 0:
        raise deadline.error()
    install()
    manager = cancellation.CancellationManager()
    key = _watchdog.watch(deadline.at, manager)
    deadline._managers.append(manager)
    previous = getattr(_local, "cancellation", None)
    _local.cancellation = manager
    try:
        if deadline.cancelled.is_set():  # cancelled between the check above and now
            manager.start_cancel()
        yield manager
    finally:
        _local.cancellation = previous
        deadline._managers.remove(manager)
        _watchdog.forget(key)
