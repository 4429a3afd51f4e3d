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

REPO = Path(__file__).resolve().parents[1]
SIGNATURE = "predict_pixels"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def throughput(make_call, clients: int, seconds: float, pid: int) -> tuple[float, float]:
    """(requests/second, server CPU ms per request) with `clients` threads each calling its own
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
    return done / elapsed, 1000.0 * cpu / max(done, 1)


def start(cmd: list[str], ready: str, timeout: float = 300) -> subprocess.Popen:
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
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


def grpc_caller(port: int, pixels: np.ndarray):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "cifar"
    request.model_spec.signature_name = SIGNATURE
    request.inputs["pixels"].CopyFrom(tf.make_tensor_proto(pixels))

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-base-path", help="a zoo export (base path with int versions)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput measurement")
    parser.add_argument("--requests", type=int, default=300, help="per latency measurement")
    parser.add_argument("--clients", type=int, default=32)
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
    rows: list[tuple[str, str, str]] = []

    fn = tf.saved_model.load(str(version)).signatures[SIGNATURE]
    tensor = tf.constant(pixels)
    session_call = session_callable(version)

    batching = tmp / "batching.txt"
    batching.write_text(
        "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 0 }\n"
        "max_enqueued_batches { value: 100 }\nnum_batch_threads { value: 2 }\n"
    )
    app = tmp / "flask_app.py"
    app.write_text(FLASK_APP)
    ports = {k: free_port() for k in ("grpc_u", "rest_u", "grpc_b", "rest_b", "flask")}
    procs = []
    pids: dict[str, int] = {}
    results: dict[str, object] = {}
    try:
        # all three servers run side by side (idle unless measured), and measurements are
        # interleaved, so a change in the shared machine's load hits every row alike
        for tag in ("u", "b"):
            cmd = [sys.executable, "-m", "serving", f"--port={ports['grpc_' + tag]}",
                   f"--rest_api_port={ports['rest_' + tag]}", "--model_name=cifar",
                   f"--model_base_path={base}"]  # fmt: skip
            if tag == "b":
                cmd += ["--enable_batching", f"--batching_parameters_file={batching}"]
            procs.append(start(cmd, "Exporting HTTP/REST API"))
            pids["grpc_" + tag] = pids["rest_" + tag] = procs[-1].pid
        procs.append(
            start([sys.executable, str(app), str(version), str(ports["flask"])], "FLASK READY")
        )
        pids["flask"] = procs[-1].pid
        time.sleep(2.0)  # werkzeug binds just after the ready line

        callers = {
            "grpc_u": grpc_caller(ports["grpc_u"], pixels),
            "grpc_b": grpc_caller(ports["grpc_b"], pixels),
            "rest_u": http_caller(ports["rest_u"], "/v1/models/cifar:predict", body),
            "rest_b": http_caller(ports["rest_b"], "/v1/models/cifar:predict", body),
            "flask": http_caller(ports["flask"], "/predict", flask_body),
        }
        one = {"inproc": lambda: fn(pixels=tensor)}
        if session_call is not None:
            one["session"] = lambda: session_call(pixels)
        one.update({k: callers[k]() for k in ("grpc_u", "rest_u")})
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
        results["flask_lat"] = timed(callers["flask"](), max(20, args.requests // 10), warm=3)

        rates: dict[str, list[tuple[float, float]]] = {k: [] for k in callers}
        for _ in range(2):
            for k, make in callers.items():
                rates[k].append(throughput(make, args.clients, args.seconds / 2, pids[k]))
        for k, v in rates.items():
            results[k] = float(np.mean([r for r, _ in v]))
            results[k + "_cpu"] = float(np.mean([c for _, c in v]))
    finally:
        for proc in procs:
            stop(proc)

    inproc = results["inproc_lat"]
    rows.append(("batch-1 in-process signature call", f"{inproc[0]:.2f} / {inproc[1]:.2f}", "-"))
    if "session_lat" in results:
        sess = results["session_lat"]
        rows.append((
            "batch-1 in-process session callable",
            f"{sess[0]:.2f} / {sess[1]:.2f}",
            "how the server runs it (TF Serving's way); gRPC p50 "
            f"+{results['grpc_u_lat'][0] - sess[0]:.2f} ms, REST "
            f"+{results['rest_u_lat'][0] - sess[0]:.2f} ms over this",
        ))  # fmt: skip
    b32 = results["inproc32"][0] / 32
    rows.append((
        "in-process batch-32, per image",
        f"{b32:.2f}",
        f"batch-1 p50 / this = {inproc[0] / b32:.1f}x (upper bound of any batching gain)",
    ))  # fmt: skip
    results["grpc_lat"], results["rest_lat"] = results["grpc_u_lat"], results["rest_u_lat"]
    results["grpc_unbatched"], results["grpc_batched"] = results["grpc_u"], results["grpc_b"]
    results["rest_unbatched"], results["rest_batched"] = results["rest_u"], results["rest_b"]

    g, r, f = results["grpc_lat"], results["rest_lat"], results["flask_lat"]
    rows.append(
        (
            "batch-1 Predict over gRPC",
            f"{g[0]:.2f} / {g[1]:.2f}",
            f"p50 +{g[0] - inproc[0]:.2f} ms vs in-process (target <= +1)",
        )
    )
    rows.append(
        (
            "batch-1 Predict over REST",
            f"{r[0]:.2f} / {r[1]:.2f}",
            f"p50 +{r[0] - inproc[0]:.2f} ms vs in-process (target <= +2)",
        )
    )
    rows.append(
        (
            "batch-1 Flask + model.predict",
            f"{f[0]:.2f} / {f[1]:.2f}",
            f"p50 {f[0] / r[0]:.1f}x our REST",
        )
    )
    c = args.clients
    gu, gb, ru, rb, fl = (
        results[k]
        for k in ("grpc_unbatched", "grpc_batched", "rest_unbatched", "rest_batched", "flask")
    )
    c1, c32 = results["inproc1_cpu"], results["inproc32_cpu"]
    rows.append((
        "in-process CPU ms per image, batch 1 / 32",
        f"{c1:.2f} / {c32:.2f}",
        f"{c1 / c32:.1f}x (the model's own batching gain in CPU)",
    ))  # fmt: skip

    def cpu(k: str) -> str:
        return f"server {results[k + '_cpu']:.2f} CPU ms/req"

    rows.append((f"{c} clients gRPC, no batching", f"{gu:.0f} req/s", cpu("grpc_u")))
    rows.append((
        f"{c} clients gRPC, batching",
        f"{gb:.0f} req/s",
        f"{gb / gu:.1f}x unbatched (target >= 3); {cpu('grpc_b')}, "
        f"{results['grpc_u_cpu'] / results['grpc_b_cpu']:.1f}x less than unbatched",
    ))  # fmt: skip
    rows.append((f"{c} clients REST, no batching", f"{ru:.0f} req/s", cpu("rest_u")))
    rows.append((
        f"{c} clients REST, batching",
        f"{rb:.0f} req/s",
        f"{rb / ru:.1f}x unbatched; {cpu('rest_b')}",
    ))  # fmt: skip
    rows.append((f"{c} clients Flask + model.predict", f"{fl:.0f} req/s", f"REST batched {rb / fl:.1f}x, gRPC batched {gb / fl:.1f}x Flask (target >= 10)"))  # fmt: skip

    load = os.getloadavg()
    print(f"\nServing benchmark: {version} signature {SIGNATURE}, {os.cpu_count()} CPUs")
    print(f"load average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min)")
    width = max(len(x[0]) for x in rows)
    print(f"{'measurement':<{width}}  {'p50 / p99 ms or rate':<22}  ratio")
    for name, value, ratio in rows:
        print(f"{name:<{width}}  {value:<22}  {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
