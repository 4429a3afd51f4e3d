"""`zoo serve` side by side with the Python model servers people use, on one SavedModel.

    .venv/bin/pip install -e '.[peers]'        # FastAPI + uvicorn, BentoML, KServe
    .venv/bin/python -m benchmarks.serving_peers [--model-base-path models/cifar_convnet]

Every server serves the same CIFAR convnet SavedModel (`predict_pixels`: float32 pixels
[N,32,32,3] -> probabilities; a zoo export when --model-base-path is given, else the same
untrained architecture saved as `zoo export` saves it), with the same request body:
- `zoo serve`, without and with its batching (max 32, 2 threads: TF Serving's CPU advice;
  batch timeout 0 and 2 ms), over REST and gRPC (TF Serving's API, and the Open Inference
  Protocol's);
- the strong hand-written baseline: FastAPI on uvicorn (httptools + uvloop), orjson, the
  SavedModel signature called in the thread pool (not `model.predict`);
- BentoML, without and with its adaptive batching (max 32);
- KServe's Python ModelServer (V1 REST; V2 gRPC), predict offloaded to its thread pool;
- floors: do-nothing servers on the same stacks (a gRPC PredictionService whose Predict returns
  an empty response, the standard library HTTP server `zoo serve` uses, and a bare ASGI app on
  uvicorn + httptools), which is what a Python front end cannot go below, and the data behind
  the choice of REST transport.

Measured in one run, interleaved so that the shared machine's load hits every row alike:
batch-1 p50/p99 latency (sequential requests), throughput with --clients concurrent clients
(client processes, so the client's GIL is not the limit), and server CPU ms per request
(utime+stime of the server's whole process tree, from /proc). Peers whose package is missing are
skipped. Prints one table.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

from tests.conftest import free_port  # one reservation of ports

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SIGNATURE = "predict_pixels"

FASTAPI_APP = """
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np, orjson, tensorflow as tf, uvicorn
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

fn = tf.saved_model.load(sys.argv[1]).signatures["predict_pixels"]
app = FastAPI()

def run(x):
    return fn(pixels=tf.constant(x))["probabilities"].numpy()

@app.post("/v1/models/cifar:predict")
async def predict(request: Request):
    x = np.asarray(orjson.loads(await request.body())["instances"], np.float32)
    out = await run_in_threadpool(run, x)
    return Response(orjson.dumps({"predictions": out.tolist()}), media_type="application/json")

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
            http="httptools", loop="uvloop")
"""

BENTO_SERVICE = """
import os
import bentoml
import numpy as np

BATCH = os.environ["BENTO_BATCH"] == "1"

@bentoml.service(workers=1, traffic={"timeout": 120})
class Cifar:
    def __init__(self):
        import tensorflow as tf
        self.tf = tf
        self.fn = tf.saved_model.load(os.environ["CIFAR_VERSION"]).signatures["predict_pixels"]

    @bentoml.api(batchable=BATCH, max_batch_size=32, max_latency_ms=1000)
    def predict(self, instances: np.ndarray) -> np.ndarray:
        x = self.tf.constant(np.asarray(instances, np.float32))
        return self.fn(pixels=x)["probabilities"].numpy()
"""

KSERVE_APP = """
import asyncio, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np, tensorflow as tf
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

class Cifar(Model):
    def __init__(self):
        super().__init__("cifar")
        self.fn = tf.saved_model.load(sys.argv[1]).signatures["predict_pixels"]
        self.ready = True

    async def predict(self, payload, headers=None, response_headers=None):
        # a sync predict would run on the event loop, one request at a time
        return await asyncio.get_running_loop().run_in_executor(None, self.run, payload)

    def run(self, payload):
        if isinstance(payload, InferRequest):
            x = payload.inputs[0].as_numpy().astype(np.float32)
            out = self.fn(pixels=tf.constant(x))["probabilities"].numpy()
            result = InferOutput(name="probabilities", shape=list(out.shape), datatype="FP32")
            result.set_data_from_numpy(out, binary_data=False)
            return InferResponse(model_name=self.name, infer_outputs=[result],
                                 response_id=payload.id)
        x = np.asarray(payload["instances"], np.float32)
        return {"predictions": self.fn(pixels=tf.constant(x))["probabilities"].numpy().tolist()}

ModelServer(http_port=int(sys.argv[2]), grpc_port=int(sys.argv[3]), workers=1,
            enable_latency_logging=False).start([Cifar()])
"""

NOOP_SERVERS = """
import sys
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

BODY = b'{"predictions": [[0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]]}'

class Noop(prediction_service_pb2_grpc.PredictionServiceServicer):
    def Predict(self, request, context):
        return predict_pb2.PredictResponse()

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.wfile.write(b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\n"
                         b"Content-Length: %d\\r\\n\\r\\n%s" % (len(BODY), BODY))

class Server(ThreadingHTTPServer):
    daemon_threads = True

server = grpc.server(futures.ThreadPoolExecutor(64))
prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Noop(), server)
server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
server.start()
Server(("127.0.0.1", int(sys.argv[2])), Handler).serve_forever()
"""

NOOP_ASGI = """
import sys
import uvicorn

BODY = b'{"predictions": [[0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]]}'

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": BODY})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            http="httptools", loop="uvloop")
"""


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"port {port} did not open")


def tree_cpu(pid: int) -> float:
    """utime + stime (seconds) of a process and all its descendants, from /proc."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += times.get(p, 0.0)
        todo.extend(c for c, parent in parents.items() if parent == p)
    return total


# ---- clients: built from a plain description, so client processes can rebuild them ----------
# (kind, port, path, body): kind "http" posts the JSON body to the path; kind "grpc" calls the
# method at `path` with `body`, a request serialized beforehand, so no client imports TensorFlow
def grpc_request(kind: str, pixels: np.ndarray) -> tuple[str, bytes]:
    """(method path, serialized request) of a batch-1 Predict (TF Serving API) or ModelInfer
    (Open Inference Protocol)."""
    if kind == "tfs":
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = "cifar"
        request.model_spec.signature_name = SIGNATURE
        request.inputs["pixels"].CopyFrom(tf.make_tensor_proto(pixels))
        return "/tensorflow.serving.PredictionService/Predict", request.SerializeToString()
    from serving import v2_protos

    request = v2_protos.ModelInferRequest(model_name="cifar")
    # a zoo export's serving_default takes image_bytes; name the pixels signature
    request.parameters["signature_name"].string_param = SIGNATURE
    request.inputs.add(name="pixels", datatype="FP32", shape=list(pixels.shape))
    request.raw_input_contents.append(pixels.tobytes())
    return f"/{v2_protos.SERVICE}/ModelInfer", request.SerializeToString()


def make_call(kind: str, port: int, path: str, body: bytes):
    """A function that sends one request."""
    if kind == "http":
        from benchmarks.serving import http_caller

        return http_caller(port, path, body)()
    import grpc

    method = grpc.insecure_channel(f"127.0.0.1:{port}").unary_unary(path)  # bytes in, bytes out
    return lambda: method(body, timeout=120)


def _client_process(target, threads: int, ready, start_at, seconds: float, out) -> None:
    """One client process: `threads` threads calling in a loop once `start_at` is set;
    counts what finished in [start_at, start_at + seconds]."""
    counts = [0] * threads
    errors: list[str] = []
    calls = [make_call(*target) for _ in range(threads)]
    for call in calls:
        call()  # connected and warm
    ready.release()
    while start_at.value == 0:
        time.sleep(0.01)
    begin, end = start_at.value, start_at.value + seconds

    def run(i: int) -> None:
        while time.time() < end:
            try:
                calls[i]()
                if time.time() >= begin:
                    counts[i] += 1
            except Exception as e:  # reported with the result
                errors.append(repr(e)[:200])

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    out.put((sum(counts), errors[:1], len(errors)))


def throughput(target, pid: int, clients: int, seconds: float) -> tuple[float, float]:
    """(requests/s, server CPU ms per request) with `clients` concurrent clients spread over
    client processes."""
    ctx = multiprocessing.get_context("spawn")
    procs_n = min(4, clients)
    out, ready, start_at = ctx.Queue(), ctx.Semaphore(0), ctx.Value("d", 0.0)
    procs = [
        ctx.Process(
            target=_client_process,
            args=(
                target,
                clients // procs_n + (i < clients % procs_n),
                ready,
                start_at,
                seconds,
                out,
            ),
        )  # fmt: skip
        for i in range(procs_n)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire(timeout=300)
    time.sleep(0.5)  # the warm-up requests settle
    begin = time.time() + 0.5
    start_at.value = begin
    time.sleep(max(0.0, begin - time.time()))
    cpu0 = tree_cpu(pid)
    time.sleep(seconds)
    cpu = tree_cpu(pid) - cpu0
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    done = sum(r[0] for r in results)
    failed = sum(r[2] for r in results)
    if failed:
        sample = next(r[1][0] for r in results if r[1])
        print(
            f"  {target[0]}:{target[1]}: {failed} failed requests, e.g. {sample}", file=sys.stderr
        )
    return done / seconds, 1000.0 * cpu / max(done, 1)


def latency(calls: dict[str, object], n: int) -> dict[str, tuple[float, float]]:
    """Sequential batch-1 requests, round robin over the servers; (p50, p99) ms each."""
    samples: dict[str, list[float]] = {k: [] for k in calls}
    for i in range(n + 20):
        for k, call in calls.items():
            t = time.perf_counter()
            call()
            if i >= 20:
                samples[k].append(time.perf_counter() - t)
    return {
        k: (float(np.percentile(v, 50)) * 1e3, float(np.percentile(v, 99)) * 1e3)
        for k, v in samples.items()
    }


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-base-path", help="a zoo export (base path with int versions)")
    parser.add_argument("--seconds", type=float, default=6.0, help="per throughput measurement")
    parser.add_argument("--requests", type=int, default=300, help="per latency measurement")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--skip", default="", help="comma-separated servers to leave out")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))

    import orjson

    from benchmarks.serving import build_model, session_callable
    from serving.layout import version_dirs

    tmp = Path(tempfile.mkdtemp(prefix="serving-peers-"))
    base = (
        Path(args.model_base_path).resolve() if args.model_base_path else build_model(tmp / "cifar")
    )
    version = version_dirs(base)[-1][1]
    pixels = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    plain = orjson.dumps({"instances": pixels.tolist()})
    zoo_body = orjson.dumps({"signature_name": SIGNATURE, "instances": pixels.tolist()})
    tfs_path, tfs_req = grpc_request("tfs", pixels)
    v2_path, v2_req = grpc_request("v2", pixels)
    for timeout in (0, 2000):
        (tmp / f"batching{timeout}.txt").write_text(
            f"max_batch_size {{ value: 32 }}\nbatch_timeout_micros {{ value: {timeout} }}\n"
            "max_enqueued_batches { value: 100 }\nnum_batch_threads { value: 2 }\n"
        )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    py = sys.executable

    # name -> (command, ports to wait for, {protocol: client target}, extra env)
    servers: dict[str, tuple] = {}
    zoo_variants = {"zoo": []}
    for timeout in (0, 2000):
        zoo_variants[f"zoo+batching {timeout} us"] = [
            "--enable_batching", f"--batching_parameters_file={tmp / f'batching{timeout}.txt'}"
        ]  # fmt: skip
    for tag, extra in zoo_variants.items():
        g, r = free_port(), free_port()
        servers[tag] = (
            [py, "-m", "serving", f"--port={g}", f"--rest_api_port={r}", "--model_name=cifar",
             f"--model_base_path={base}", *extra],
            [g, r],
            {"REST": ("http", r, "/v1/models/cifar:predict", zoo_body),
             "gRPC": ("grpc", g, tfs_path, tfs_req), "gRPC V2": ("grpc", g, v2_path, v2_req)},
            {},
        )  # fmt: skip
    if _have("fastapi") and _have("uvicorn"):
        (tmp / "fastapi_app.py").write_text(textwrap.dedent(FASTAPI_APP))
        r = free_port()
        servers["FastAPI+uvicorn"] = (
            [py, str(tmp / "fastapi_app.py"), str(version), str(r)], [r],
            {"REST": ("http", r, "/v1/models/cifar:predict", plain)}, {},
        )  # fmt: skip
    if _have("bentoml"):
        (tmp / "bento_service.py").write_text(textwrap.dedent(BENTO_SERVICE))
        for tag, batch in (("BentoML", "0"), ("BentoML+batching", "1")):
            r = free_port()
            servers[tag] = (
                [py, "-m", "bentoml", "serve", "bento_service:Cifar", "--host", "127.0.0.1",
                 "--port", str(r)], [r],
                {"REST": ("http", r, "/predict", plain)},
                {"BENTO_BATCH": batch, "CIFAR_VERSION": str(version)},
            )  # fmt: skip
    if _have("kserve"):
        (tmp / "kserve_app.py").write_text(textwrap.dedent(KSERVE_APP))
        r, g = free_port(), free_port()
        servers["KServe"] = (
            [py, str(tmp / "kserve_app.py"), str(version), str(r), str(g)], [r, g],
            {"REST": ("http", r, "/v1/models/cifar:predict", plain),
             "gRPC V2": ("grpc", g, v2_path, v2_req)}, {},
        )  # fmt: skip
    (tmp / "noop.py").write_text(textwrap.dedent(NOOP_SERVERS))
    g, r = free_port(), free_port()
    servers["floor: do-nothing stdlib HTTP / gRPC"] = (
        [py, str(tmp / "noop.py"), str(g), str(r)], [g, r],
        {"REST": ("http", r, "/v1/models/cifar:predict", zoo_body),
         "gRPC": ("grpc", g, tfs_path, tfs_req)}, {},
    )  # fmt: skip
    if _have("uvicorn"):
        (tmp / "noop_asgi.py").write_text(textwrap.dedent(NOOP_ASGI))
        r = free_port()
        servers["floor: do-nothing uvicorn+httptools"] = (
            [py, str(tmp / "noop_asgi.py"), str(r)], [r],
            {"REST": ("http", r, "/", zoo_body)}, {},
        )  # fmt: skip
    servers = {k: v for k, v in servers.items() if k not in skip}

    procs: dict[str, subprocess.Popen] = {}
    rows: list[tuple] = []
    try:
        for name, (cmd, ports, _targets, extra_env) in servers.items():
            print(f"starting {name} ...", file=sys.stderr, flush=True)
            procs[name] = subprocess.Popen(
                cmd, cwd=tmp, env={**env, **extra_env},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                for port in ports:
                    wait_port(port, procs[name])
            except RuntimeError as e:
                print(f"  {name} did not start ({e}); left out", file=sys.stderr)
                procs.pop(name).kill()
        time.sleep(3.0)  # servers that open the port before they finish loading

        import tensorflow as tf

        fn = tf.saved_model.load(str(version)).signatures[SIGNATURE]
        tensor = tf.constant(pixels)
        calls = {"in-process signature call": lambda: fn(pixels=tensor)}
        session = session_callable(version)
        if session is not None:
            calls["in-process session callable"] = lambda: session(pixels)
        for name in procs:
            for proto, target in servers[name][2].items():
                calls[f"{name}|{proto}"] = make_call(*target)
        for key, call in list(calls.items()):  # a server that cannot answer is left out
            try:
                call()
            except Exception as e:
                print(f"  {key} fails ({str(e)[:200]}); left out", file=sys.stderr)
                del calls[key]
        print("measuring batch-1 latency ...", file=sys.stderr, flush=True)
        lat = latency(calls, args.requests)
        in_process_cpu = {}
        for key in ("in-process signature call", "in-process session callable"):
            if key in calls:
                cpu0 = resource.getrusage(resource.RUSAGE_SELF)
                for _ in range(args.requests):
                    calls[key]()
                cpu1 = resource.getrusage(resource.RUSAGE_SELF)
                used = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
                in_process_cpu[key] = 1000.0 * used / args.requests
        rates: dict[str, tuple[float, float]] = {}
        for name in procs:
            for proto, target in servers[name][2].items():
                if f"{name}|{proto}" not in calls:
                    continue
                print(f"measuring {name} {proto} with {args.clients} clients ...",
                      file=sys.stderr, flush=True)  # fmt: skip
                rates[f"{name}|{proto}"] = throughput(
                    target, procs[name].pid, args.clients, args.seconds
                )
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()

    session_p50 = lat.get("in-process session callable", lat["in-process signature call"])[0]
    for key, (p50, p99) in lat.items():
        if "|" not in key:
            rows.append((key, "", f"{p50:.2f} / {p99:.2f}", "", f"{in_process_cpu[key]:.2f}"))
            continue
        name, proto = key.split("|")
        rps, cpu = rates[key]
        note = f"+{p50 - session_p50:.2f} ms over the session call" if "gRPC" in proto else ""
        rows.append((name, proto, f"{p50:.2f} / {p99:.2f}", f"{rps:.0f}", f"{cpu:.2f}", note))
    print(
        f"\nServing peers: {version} ({SIGNATURE}, batch 1), {os.cpu_count()} CPUs, "
        f"{args.clients} clients for throughput; load average {os.getloadavg()[0]:.1f}"
    )
    header = ("server", "protocol", "p50 / p99 ms", "req/s", "CPU ms/req", "")
    widths = [max(len(str(r[i])) if i < len(r) else 0 for r in [header, *rows]) for i in range(6)]
    for row in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=False)).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
