"""Dynamic batching: one bounded queue per (servable version, signature), shared by gRPC and REST.

Reads TF Serving's `BatchingParameters` text format. A request's rows (dim 0 of its inputs) join
a queue; batch threads merge queued requests with the same output set and per-row shapes into one
graph run of at most `max_batch_size` rows (padded up to the next `allowed_batch_sizes` entry),
waiting at most `batch_timeout_micros` for a batch to fill, and split the outputs back. A full
queue (`max_enqueued_batches * max_batch_size` rows) fails fast with UNAVAILABLE (REST 503), as
TF Serving's batch scheduler does. With `pad_variable_length_inputs`, requests whose inputs differ
only past dim 0 share a batch: each input is padded at the end of every other dimension to the
batch's largest size, with its own first value, and the padded outputs are split by rows only
(batching/batching_util.cc AddPadding / PadTensor, batching_session.cc MergeInputTensors).
Requests that cannot be merged (rank-0 inputs, more rows than `max_batch_size`, shapes that
differ from the signature) run on their own, so batching never changes which requests succeed.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import deque
from dataclasses import dataclass

import grpc
import numpy as np
from google.protobuf import text_format

from serving import aio, deadline, metrics
from serving.config_protos import BatchingParameters
from serving.errors import ServingError, invalid
from serving.servable import Signature, shape_compatible, shape_of

#: the largest values the zoo accepts (TF Serving accepts any): threads are started per
#: queue, and a batch is padded up to an allowed size; queue capacity costs nothing until
#: requests fill it (TF Serving's examples use max_enqueued_batches 1000000), so it is free
UPPER_BOUNDS = {
    "num_batch_threads": 64,
    "max_batch_size": 1 << 16,
    "batch_timeout_micros": 60_000_000,
}


@dataclass(frozen=True)
class BatchingOptions:
    """Parsed BatchingParameters with TF Serving's defaults."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = os.cpu_count() or 1
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    @classmethod
    def from_text(cls, text: str) -> BatchingOptions:
        """Parse a --batching_parameters_file."""
        try:
            p = text_format.Parse(text, BatchingParameters())
        except text_format.ParseError as e:
            raise invalid(f"Invalid batching parameters file: {e}") from None
        return cls.from_proto(p)

    @classmethod
    def from_proto(cls, p) -> BatchingOptions:
        """From a BatchingParameters message, TF Serving's defaults for unset fields."""
        d = cls()
        opts = cls(
            max_batch_size=p.max_batch_size.value
            if p.HasField("max_batch_size")
            else d.max_batch_size,
            batch_timeout_micros=p.batch_timeout_micros.value,
            max_enqueued_batches=(
                p.max_enqueued_batches.value
                if p.HasField("max_enqueued_batches")
                else d.max_enqueued_batches
            ),
            num_batch_threads=(
                p.num_batch_threads.value
                if p.HasField("num_batch_threads")
                else d.num_batch_threads
            ),
            allowed_batch_sizes=tuple(p.allowed_batch_sizes),
            pad_variable_length_inputs=p.pad_variable_length_inputs,
        )
        opts.validate()
        return opts

    def validate(self) -> None:
        """TF Serving's checks on the parameters, and upper bounds it lacks (each queue
        starts `num_batch_threads` threads: 3000 made 9,016 threads for three signatures)."""
        if (
            self.max_batch_size <= 0
            or self.num_batch_threads <= 0
            or self.max_enqueued_batches <= 0
        ):
            raise invalid("max_batch_size, num_batch_threads and max_enqueued_batches must be > 0")
        for name, bound in UPPER_BOUNDS.items():
            if getattr(self, name) > bound:
                raise invalid(f"{name} is {getattr(self, name)}; at most {bound} is allowed")
        if self.batch_timeout_micros < 0:
            raise invalid("batch_timeout_micros must be >= 0")
        sizes = self.allowed_batch_sizes
        if sizes:
            if list(sizes) != sorted(set(sizes)):
                raise invalid("allowed_batch_sizes entries must be monotonically increasing")
            if sizes[-1] != self.max_batch_size:
                raise invalid("Last entry in allowed_batch_sizes must match max_batch_size")


def _wait(done: threading.Lock, limit: deadline.Deadline | None) -> bool:
    """Wait for a task's result until its deadline passes or it is cancelled."""
    if limit is None:
        return done.acquire()
    while (left := limit.remaining()) > 0:
        if done.acquire(timeout=min(left, 0.05)):
            return True
    return done.acquire(blocking=False)


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(eq=False)
class _Task:
    key: tuple
    inputs: dict[str, np.ndarray]
    rows: int
    enqueued: float
    limit: deadline.Deadline | None = None  # the request's deadline
    # a synchronous caller waits on `done`, held until the result is in (a bare lock is much
    # cheaper to signal than an Event when a batch thread completes dozens of tasks); an
    # asynchronous one awaits `future`, resolved on its loop
    done: threading.Lock | None = None
    future: asyncio.Future | None = None
    result: dict[str, np.ndarray] | None = None
    error: BaseException | None = None


def _resolve(tasks: list[_Task]) -> None:
    """On the waiters' event loop: wake every task of a finished batch."""
    for t in tasks:
        if not t.future.done():
            t.future.set_result(None)


def _finish(batch: list[_Task]) -> None:
    """Wake every waiter of a finished batch: one loop wake-up per event loop, not per task."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Task]] = {}
    for t in batch:
        if t.future is not None:
            by_loop.setdefault(t.future.get_loop(), []).append(t)
        else:
            t.done.release()
    for loop, tasks in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, tasks)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass


class BatchQueue:
    """The queue and batch threads of one signature of one servable."""

    def __init__(self, servable, sig: Signature, options: BatchingOptions):
        self._servable = servable
        self._sig = sig
        self._opts = options
        self._cv = threading.Condition()
        self._tasks: deque[_Task] = deque()
        self._rows = 0
        self._closed = False
        self._max_rows = options.max_batch_size * options.max_enqueued_batches
        self._labels = (servable.name, sig.name)
        self._threads = [
            threading.Thread(target=self._worker, name=f"batch-{sig.name}-{i}", daemon=True)
            for i in range(options.num_batch_threads)
        ]
        for t in self._threads:
            t.start()

    def _batch_key(self, inputs: dict[str, np.ndarray], output_names: tuple) -> tuple | None:
        """Requests with equal keys can be concatenated; None = run alone."""
        rows = None
        parts = []
        for name in sorted(inputs):
            a = inputs[name]
            declared = shape_of(self._sig.proto.inputs[name])
            if a.ndim == 0 or not shape_compatible(declared, a.shape):
                return None
            if rows is None:
                rows = a.shape[0]
            elif a.shape[0] != rows:
                return None
            inner = a.ndim if self._opts.pad_variable_length_inputs else a.shape[1:]
            parts.append((name, inner, a.dtype.str))
        if not rows or rows > self._opts.max_batch_size:
            return None
        return (output_names, tuple(parts))

    def _enqueue(self, task: _Task) -> None:
        with self._cv:
            if self._closed:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "Servable is being unloaded")
            if self._rows + task.rows > self._max_rows:
                raise ServingError(
                    grpc.StatusCode.UNAVAILABLE,
                    "The batch scheduling queue to which this task was submitted is full",
                )
            self._tasks.append(task)
            self._rows += task.rows
            # wake a batch thread only when it has something new to decide: the first task
            # (threads wait for one), or enough rows for a full batch; one waiting out its
            # batch timeout is not woken per request (that cost a wake-up, and a scan of the
            # queue under the lock, for every request)
            if len(self._tasks) == 1 or self._rows >= self._opts.max_batch_size:
                self._cv.notify()
        metrics.INPUT_BATCH_SIZE.observe(task.rows, *self._labels)

    def _drop(self, task: _Task) -> None:
        """Forget a task whose caller gave up; one already in a batch simply runs."""
        with self._cv:
            try:
                self._tasks.remove(task)
                self._rows -= task.rows
            except ValueError:
                pass

    def _outcome(self, task: _Task) -> dict[str, np.ndarray]:
        if task.error is not None:
            raise task.error
        return task.result

    def submit(
        self, sig: Signature, inputs: dict[str, np.ndarray], output_names: tuple[str, ...]
    ) -> dict[str, np.ndarray]:
        """Queue a request and wait for its slice of the batch result."""
        key = self._batch_key(inputs, output_names)
        if key is None:
            return self._servable.run_direct(sig, inputs, output_names)
        limit = deadline.current()
        rows = next(iter(inputs.values())).shape[0]
        task = _Task(key, inputs, rows, time.monotonic(), limit, done=_held_lock())
        self._enqueue(task)
        if not _wait(task.done, limit):
            self._drop(task)
            raise limit.error()
        return self._outcome(task)

    async def submit_async(
        self, sig: Signature, inputs: dict[str, np.ndarray], output_names: tuple[str, ...]
    ) -> dict[str, np.ndarray]:
        """`submit` for a caller on an event loop: the wait holds no thread."""
        key = self._batch_key(inputs, output_names)
        if key is None:
            return await aio.blocking(self._servable.run_direct, sig, inputs, output_names)
        limit = deadline.current()
        rows = next(iter(inputs.values())).shape[0]
        future = asyncio.get_running_loop().create_future()
        task = _Task(key, inputs, rows, time.monotonic(), limit, future=future)
        self._enqueue(task)
        try:
            if limit is None:
                await asyncio.shield(future)
            else:
                await asyncio.wait_for(asyncio.shield(future), max(limit.remaining(), 0))
        except TimeoutError:
            self._drop(task)
            raise limit.error() from None
        except asyncio.CancelledError:
            self._drop(task)
            if limit is not None:
                limit.cancel()
            raise
        return self._outcome(task)

    def _take_batch(self) -> list[_Task] | None:
        timeout = self._opts.batch_timeout_micros / 1e6
        with self._cv:
            while not self._tasks:
                if self._closed:
                    return None
                self._cv.wait()
            first = self._tasks[0]
            until = first.enqueued + timeout
            while True:
                same = sum(t.rows for t in self._tasks if t.key == first.key)
                now = time.monotonic()
                if same >= self._opts.max_batch_size or now >= until or self._closed:
                    break
                self._cv.wait(until - now)
                if not self._tasks or self._tasks[0] is not first:  # taken by another thread
                    return []
            batch, rows, rest = [], 0, deque()
            while self._tasks:
                t = self._tasks.popleft()
                if t.key == first.key and rows + t.rows <= self._opts.max_batch_size:
                    batch.append(t)
                    rows += t.rows
                else:
                    rest.append(t)
            self._tasks = rest
            self._rows -= rows
            if rest:  # another thread may start on what this batch left
                self._cv.notify()
        now = time.monotonic()
        for t in batch:
            metrics.QUEUING_LATENCY.observe((now - t.enqueued) * 1e6, *self._labels)
        return batch

    def _worker(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if batch:
                self._run(batch)

    def _padded_size(self, rows: int) -> int:
        for size in self._opts.allowed_batch_sizes:
            if size >= rows:
                return size
        return rows

    def _run(self, batch: list[_Task]) -> None:
        """Run a batch under the latest of its requests' deadlines (batching_session.cc)."""
        limit = deadline.for_batch([t.limit for t in batch])
        if limit is not None and limit.remaining() <= 0:
            error = ServingError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "Run() timeout exceeded while waiting in batching queue",
            )
            for t in batch:
                t.error = error
            _finish(batch)
            return
        with deadline.bound(limit):
            self._run_merged(batch)

    def _merge(self, batch: list[_Task], target: int) -> dict[str, np.ndarray]:
        """Each input of the batch, built once: every request's rows copied into one buffer
        of `target` rows, the rows past theirs filled with the first request's first row."""
        merged = {}
        for name in batch[0].inputs:
            parts = [t.inputs[name] for t in batch]
            if self._opts.pad_variable_length_inputs:
                parts = pad_to_common_shape(parts)
            first = parts[0]
            buffer = np.empty((target, *first.shape[1:]), dtype=first.dtype)
            start = 0
            for part in parts:
                buffer[start : start + len(part)] = part
                start += len(part)
            if start < target:
                buffer[start:] = first[:1]
            merged[name] = buffer
        return merged

    def _run_merged(self, batch: list[_Task]) -> None:
        output_names = batch[0].key[0]
        try:
            rows = sum(t.rows for t in batch)
            target = self._padded_size(rows)
            metrics.record_batch(self._labels, target, target - rows)
            if len(batch) == 1 and target == rows:
                batch[0].result = self._servable.run_direct(
                    self._sig, batch[0].inputs, output_names
                )
                return
            try:
                out = self._servable.run_direct(self._sig, self._merge(batch, target), output_names)
            except ServingError:
                out = None
            if out is None or any(np.ndim(v) == 0 or len(v) != target for v in out.values()):
                # a bad member or outputs not split by row: fall back to one run per request
                for t in batch:
                    try:
                        t.result = self._servable.run_direct(self._sig, t.inputs, output_names)
                    except BaseException as e:  # each request gets its own error
                        t.error = e
                return
            start = 0
            for t in batch:  # views of the batch output, no copy
                t.result = {k: v[start : start + t.rows] for k, v in out.items()}
                start += t.rows
        except BaseException as e:
            for t in batch:
                if t.result is None and t.error is None:
                    t.error = e
        finally:
            _finish(batch)

    def close(self) -> None:
        """Finish queued work, then stop the threads."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        for t in self._threads:
            t.join(timeout=30)


def pad_to_common_shape(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Pad each array at the end of every dimension but the first up to the largest size
    among them, with the array's own first value (TF Serving's PadTensor)."""
    target = np.max([a.shape for a in arrays], axis=0)
    out = []
    for a in arrays:
        widths = [(0, 0)] + [(0, int(t - s)) for t, s in zip(target[1:], a.shape[1:], strict=True)]
        if any(w for _, w in widths) and a.size:
            a = np.pad(a, widths, constant_values=a.flat[0])
        out.append(a)
    return out
