"""Batching parameters on a CPU server, by measurement: one server per setting, 32 clients.

    .venv/bin/python -m benchmarks.batching_sweep --model-base-path models/cifar_convnet

For each BatchingParameters setting (batch timeout, batch threads, allowed batch sizes), a
batched `zoo serve` of the CIFAR convnet's `predict_pixels` gets --clients concurrent gRPC
clients, then REST clients, each sending one image per request. Printed per setting: req/s,
server CPU ms per request, mean batch (requests per batch run) and p50 / p99 latency under
load. Settings are measured in turn, twice, interleaved, so that a change in the shared
machine's load hits every row alike; the table shows the mean of the two passes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import orjson

from benchmarks.serving import (
    MONITORING,
    REPO,
    SIGNATURE,
    batches_run,
    cpu_seconds,
    free_port,
    grpc_caller,
    http_caller,
    stop,
    wait_ready,
)

SETTINGS = {
    "timeout 0, 2 threads": (0, 2, ()),
    "timeout 0, 1 thread": (0, 1, ()),
    "timeout 1 ms, 1 thread": (1000, 1, ()),
    "timeout 2 ms, 2 threads": (2000, 2, ()),
    "timeout 0, 2 threads, sizes 8/16/32": (0, 2, (8, 16, 32)),
    "timeout 1 ms, 1 thread, sizes 8/16/32": (1000, 1, (8, 16, 32)),
}


def parameters(timeout_us: int, threads: int, sizes: tuple[int, ...]) -> str:
    """A BatchingParameters text for max batch 32."""
    text = (
        f"max_batch_size {{ value: 32 }}\nbatch_timeout_micros {{ value: {timeout_us} }}\n"
        f"max_enqueued_batches {{ value: 100 }}\nnum_batch_threads {{ value: {threads} }}\n"
    )
    return text + "".join(f"allowed_batch_sizes: {s}\n" for s in sizes)


def load(make_call, clients: int, seconds: float, pid: int) -> tuple[float, float, int, list]:
    """(req/s, server CPU ms/req, requests made in all, latencies in the window)."""
    stop_event = threading.Event()
    counts = [0] * clients
    latencies: list[float] = []
    measuring = threading.Event()
    barrier = threading.Barrier(clients + 1)

    def run(i: int) -> None:
        call = make_call()
        call()
        barrier.wait()
        while not stop_event.is_set():
            t = time.perf_counter()
            call()
            counts[i] += 1
            if measuring.is_set():
                latencies.append(time.perf_counter() - t)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    measuring.set()
    start, cpu0, done0 = time.perf_counter(), cpu_seconds(pid), sum(counts)
    time.sleep(seconds)
    done, cpu = sum(counts) - done0, cpu_seconds(pid) - cpu0
    elapsed = time.perf_counter() - start
    measuring.clear()
    stop_event.set()
    for t in threads:
        t.join(timeout=60)
    return done / elapsed, 1000 * cpu / max(done, 1), sum(counts) + clients, latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-base-path", required=True)
    parser.add_argument("--seconds", type=float, default=6.0, help="per measurement")
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="batching-sweep-"))
    (tmp / "monitoring.txt").write_text(MONITORING)
    pixels = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    body = orjson.dumps({"signature_name": SIGNATURE, "instances": pixels.tolist()})
    servers: dict[str, tuple] = {}
    try:
        for i, (name, setting) in enumerate(SETTINGS.items()):
            path = tmp / f"batching{i}.txt"
            path.write_text(parameters(*setting))
            grpc_port, rest_port = free_port(), free_port()
            cmd = [sys.executable, "-m", "serving", f"--port={grpc_port}",
                   f"--rest_api_port={rest_port}", "--model_name=cifar",
                   f"--model_base_path={Path(args.model_base_path).resolve()}",
                   f"--monitoring_config_file={tmp / 'monitoring.txt'}", "--enable_batching",
                   f"--batching_parameters_file={path}"]  # fmt: skip
            proc = subprocess.Popen(
                cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            wait_ready(proc, "Exporting HTTP/REST API")
            servers[name] = (proc, grpc_port, rest_port)
        results: dict[tuple[str, str], list] = {}
        for _ in range(2):
            for name, (proc, grpc_port, rest_port) in servers.items():
                for proto, make in (
                    ("gRPC", grpc_caller(grpc_port, pixels)),
                    ("REST", http_caller(rest_port, "/v1/models/cifar:predict", body)),
                ):
                    before = batches_run(rest_port)
                    rate, cpu, made, lat = load(make, args.clients, args.seconds, proc.pid)
                    mean = made / max(batches_run(rest_port) - before, 1)
                    results.setdefault((name, proto), []).append((rate, cpu, mean, lat))
    finally:
        for proc, *_ in servers.values():
            stop(proc)

    print(f"\nBatching sweep: {args.clients} clients, one image per request, max batch 32")
    head = f"{'setting':<40} {'protocol':<8} {'req/s':>7} {'CPU ms/req':>10} {'mean batch':>10} {'p50 / p99 ms':>14}"
    print(head)
    for (name, proto), runs in results.items():
        lat = np.array([x for r in runs for x in r[3]]) * 1000
        p50, p99 = (np.percentile(lat, q) for q in (50, 99)) if lat.size else (0.0, 0.0)
        rate, cpu, mean = (float(np.mean([r[k] for r in runs])) for k in range(3))
        print(
            f"{name:<40} {proto:<8} {rate:>7.0f} {cpu:>10.2f} {mean:>10.1f} "
            f"{p50:>6.1f} / {p99:<6.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
