"""Prometheus metrics under TF Serving's exact names and labels (servables/tensorflow/util.cc).

A tiny registry rather than prometheus_client: that library appends `_total`/`_created` to
counters, which would change the names TF Serving dashboards query.

What is recorded where follows TF Serving: `request_count{model_name,status}` for every
Predict/Classify/Regress over gRPC (prediction_service_impl.cc) and every REST request
(http_server.cc ProcessRequest); `request_latency{model_name,API,entrypoint}` only for requests
that succeed, with API `Predict`/`Classify`/`Regress` over gRPC and the URL's verb (`predict`,
`classify`, `regress`, `` for a GET) over REST; `runtime_latency{...,runtime="TF1"}` around the
graph run; `request_example_counts{model}` and `request_example_count_total{model}` for
MultiInference (multi_inference.cc); the batching session's batch sizes (input, processed,
padding), queuing latency and wrapped runs.
"""

from __future__ import annotations

import threading
from bisect import bisect_left

# TF Serving's request_latency buckets: exponential, microseconds (10us * 1.8^i).
LATENCY_BUCKETS = tuple(10 * 1.8**i for i in range(33))
# request_example_counts: Buckets::Exponential(1, 2, 15): 1, 2, 4, ... 16384
EXAMPLE_BUCKETS = tuple(float(2**i) for i in range(15))


def _labels_text(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{v}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class Counter:
    """A monotonically increasing count per label set."""

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...]):
        self.name, self.help, self.labels = name, help_text, labels
        self._values: dict[tuple, float] = {}
        self._lock = threading.Lock()

    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        with self._lock:
            self._values[label_values] = self._values.get(label_values, 0.0) + amount

    def value(self, *label_values: str) -> float:
        return self._values.get(label_values, 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        with self._lock:
            for lv, v in sorted(self._values.items()):
                lines.append(f"{self.name}{_labels_text(self.labels, lv)} {v:g}")
        return lines


class Histogram:
    """Cumulative-bucket histogram per label set."""

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...], buckets: tuple):
        self.name, self.help, self.labels, self.buckets = name, help_text, labels, buckets
        self._values: dict[tuple, list] = {}
        self._lock = threading.Lock()

    def observe(self, value: float, *label_values: str) -> None:
        with self._lock:
            counts = self._values.get(label_values)
            if counts is None:
                counts = self._values[label_values] = [[0] * (len(self.buckets) + 1), 0.0, 0]
            counts[0][bisect_left(self.buckets, value)] += 1
            counts[1] += value
            counts[2] += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self._lock:
            for lv, (buckets, total, count) in sorted(self._values.items()):
                running = 0
                for bound, n in zip((*self.buckets, float("inf")), buckets, strict=True):
                    running += n
                    le = "+Inf" if bound == float("inf") else f"{bound:g}"
                    le_label = 'le="' + le + '"'
                    labels = _labels_text(self.labels, lv, le_label)
                    lines.append(f"{self.name}_bucket{labels} {running}")
                lines.append(f"{self.name}_sum{_labels_text(self.labels, lv)} {total:g}")
                lines.append(f"{self.name}_count{_labels_text(self.labels, lv)} {count}")
        return lines


REQUEST_COUNT = Counter(
    ":tensorflow:serving:request_count",
    "The total number of requests.",
    ("model_name", "status"),
)
REQUEST_LATENCY = Histogram(
    ":tensorflow:serving:request_latency",
    "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
    ("model_name", "API", "entrypoint"),
    LATENCY_BUCKETS,
)
RUNTIME_LATENCY = Histogram(
    ":tensorflow:serving:runtime_latency",
    "Distribution of wall time (in microseconds) for Tensorflow runtime.",
    ("model_name", "API", "runtime"),
    LATENCY_BUCKETS,
)
REQUEST_EXAMPLE_COUNTS = Histogram(
    ":tensorflow:serving:request_example_counts",
    "The number of tensorflow.Examples per request.",
    ("model",),
    EXAMPLE_BUCKETS,
)
REQUEST_EXAMPLE_COUNT_TOTAL = Counter(
    ":tensorflow:serving:request_example_count_total",
    "The total number of tensorflow.Examples.",
    ("model",),
)
LOAD_ATTEMPT_COUNT = Counter(
    ":tensorflow:cc:saved_model:load_attempt_count",
    "The number of times a SavedModel was successfully loaded.",
    ("model_path", "status"),
)

# The batching session's metrics (batching_session.cc, batching_util.cc), labelled by model
# and signature where TF Serving labels them by batch thread pool.
BATCH_SIZE_BUCKETS = tuple(float(2**i) for i in range(16))
PROCESSED_BATCH_SIZE = Histogram(
    ":tensorflow:serving:batching_session:processed_batch_size",
    "Tracks the batch size distribution on processing (after padding).",
    ("model_name", "signature"),
    BATCH_SIZE_BUCKETS,
)
INPUT_BATCH_SIZE = Histogram(
    ":tensorflow:serving:batching_session:input_batch_size",
    "Tracks the batch size distribution on the inputs (the rows of each request).",
    ("model_name", "signature"),
    BATCH_SIZE_BUCKETS,
)
PADDING_SIZE = Histogram(
    ":tensorflow:serving:batching_session:padding_size",
    "Tracks the padding size distribution on batches (rows added to reach an allowed size).",
    ("model_name", "signature"),
    (0.0, *BATCH_SIZE_BUCKETS),
)
QUEUING_LATENCY = Histogram(
    ":tensorflow:serving:batching_session:queuing_latency",
    "Distribution of wall time spent (in microseconds) in queuing",
    ("model_name", "signature"),
    tuple(100 * 1.2**i for i in range(52)),  # Buckets::Exponential(100, 1.2, 52)
)
WRAPPED_RUN_COUNT = Counter(
    ":tensorflow:serving:batching_session:wrapped_run_count",
    "Total count of run calls on the wrapped session",
    ("model_name", "signature"),
)

ALL = (
    REQUEST_COUNT,
    REQUEST_LATENCY,
    RUNTIME_LATENCY,
    REQUEST_EXAMPLE_COUNTS,
    REQUEST_EXAMPLE_COUNT_TOTAL,
    LOAD_ATTEMPT_COUNT,
    PROCESSED_BATCH_SIZE,
    INPUT_BATCH_SIZE,
    PADDING_SIZE,
    QUEUING_LATENCY,
    WRAPPED_RUN_COUNT,
)


def record_request(model: str, api: str, entrypoint: str, code_name: str, seconds: float) -> None:
    """One finished request: its count by status, and its latency when it succeeded."""
    REQUEST_COUNT.inc(model, code_name)
    if code_name == "OK":
        REQUEST_LATENCY.observe(seconds * 1e6, model, api, entrypoint)


def record_examples(model: str, count: int) -> None:
    """The number of tf.Examples of one Classify, Regress or MultiInference request."""
    REQUEST_EXAMPLE_COUNTS.observe(count, model)
    REQUEST_EXAMPLE_COUNT_TOTAL.inc(model, amount=count)


def record_batch(labels: tuple[str, str], size: int, padding: int) -> None:
    """One batch about to run: its size after padding, the padding, one wrapped run."""
    PROCESSED_BATCH_SIZE.observe(size, *labels)
    PADDING_SIZE.observe(padding, *labels)
    WRAPPED_RUN_COUNT.inc(*labels)


def render() -> bytes:
    """The Prometheus text exposition of every metric."""
    lines = []
    for metric in ALL:
        lines.extend(metric.render())
    return ("\n".join(lines) + "\n").encode()
