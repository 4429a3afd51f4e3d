"""Serving benchmark: in-process vs gRPC vs REST latency, batching throughput, Flask baseline.

    .venv/bin/python -m benchmarks.serving [--model-base-path models/cifar_convnet] [--seconds 5]

Uses the `predict_pixels` signature (float32 pixels [N,32,32,3] -> probabilities) of a zoo
CIFAR-10 convnet export when --model-base-path is given, else builds the same untrained
architecture (classic Keras CIFAR-10 convnet) and saves it with tf.saved_model.save. Measures,
in one run: p50/p99 of batch-1 Predict in-process (the loaded signature called directly, and
the session callable the server itself uses), over gRPC and over REST; throughput with 32
concurrent clients with and without dynamic batching; and the hand-written baseline users
write (a Flask app calling `model.predict`). Prints one table.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from serving.layout import version_dirs  # noqa: E402
from tests.conftest import free_port  # noqa: E402 (one reservation of ports)

REPO = Path(__file__).resolve().parents[1]
SIGNATURE = "predict_pixels"


def build_model(base: Path) -> Path:
    """Save an untrained classic CIFAR-10 convnet as base/1 with a predict_pixels signature."""
    import keras
    import tensorflow as tf
    from keras import layers

    from training.export import track_keras_variables

    model = keras.Sequential(
        [
            keras.Input((32, 32, 3), name="pixels"),
            layers.Rescaling(1.0 / 255.0),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(0.25),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Dropout(0.25),
            layers.Flatten(),
            layers.Dense(512, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(10, activation="softmax"),
        ]
    )
    module = tf.Module()
    module.model = model
    track_keras_variables(module)  # as `zoo export` does, so a session can run it

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="pixels")])
    def predict_pixels(pixels):
        return {"probabilities": module.model(pixels, training=False)}

    path = base / "1"
    tf.saved_model.save(
        module, str(path), signatures={SIGNATURE: predict_pixels, "serving_default": predict_pixels}
    )
    return base


def session_callable(version: Path):
    """The signature as the server runs it: imported into a TF1 session, called through a
    C-level callable (None when the SavedModel does not restore into a session)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2

    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    try:
        with graph.as_default():
            meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(version))
        sig = meta.signature_def[SIGNATURE]
        options = config_pb2.CallableOptions(
            feed=[sig.inputs["pixels"].name], fetch=[sig.outputs["probabilities"].name]
        )
        call = session._make_callable_from_options(options)
        call(np.zeros((1, 32, 32, 3), np.float32))
        return call
    except Exception:  # e.g. a Keras 3 model saved without its variables tracked
        return None


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    a = np.array(samples) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def timed(fn, n: int, warm: int = 20) -> tuple[float, float]:
    for _ in range(warm):
        fn()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return percentiles(samples)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(make_call, clients: int, seconds: float, pid: int) -> tuple[float, float, int]:
    """(requests/second, server CPU ms per request, all requests made) with `clients` threads each calling its own
    make_call() in a loop against the server process `pid`. CPU per request is what the server
    spends on a request whatever share of the shared machine it gets, so it is the steadier
    measure of efficiency when other jobs load the machine."""
    stop = threading.Event()
    counts = [0] * clients
    errors: list[str] = []
    barrier = threading.Barrier(clients + 1)

    def run(i: int) -> None:
        call = make_call()
        call()  # connect + warm
        barrier.wait()
        while not stop.is_set():
            try:
                call()
                counts[i] += 1
            except Exception as e:  # counted as failures, reported
                errors.append(repr(e))

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start, cpu0, done0 = time.perf_counter(), cpu_seconds(pid), sum(counts)
    time.sleep(seconds)
    done, cpu = sum(counts) - done0, cpu_seconds(pid) - cpu0
    stop.set()
    elapsed = time.perf_counter() - start
    for t in threads:
        t.join(timeout=60)
    if errors:
        print(f"  {len(errors)} failed requests, e.g. {errors[0][:200]}", file=sys.stderr)
    # every request made, warm-up calls included: the window the caller counts batches over
    return done / elapsed, 1000.0 * cpu / max(done, 1), sum(counts) + clients


def async_throughput(
    kind: str,
    port: int | list[int],
    payload: bytes,
    clients: int,
    seconds: float,
    pid: int | list[int],
) -> tuple[float, float, int, list[float]]:
    """`throughput` with a cheap load generator: `clients` concurrent callers on one asyncio
        loop in this process (grpc.aio, one channel each; or raw HTTP/1.1 keep-alive
        connections), each calling in a loop. A thread-per-client Python client spends about as
        much CPU per request as the server, so the machine saturates before the server does; this
        one spends a fraction of it, which leaves the server the bottleneck, as it is in
        production. `payload` is a serialized PredictRequest (gRPC) or a JSON body (REST). Also
    returns every request made (warm-up included) and the latencies inside the window. With
    several ports (servers), client i calls ports[i % len(ports)] (a round-robin client), and
    the CPU counted is every process in `pid`'s."""
    import asyncio

    ports = port if isinstance(port, list) else [port]
    pids = pid if isinstance(pid, list) else [pid]

    def server_cpu() -> float:
        return sum(cpu_seconds(p) for p in pids)

    async def run() -> tuple[float, float, int, list[float]]:
        counts = [0] * clients
        latencies: list[float] = []
        window = asyncio.Event()  # set while the measurement runs
        stop = asyncio.Event()

        async def timed_call(call, *args) -> None:
            t = time.perf_counter()
            await call(*args)
            if window.is_set():
                latencies.append(time.perf_counter() - t)

        errors: list[str] = []

        async def grpc_client(i: int) -> None:
            import grpc
            from tensorflow_serving.apis import predict_pb2

            request = predict_pb2.PredictRequest.FromString(payload)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{ports[i % len(ports)]}") as channel:
                call = channel.unary_unary(
                    "/tensorflow.serving.PredictionService/Predict",
                    request_serializer=predict_pb2.PredictRequest.SerializeToString,
                    response_deserializer=bytes,  # the answer's bytes are enough here
                )
                await call(request, timeout=120)
                while not stop.is_set():
                    await timed_call(call, request)
                    counts[i] += 1

        async def http_client(i: int) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", ports[i % len(ports)])
            head = (
                b"POST /v1/models/cifar:predict HTTP/1.1\r\nHost: bench\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(payload)
            )
            message = head + payload

            async def call() -> None:
                writer.write(message)
                response = await reader.readuntil(b"\r\n\r\n")
                if not response.startswith(b"HTTP/1.1 200"):
                    errors.append(response[:100].decode(errors="replace"))
                length = int(response.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)

            await call()
            while not stop.is_set():
                await timed_call(call)
                counts[i] += 1
            writer.close()

        client = grpc_client if kind == "grpc" else http_client
        tasks = [asyncio.create_task(client(i)) for i in range(clients)]
        await asyncio.sleep(0.5)  # connected and warm
        window.set()
        start, cpu0, done0 = time.perf_counter(), server_cpu(), sum(counts)
        await asyncio.sleep(seconds)
        done, cpu = sum(counts) - done0, server_cpu() - cpu0
        elapsed = time.perf_counter() - start
        window.clear()
        stop.set()
        await asyncio.gather(*tasks)
        if errors:
            print(f"  {len(errors)} failed requests, e.g. {errors[0]}", file=sys.stderr)
        return done / elapsed, 1000.0 * cpu / max(done, 1), sum(counts) + clients, latencies

    return asyncio.run(run())


def start(cmd: list[str], ready: str, timeout: float = 300) -> subprocess.Popen:
    """Start `cmd` in the repository and wait for `ready` in its output."""
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return wait_ready(proc, ready, timeout)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def http_caller(port: int, path: str, body: bytes):
    def make():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

        def call():
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")

        return call

    return make


def predict_request(pixels: np.ndarray):
    """The PredictRequest every gRPC client sends."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "cifar"
    request.model_spec.signature_name = SIGNATURE
    request.inputs["pixels"].CopyFrom(tf.make_tensor_proto(pixels))
    return request


def grpc_caller(port: int, pixels: np.ndarray):
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    request = predict_request(pixels)

    def make():
        stub = prediction_service_pb2_grpc.PredictionServiceStub(
            grpc.insecure_channel(f"127.0.0.1:{port}")
        )
        return lambda: stub.Predict(request, timeout=120)

    return make


FLASK_APP = textwrap.dedent(
    '''
    """The server users write by hand: Flask + keras model.predict."""
    import os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras, numpy as np
    from flask import Flask, jsonify, request

    model = keras.Sequential([keras.layers.TFSMLayer(sys.argv[1], call_endpoint="predict_pixels")])
    app = Flask(__name__)

    @app.post("/predict")
    def predict():
        pixels = np.array(request.get_json()["instances"], dtype="float32")
        out = model.predict(pixels, verbose=0)
        return jsonify({"predictions": out["probabilities"].tolist()})

    print("FLASK READY", flush=True)
    app.run(host="127.0.0.1", port=int(sys.argv[2]), threaded=True)
    '''
)


BATCHING = (
    "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 0 }\n"
    "max_enqueued_batches { value: 100 }\nnum_batch_threads { value: 2 }\n"
)
MONITORING = 'prometheus_config { enable: true, path: "/metrics" }\n'


def baseline_tree(rev: str, tmp: Path) -> Path:
    """A checkout of `rev` (a git worktree, removed at exit by the caller) to run the old
    server from, with this repository's virtual environment."""
    tree = tmp / f"baseline-{rev[:12]}"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(tree), rev],
        cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    return tree


def batches_run(port: int) -> float:
    """How many batches the server has run (processed_batch_size's count, every signature)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(":tensorflow:serving:batching_session:processed_batch_size_count")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-base-path", help="a zoo export (base path with int versions)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput measurement")
    parser.add_argument("--requests", type=int, default=300, help="per latency measurement")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument(
        "--baseline", metavar="REV",
        help="also run the server of this git revision, side by side (before / after)",
    )  # fmt: skip
    parser.add_argument(
        "--batching-file", help="BatchingParameters for the batched servers (default: "
        "max 32, timeout 0, 2 threads)",
    )  # fmt: skip
    parser.add_argument("--no-flask", action="store_true", help="leave out the Flask baseline")
    parser.add_argument(
        "--client", choices=("async", "threads"), default="async",
        help="load generator: asyncio callers (cheap) or a thread per client (as before)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    import tensorflow as tf

    tmp = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    base = (
        Path(args.model_base_path).resolve() if args.model_base_path else build_model(tmp / "cifar")
    )
    version = version_dirs(base)[-1][1]
    pixels = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    body = orjson.dumps({"signature_name": SIGNATURE, "instances": pixels.tolist()})
    flask_body = orjson.dumps({"instances": pixels.tolist()})
    grpc_payload = predict_request(pixels).SerializeToString()

    fn = tf.saved_model.load(str(version)).signatures[SIGNATURE]
    tensor = tf.constant(pixels)
    session_call = session_callable(version)

    batching = tmp / "batching.txt"
    batching.write_text(Path(args.batching_file).read_text() if args.batching_file else BATCHING)
    monitoring = tmp / "monitoring.txt"
    monitoring.write_text(MONITORING)
    app = tmp / "flask_app.py"
    app.write_text(FLASK_APP)
    trees = {"new": REPO}
    if args.baseline:
        trees["old"] = baseline_tree(args.baseline, tmp)
    procs = []
    pids: dict[str, int] = {}
    ports: dict[str, int] = {}
    results: dict[str, object] = {}
    try:
        # every server runs side by side (idle unless measured), and measurements are
        # interleaved, so a change in the shared machine's load hits every row alike
        for tree_name, tree in trees.items():
            for tag in ("u", "b"):
                grpc_port, rest_port = free_port(), free_port()
                cmd = [sys.executable, "-m", "serving", f"--port={grpc_port}",
                       f"--rest_api_port={rest_port}", "--model_name=cifar",
                       f"--model_base_path={base}", f"--monitoring_config_file={monitoring}"]  # fmt: skip
                if tag == "b":
                    cmd += ["--enable_batching", f"--batching_parameters_file={batching}"]
                proc = subprocess.Popen(
                    cmd, cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
                )
                procs.append(wait_ready(proc, "Exporting HTTP/REST API"))
                for proto, port in (("grpc", grpc_port), ("rest", rest_port)):
                    key = f"{tree_name}_{proto}_{tag}"
                    ports[key], pids[key] = port, proc.pid
                ports[f"{tree_name}_metrics_{tag}"] = rest_port
        if not args.no_flask:
            ports["flask"] = free_port()
            procs.append(
                start([sys.executable, str(app), str(version), str(ports["flask"])], "FLASK READY")
            )
            pids["flask"] = procs[-1].pid
            time.sleep(2.0)  # werkzeug binds just after the ready line

        callers = {}
        for key, port in ports.items():
            if "_grpc_" in key:
                callers[key] = grpc_caller(port, pixels)
            elif "_rest_" in key:
                callers[key] = http_caller(port, "/v1/models/cifar:predict", body)
        if not args.no_flask:
            callers["flask"] = http_caller(ports["flask"], "/predict", flask_body)
        one = {"inproc": lambda: fn(pixels=tensor)}
        if session_call is not None:
            one["session"] = lambda: session_call(pixels)
        for tree_name in trees:
            for proto in ("grpc", "rest"):
                one[f"{tree_name}_{proto}_u"] = callers[f"{tree_name}_{proto}_u"]()
        samples: dict[str, list[float]] = {k: [] for k in one}
        for i in range(args.requests + 20):
            for k, call in one.items():
                t = time.perf_counter()
                call()
                if i >= 20:
                    samples[k].append(time.perf_counter() - t)
        for k, v in samples.items():
            results[k + "_lat"] = percentiles(v)
        batch32 = tf.constant(np.repeat(pixels, 32, axis=0))
        results["inproc32"] = timed(lambda: fn(pixels=batch32), 30, warm=3)
        for size, x in ((1, tensor), (32, batch32)):
            calls = 640 // size
            cpu0 = cpu_seconds(os.getpid())
            for _ in range(calls):
                fn(pixels=x)
            results[f"inproc{size}_cpu"] = 1000 * (cpu_seconds(os.getpid()) - cpu0) / 640
        if not args.no_flask:
            results["flask_lat"] = timed(callers["flask"](), max(20, args.requests // 10), warm=3)

        rates: dict[str, list[tuple[float, float, float]]] = {k: [] for k in callers}
        for _ in range(2):
            for k, make in callers.items():
                metrics_port = ports.get(k.rsplit("_", 2)[0] + "_metrics_b")
                batched = k.endswith("_b")
                before = batches_run(metrics_port) if batched else 0.0
                if args.client == "async" and k != "flask":
                    kind = "grpc" if "_grpc_" in k else "rest"
                    payload = grpc_payload if kind == "grpc" else body
                    rate, cpu, done, _ = async_throughput(
                        kind, ports[k], payload, args.clients, args.seconds / 2, pids[k]
                    )
                else:
                    rate, cpu, done = throughput(make, args.clients, args.seconds / 2, pids[k])
                mean = done / max(batches_run(metrics_port) - before, 1) if batched else 1.0
                rates[k].append((rate, cpu, mean))
        for k, v in rates.items():
            results[k] = float(np.mean([r for r, _, _ in v]))
            results[k + "_cpu"] = float(np.mean([c for _, c, _ in v]))
            results[k + "_mean_batch"] = float(np.mean([m for _, _, m in v]))
    finally:
        for proc in procs:
            stop(proc)
        if "old" in trees:
            subprocess.run(["git", "worktree", "remove", "--force", str(trees["old"])],
                           cwd=REPO, capture_output=True)  # fmt: skip

    report(results, trees, args)
    return 0


def wait_ready(proc: subprocess.Popen, ready: str, timeout: float = 300) -> subprocess.Popen:
    """Wait for `ready` in the process's output (then keep draining it)."""
    deadline = time.monotonic() + timeout
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if ready in line:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise RuntimeError("process did not start:\n" + "".join(lines[-30:]))


def report(results: dict, trees: dict, args) -> None:
    """Print the table."""
    rows: list[tuple[str, str, str]] = []
    inproc = results["inproc_lat"]
    rows.append(("batch-1 in-process signature call", f"{inproc[0]:.2f} / {inproc[1]:.2f}", "-"))
    floor = inproc
    if "session_lat" in results:
        floor = sess = results["session_lat"]
        rows.append((
            "batch-1 in-process session callable",
            f"{sess[0]:.2f} / {sess[1]:.2f}",
            "how the server runs it (TF Serving's way)",
        ))  # fmt: skip
    b32 = results["inproc32"][0] / 32
    limit = 1000.0 / b32
    rows.append((
        "in-process batch-32, per image",
        f"{b32:.2f}",
        f"{limit:.0f} images/s: the model's own limit; batch-1 p50 / this = "
        f"{inproc[0] / b32:.1f}x",
    ))  # fmt: skip
    c1, c32 = results["inproc1_cpu"], results["inproc32_cpu"]
    rows.append((
        "in-process CPU ms per image, batch 1 / 32",
        f"{c1:.2f} / {c32:.2f}",
        f"{c1 / c32:.1f}x (the model's own batching gain in CPU)",
    ))  # fmt: skip
    c = args.clients
    for tree in trees:
        label = f"[{tree}] " if len(trees) > 1 else ""
        for proto, name in (("grpc", "gRPC"), ("rest", "REST")):
            lat = results[f"{tree}_{proto}_u_lat"]
            rows.append((
                f"{label}batch-1 Predict over {name}",
                f"{lat[0]:.2f} / {lat[1]:.2f}",
                f"p50 +{lat[0] - floor[0]:.2f} ms over the session callable",
            ))  # fmt: skip
        for proto, name in (("grpc", "gRPC"), ("rest", "REST")):
            u, b = results[f"{tree}_{proto}_u"], results[f"{tree}_{proto}_b"]
            ucpu, bcpu = results[f"{tree}_{proto}_u_cpu"], results[f"{tree}_{proto}_b_cpu"]
            rows.append((f"{label}{c} clients {name}, no batching", f"{u:.0f} req/s",
                         f"server {ucpu:.2f} CPU ms/req"))  # fmt: skip
            rows.append((
                f"{label}{c} clients {name}, batching",
                f"{b:.0f} req/s",
                f"{b / limit:.0%} of the model's limit, {b / u:.1f}x unbatched; server "
                f"{bcpu:.2f} CPU ms/req; mean batch "
                f"{results[f'{tree}_{proto}_b_mean_batch']:.1f}",
            ))  # fmt: skip
    if "old" in trees:
        for proto, name in (("grpc", "gRPC"), ("rest", "REST")):
            old, new = results[f"old_{proto}_b_cpu"], results[f"new_{proto}_b_cpu"]
            rows.append((
                f"new / old, {name} batched",
                f"{results[f'new_{proto}_b'] / results[f'old_{proto}_b']:.2f}x req/s",
                f"CPU per request {new:.2f} vs {old:.2f} ms ({old / new:.2f}x less)",
            ))  # fmt: skip
    if "flask_lat" in results:
        f = results["flask_lat"]
        r = results["new_rest_u_lat"]
        rows.append(("batch-1 Flask + model.predict", f"{f[0]:.2f} / {f[1]:.2f}",
                     f"p50 {f[0] / r[0]:.1f}x our REST"))  # fmt: skip
        fl = results["flask"]
        rows.append((f"{c} clients Flask + model.predict", f"{fl:.0f} req/s",
                     f"REST batched {results['new_rest_b'] / fl:.1f}x Flask"))  # fmt: skip

    load = os.getloadavg()
    print(f"\nServing benchmark: signature {SIGNATURE}, {os.cpu_count()} CPUs; "
          + ", ".join(f"{k} = {v}" for k, v in trees.items()))  # fmt: skip
    print(f"throughput clients: {args.clients}, {args.client} load generator")
    print(f"load average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min)")
    width = max(len(x[0]) for x in rows)
    print(f"{'measurement':<{width}}  {'p50 / p99 ms or rate':<22}  ratio")
    for name, value, ratio in rows:
        print(f"{name:<{width}}  {value:<22}  {ratio}")


if __name__ == "__main__":
    sys.exit(main())
