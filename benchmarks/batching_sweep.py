"""Batching parameters on a CPU server, by measurement: one server per setting, 32 clients.

    .venv/bin/python -m benchmarks.batching_sweep --model-base-path models/cifar_convnet

For each BatchingParameters setting (batch timeout, batch threads, allowed batch sizes), a
batched `zoo serve` of the CIFAR convnet's `predict_pixels` gets --clients concurrent gRPC
clients, then REST clients (the asyncio load generator of benchmarks/serving.py), each
sending one image per request. Printed per setting: req/s,
server CPU ms per request, mean batch (requests per batch run) and p50 / p99 latency under
load. Settings are measured in turn, twice, interleaved, so that a change in the shared
machine's load hits every row alike; the table shows the mean of the two passes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import orjson

from benchmarks.serving import (
    MONITORING,
    REPO,
    SIGNATURE,
    async_throughput,
    batches_run,
    free_port,
    predict_request,
    stop,
    wait_ready,
)

#: name -> (batch_timeout_micros, num_batch_threads, allowed_batch_sizes, extra server flags)
SETTINGS = {
    "timeout 0, 2 threads": (0, 2, (), ()),
    "timeout 0, 1 thread": (0, 1, (), ()),
    "timeout 2 ms, 1 thread": (2000, 1, (), ()),
    "timeout 5 ms, 1 thread": (5000, 1, (), ()),
    "timeout 10 ms, 1 thread": (10000, 1, (), ()),
    "timeout 20 ms, 1 thread": (20000, 1, (), ()),
    "timeout 10 ms, 1 thread, sizes 8/16/32": (10000, 1, (8, 16, 32), ()),
    "timeout 10 ms, 1 thread, 1 intra-op thread": (
        10000, 1, (), ("--tensorflow_intra_op_parallelism=1",),
    ),
}  # fmt: skip


def parameters(timeout_us: int, threads: int, sizes: tuple[int, ...]) -> str:
    """A BatchingParameters text for max batch 32."""
    text = (
        f"max_batch_size {{ value: 32 }}\nbatch_timeout_micros {{ value: {timeout_us} }}\n"
        f"max_enqueued_batches {{ value: 100 }}\nnum_batch_threads {{ value: {threads} }}\n"
    )
    return text + "".join(f"allowed_batch_sizes: {s}\n" for s in sizes)


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
    request = predict_request(pixels).SerializeToString()
    servers: dict[str, tuple] = {}
    try:
        for i, (name, setting) in enumerate(SETTINGS.items()):
            path = tmp / f"batching{i}.txt"
            path.write_text(parameters(*setting[:3]))
            grpc_port, rest_port = free_port(), free_port()
            cmd = [sys.executable, "-m", "serving", f"--port={grpc_port}",
                   f"--rest_api_port={rest_port}", "--model_name=cifar",
                   f"--model_base_path={Path(args.model_base_path).resolve()}",
                   f"--monitoring_config_file={tmp / 'monitoring.txt'}", "--enable_batching",
                   f"--batching_parameters_file={path}", *setting[3]]  # fmt: skip
            proc = subprocess.Popen(
                cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            wait_ready(proc, "Exporting HTTP/REST API")
            servers[name] = (proc, grpc_port, rest_port)
        results: dict[tuple[str, str], list] = {}
        for _ in range(2):
            for name, (proc, grpc_port, rest_port) in servers.items():
                for proto, kind, port, payload in (
                    ("gRPC", "grpc", grpc_port, request),
                    ("REST", "rest", rest_port, body),
                ):
                    before = batches_run(rest_port)
                    rate, cpu, made, lat = async_throughput(
                        kind, port, payload, args.clients, args.seconds, proc.pid
                    )
                    mean = made / max(batches_run(rest_port) - before, 1)
                    results.setdefault((name, proto), []).append((rate, cpu, mean, lat))
    finally:
        for proc, *_ in servers.values():
            stop(proc)

    print(f"\nBatching sweep: {args.clients} clients, one image per request, max batch 32")
    head = f"{'setting':<44} {'protocol':<8} {'req/s':>7} {'CPU ms/req':>10} {'mean batch':>10} {'p50 / p99 ms':>14}"
    print(head)
    for (name, proto), runs in results.items():
        lat = np.array([x for r in runs for x in r[3]]) * 1000
        p50, p99 = (np.percentile(lat, q) for q in (50, 99)) if lat.size else (0.0, 0.0)
        rate, cpu, mean = (float(np.mean([r[k] for r in runs])) for k in range(3))
        print(
            f"{name:<44} {proto:<8} {rate:>7.0f} {cpu:>10.2f} {mean:>10.1f} "
            f"{p50:>6.1f} / {p99:<6.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
