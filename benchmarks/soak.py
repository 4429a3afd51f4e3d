"""Soak test: good traffic on every protocol and family, config reloads and abusive requests,
for minutes, against one `zoo serve` process with the six zoo models.

    .venv/bin/python -m benchmarks.soak [--minutes 30] [--warmup-minutes 5] [--clients 16]
        [--tree PATH] [--models-config models/models.config] [--out /tmp/soak.json]

- `--clients` threads send good requests in a loop (`--think-ms` apart), each cycling through
  every (protocol, family) pair: TF Serving REST (/v1 predict), gRPC (PredictionService.Predict)
  and the Open Inference Protocol over REST (/v2/models/NAME/infer, images as binary data),
  with real inputs (CIFAR-10, Imagenette and Flickr8k JPEGs, Multi30k sentences, Shakespeare
  prompts) and small generation settings (8 new tokens, beam 2, max length 20). Each has a
  10 s client deadline; any non-OK answer or a timeout is a failed good request (target 0).
- every `--reload-every` seconds a gRPC ModelService.HandleReloadConfigRequest, cycling through
  the same config, the config plus a second copy of cifar_convnet (`cifar_convnet_soak`), and
  the config again (so: same, add, remove);
- after `--quiet-minutes` of good traffic alone (the baseline latency), every `--abuse-every`
  seconds one request of benchmarks/abuse.py, cycling through its list, in its own thread (at
  most `--max-abusive-in-flight` at once, else that tick is skipped; none while the server
  restarts). None is left out by default (`--skip NAME ...` leaves some out): none costs the client much
  CPU per send (the 200 MB JSON body is one 1 MB block sent 200 times, ~0.05 s; the gzip and
  PNG bombs are compressed once, ~3 s each, before the clock starts);
- the server's RSS every 5 s, and its slope (MB/minute, least squares) after the warm-up;
- the worst stall: p99 and max latency of the good requests (OK or not) that overlapped an
  abusive one in flight (target p99 < 1 s), against the baseline's p99.

Safety: the server is killed and restarted (on the same ports) when its RSS grows more than
`--rss-kill-mb` over its idle RSS; it is restarted if it dies. Both are reported as events.
Prints a table; writes every raw sample as JSON to `--out`.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import itertools
import os
import shlex
import signal
import struct
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import orjson

from benchmarks import abuse
from benchmarks.probes import (
    BEAM,
    DATA,
    FAMILIES,
    MAX_LENGTH,
    REPO,
    GoodInputs,
    ServerProcess,
    gpt_inputs,
    rest_request,
)

PROTOCOLS = ("REST", "gRPC", "OIP")
ALIAS = "cifar_convnet_soak"


# ---- prepared good requests ----------------------------------------------------------------------
def _v2_tensor(name: str, datatype: str, data: list, shape: list[int] | None = None) -> dict:
    return {"name": name, "datatype": datatype, "shape": [len(data)] if shape is None else shape,
            "data": data}  # fmt: skip


def oip_request(family: str, inputs: GoodInputs, i: int) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) of a small Open Inference Protocol REST infer; images go as binary
    data (4-byte little-endian length + the JPEG), text as JSON."""
    tensors, parameters, blob = [], {}, b""
    if family in ("cifar_convnet", "googlenet", "captioner"):
        image = inputs.image(family, i)
        blob = struct.pack("<I", len(image)) + image
        tensors.append({"name": "image_bytes", "datatype": "BYTES", "shape": [1],
                        "parameters": {"binary_data_size": len(blob)}})  # fmt: skip
        if family == "captioner":
            parameters["signature_name"] = "caption"
            tensors.append(_v2_tensor("beam_size", "INT32", [BEAM], []))
            tensors.append(_v2_tensor("max_length", "INT32", [MAX_LENGTH], []))
    elif family == "tagger":
        tensors.append(
            _v2_tensor("sentences", "BYTES", [inputs.sentences[i % len(inputs.sentences)]])
        )
    elif family == "seq2seq":
        parameters["signature_name"] = "translate"
        source = inputs.sentences[i % len(inputs.sentences)].lower()
        tensors += [_v2_tensor("source", "BYTES", [source]),
                    _v2_tensor("beam_size", "INT32", [BEAM], []),
                    _v2_tensor("max_length", "INT32", [MAX_LENGTH], [])]  # fmt: skip
    else:
        parameters["signature_name"] = "generate"
        types = {"prompt": "BYTES", "stop": "BYTES", "temperature": "FP32", "top_p": "FP32"}
        prompt = inputs.prompts[i % len(inputs.prompts)]
        for name, value in gpt_inputs(prompt).items():
            tensors.append(_v2_tensor(name, types.get(name, "INT32"), value))
    doc = {"inputs": tensors}
    if parameters:
        doc["parameters"] = parameters
    header = orjson.dumps(doc)
    headers = {"Content-Type": "application/json"}
    if blob:
        headers["Inference-Header-Content-Length"] = str(len(header))
    return f"/v2/models/{family}/infer", header + blob, headers


def _tensor(values: list, dtype: str, shape: list[int] | None = None):
    """A TensorProto of DT_STRING (bytes), DT_INT32 or DT_FLOAT; shape [] for a scalar."""
    from tensorflow.core.framework import tensor_pb2, types_pb2

    enum, field = {"string": (types_pb2.DT_STRING, "string_val"),
                   "int32": (types_pb2.DT_INT32, "int_val"),
                   "float": (types_pb2.DT_FLOAT, "float_val")}[dtype]  # fmt: skip
    proto = tensor_pb2.TensorProto(dtype=enum, **{field: values})
    for size in [len(values)] if shape is None else shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def grpc_request(family: str, inputs: GoodInputs, i: int):
    """A small PredictRequest to `family` with real input number i."""
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = family
    tensors = request.inputs
    if family in ("cifar_convnet", "googlenet", "captioner"):
        tensors["image_bytes"].CopyFrom(_tensor([inputs.image(family, i)], "string"))
        if family == "captioner":
            request.model_spec.signature_name = "caption"
            tensors["beam_size"].CopyFrom(_tensor([BEAM], "int32", []))
            tensors["max_length"].CopyFrom(_tensor([MAX_LENGTH], "int32", []))
    elif family == "tagger":
        sentence = inputs.sentences[i % len(inputs.sentences)]
        tensors["sentences"].CopyFrom(_tensor([sentence.encode()], "string"))
    elif family == "seq2seq":
        request.model_spec.signature_name = "translate"
        source = inputs.sentences[i % len(inputs.sentences)].lower()
        tensors["source"].CopyFrom(_tensor([source.encode()], "string"))
        tensors["beam_size"].CopyFrom(_tensor([BEAM], "int32", []))
        tensors["max_length"].CopyFrom(_tensor([MAX_LENGTH], "int32", []))
    else:
        request.model_spec.signature_name = "generate"
        prompt = inputs.prompts[i % len(inputs.prompts)]
        for name, value in gpt_inputs(prompt).items():
            kind = {str: "string", int: "int32", float: "float"}[type(value[0])]
            values = [v.encode() for v in value] if kind == "string" else value
            tensors[name].CopyFrom(_tensor(values, kind))
    return request


def prepare_requests(inputs: GoodInputs, n: int = 12) -> dict[tuple[str, str], list]:
    """(protocol, family) -> n prepared requests, so that the clients spend little CPU."""
    out: dict[tuple[str, str], list] = {}
    for family in FAMILIES:
        out["REST", family] = [(*rest_request(family, inputs, i), {}) for i in range(n)]
        out["OIP", family] = [oip_request(family, inputs, i) for i in range(n)]
        out["gRPC", family] = [grpc_request(family, inputs, i) for i in range(n)]
    return out


# ---- the soak ----------------------------------------------------------------------------------
class Soak:
    """The shared state of one soak run: the server, the clock and every sample."""

    def __init__(self, server: ServerProcess, args: argparse.Namespace):
        self.server, self.args = server, args
        self.t0 = time.monotonic()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        #: [start s, latency s, protocol, family, answer]
        self.good: list[list] = []
        #: [start s, end s, probe, answer, detail]; answer "skipped" (detail: why) when too
        #: many are in flight or the server is restarting
        self.abusive: list[list] = []
        self.rss: list[list] = []  # [t s, RSS MB, server instance]
        self.reloads: list[list] = []  # [t s, config, error code, message, seconds]
        self.events: list[list] = []  # [t s, what]
        self.outages: list[list[float]] = []  # [from s, to s]: killed or dead, restarting
        self.abusive_in_flight = 0
        self.idle_rss = server.rss_mb()
        #: set while the server is up: clients wait (and send nothing) while it restarts
        self.up = threading.Event()
        self.up.set()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def event(self, what: str) -> None:
        print(f"[soak] {self.now():7.1f} s  {what}", file=sys.stderr, flush=True)
        with self.lock:
            self.events.append([self.now(), what])

    # -- good clients --
    def client(self, index: int, requests: dict, channel) -> None:
        """One good client: cycles through every (protocol, family) pair until stopped."""
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        conn = None
        pairs = [(p, f) for f in FAMILIES for p in PROTOCOLS]
        deadline, think = self.args.deadline, self.args.think_ms / 1000
        for k in itertools.count(index * 5):
            if self.stop.is_set():
                break
            if not self.up.wait(1.0):
                continue
            protocol, family = pairs[k % len(pairs)]
            prepared = requests[protocol, family]
            request = prepared[(k // len(pairs)) % len(prepared)]
            start = self.now()
            t = time.perf_counter()
            if protocol == "gRPC":
                answer = _grpc_call(stub, request, deadline)
            else:
                if conn is None:
                    host, port = self.server.ports.host, self.server.ports.rest
                    conn = http.client.HTTPConnection(host, port, timeout=deadline)
                answer = _http_call(conn, *request)
                if answer not in (200,):
                    conn.close()
                    conn = None
            latency = time.perf_counter() - t
            if answer in (200, "OK") and latency > deadline:
                answer = "over deadline"
            with self.lock:
                self.good.append([start, latency, protocol, family, answer])
            if think:
                self.stop.wait(think)
        if conn is not None:
            conn.close()

    # -- reloads --
    def reloader(self, channel, configs: list[tuple[str, object]]) -> None:
        """HandleReloadConfigRequest every --reload-every seconds, cycling through `configs`."""
        from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        for label, config in itertools.cycle(configs):
            if self.stop.wait(self.args.reload_every):
                return
            while not self.up.wait(1.0):
                if self.stop.is_set():
                    return
            start, t = self.now(), time.perf_counter()
            try:
                response = stub.HandleReloadConfigRequest(
                    model_management_pb2.ReloadConfigRequest(config=config), timeout=300
                )
                code, message = response.status.error_code, response.status.error_message
            except grpc.RpcError as e:  # an RPC error is a failed reload too
                code, message = e.code().name, e.details() or ""
            seconds = time.perf_counter() - t
            with self.lock:
                self.reloads.append([start, label, str(code), message[:200], seconds])

    # -- abusive requests --
    def abuser(self, probes: list[abuse.Probe]) -> None:
        """One abusive request every --abuse-every seconds, each in its own thread, after the
        --quiet-minutes of good traffic alone (the baseline)."""
        if self.stop.wait(self.args.quiet_minutes * 60):
            return
        for probe in itertools.cycle(probes):
            if self.stop.wait(self.args.abuse_every):
                return
            start = self.now()
            with self.lock:
                if not self.up.is_set():
                    self.abusive.append([start, start, probe.name, "skipped", "server down"])
                    continue
                if self.abusive_in_flight >= self.args.max_abusive_in_flight:
                    self.abusive.append([start, start, probe.name, "skipped", "in flight"])
                    continue
                self.abusive_in_flight += 1
            threading.Thread(target=self._abuse_one, args=(probe, start), daemon=True).start()

    def _abuse_one(self, probe: abuse.Probe, start: float) -> None:
        try:
            answer, _ = probe.send(self.server.ports, min(probe.timeout, self.args.abuse_timeout))
            detail = abuse.last_detail()[:160]
        except Exception as e:  # a client-side bug must not stop the soak
            answer, detail = "client error", repr(e)[:160]
        with self.lock:
            self.abusive.append([start, self.now(), probe.name, str(answer), detail])
            self.abusive_in_flight -= 1

    # -- memory --
    def monitor(self) -> None:
        """RSS every 5 s; kills the server over the RSS limit and restarts a dead one."""
        next_sample = 0.0
        while not self.stop.wait(0.05):
            rss = self.server.rss_mb()
            if self.now() >= next_sample:  # every 5 s (on a fresh grid after a restart)
                next_sample = max(next_sample + 5.0, self.now() + 2.5)
                with self.lock:
                    self.rss.append([self.now(), rss, self.server.starts])
            if self.server.alive() and rss - self.idle_rss > self.args.rss_kill_mb:
                self.event(f"RSS {rss:.0f} MB > idle {self.idle_rss:.0f} + "
                           f"{self.args.rss_kill_mb:.0f} MB: killed")  # fmt: skip
                self.server.kill()
            if not self.server.alive() and not self.stop.is_set():
                self.up.clear()
                down = self.now()
                self.event(f"server down (rc {self.server.proc.returncode}): restarting")
                try:
                    self.server.start()
                except RuntimeError as e:
                    self.event(f"restart failed: {str(e)[-300:]}")
                    self.stop.set()
                    return
                with self.lock:
                    self.outages.append([down, self.now()])
                self.up.set()
                self.event("server back")


def _http_call(conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict):
    """POST on a keep-alive connection: the HTTP status, or what failed."""
    try:
        conn.request(
            "POST", path, body=body, headers=headers or {"Content-Type": "application/json"}
        )
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except TimeoutError:
        return "timeout"
    except (OSError, http.client.HTTPException) as e:
        return type(e).__name__


def _grpc_call(stub, request, deadline: float) -> str:
    try:
        stub.Predict(request, timeout=deadline)
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


def reload_configs(path: Path) -> list[tuple[str, object]]:
    """[(label, ModelServerConfig)]: the config, the config plus a copy of cifar_convnet, the
    config again (so a reload cycle is: same, add one, remove it)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    base = text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())
    plus = model_server_config_pb2.ModelServerConfig()
    plus.CopyFrom(base)
    for model in base.model_config_list.config:
        if model.name == "cifar_convnet":
            extra = plus.model_config_list.config.add()
            extra.CopyFrom(model)
            extra.name = ALIAS
    return [("same", base), (f"+{ALIAS}", plus), (f"-{ALIAS}", base)]


# ---- the report --------------------------------------------------------------------------------
def percentile_ms(values, q: float) -> str:
    return f"{np.percentile(np.asarray(values) * 1000, q):.0f}" if len(values) else "-"


def overlapping(good: list[list], abusive: list[list]) -> np.ndarray:
    """A mask over `good`: which requests overlapped an abusive request in flight."""
    spans = sorted((a[0], a[1]) for a in abusive if a[3] != "skipped")
    merged: list[list[float]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    if not merged or not good:
        return np.zeros(len(good), bool)
    starts = np.array([m[0] for m in merged])
    ends = np.array([m[1] for m in merged])
    g_start = np.array([g[0] for g in good])
    g_end = g_start + np.array([g[1] for g in good])
    idx = np.searchsorted(ends, g_start, side="right")  # first union span ending after start
    inside = idx < len(merged)
    return inside & (starts[np.minimum(idx, len(merged) - 1)] < g_end)


def rss_slope(rss: list[list], warmup_s: float) -> tuple[float | None, int]:
    """(MB per minute by least squares, samples used) over the samples after the warm-up and
    after the last restart's first minute (None with fewer than 3 samples)."""
    if not rss:
        return None, 0
    last = rss[-1][2]
    first_t = min(r[0] for r in rss if r[2] == last)
    after = warmup_s if last == rss[0][2] else max(warmup_s, first_t + 60)
    pts = [(t, mb) for t, mb, inst in rss if inst == last and t >= after and mb > 0]
    if len(pts) < 3:
        return None, len(pts)
    t, mb = np.array(pts).T
    return float(np.polyfit(t / 60, mb, 1)[0]), len(pts)


def _ratio(values: list[float], base: list[float]) -> str:
    """p99(values) / p99(base), as "12.3x" ("-" without both)."""
    if not values or not base:
        return "-"
    return f"{np.percentile(values, 99) / max(np.percentile(base, 99), 1e-9):.1f}x"


def _served(answer: str) -> bool:
    """Whether an abusive request got an answer from the server (not a dropped connection)."""
    return answer.isdigit() or answer not in (
        "UNAVAILABLE", "CANCELLED", "timeout", "closed", "reset", "refused", "garbled",
        "client error", "skipped",
    )  # fmt: skip


def report(soak: Soak, args: argparse.Namespace, wall: float, left_out: list[str]) -> None:
    """Print the table."""
    good, abusive = soak.good, soak.abusive
    ok = [g for g in good if g[4] in (200, "OK")]
    failed = [g for g in good if g[4] not in (200, "OK")]
    sent = [a for a in abusive if a[3] != "skipped"]
    served = len(ok) + sum(_served(a[3]) for a in sent)
    down = sum(e - s for s, e in soak.outages)
    rows: list[tuple[str, str, str]] = []
    rows.append(("requests served", f"{served} ({served / wall:.1f}/s)",
                 "good ones answered OK + abusive ones answered by the server"))  # fmt: skip
    rows.append(("good requests", f"{len(good)}",
                 f"{len(failed)} failed (target 0): a non-OK answer or over the "
                 f"{args.deadline:.0f} s deadline; none sent while the server restarted"))  # fmt: skip
    if failed:
        reasons = collections.Counter(f"{g[2]} {g[3]}: {g[4]}" for g in failed)
        common = "; ".join(f"{k} x{v}" for k, v in reasons.most_common(6))
        rows.append(("  failures, most common", "", common))
    for protocol in PROTOCOLS:
        lat = [g[1] for g in ok if g[2] == protocol]
        n_bad = sum(g[2] == protocol for g in failed)
        rows.append((f"  {protocol} p50 / p99 / max ms (OK)",
                     f"{percentile_ms(lat, 50)} / {percentile_ms(lat, 99)} / "
                     f"{max(lat, default=0) * 1000:.0f}", f"{len(lat)} ok, {n_bad} failed"))  # fmt: skip
    for family in FAMILIES:
        lat = [g[1] for g in ok if g[3] == family]
        rows.append((f"  {family} p50 / p99 ms (OK)",
                     f"{percentile_ms(lat, 50)} / {percentile_ms(lat, 99)}",
                     f"{sum(g[3] == family for g in failed)} failed"))  # fmt: skip
    quiet = args.quiet_minutes * 60
    base = [g[1] for g in good if g[0] + g[1] < quiet]
    base_bad = sum(g[4] not in (200, "OK") for g in good if g[0] + g[1] < quiet)
    rows.append((f"baseline: first {args.quiet_minutes:g} min, no abuse",
                 f"p50 {percentile_ms(base, 50)} / p99 {percentile_ms(base, 99)} ms",
                 f"{len(base)} good requests, {base_bad} failed"))  # fmt: skip
    mask = overlapping(good, abusive)
    over = [g[1] for g, m in zip(good, mask, strict=True) if m]
    clear = [g[1] for g, m in zip(good, mask, strict=True) if not m]
    over_bad = sum(g[4] not in (200, "OK") for g, m in zip(good, mask, strict=True) if m)
    rows.append(("worst stall: good requests overlapping abuse",
                 f"p99 {percentile_ms(over, 99)} / max {max(over, default=0) * 1000:.0f} ms",
                 f"{len(over)} overlapped ({over_bad} failed; target p99 < 1000 ms), p99 "
                 f"{_ratio(over, base)} the baseline's; the {len(clear)} others: p99 "
                 f"{percentile_ms(clear, 99)} ms"))  # fmt: skip
    skipped = collections.Counter(a[4] for a in abusive if a[3] == "skipped")
    rows.append(("abusive requests", f"{len(sent)} sent",
                 f"ticks skipped: {skipped.get('in flight', 0)} with "
                 f"{args.max_abusive_in_flight} in flight, {skipped.get('server down', 0)} "
                 f"while the server restarted; left out: {', '.join(left_out) or 'none'}"))  # fmt: skip
    by_probe: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for a in sent:
        by_probe[a[2]][a[3]] += 1
    for name, answers in by_probe.items():
        rows.append((f"  {name}", "", ", ".join(f"{k} x{v}" for k, v in answers.most_common())))
    bad_reloads = [r for r in soak.reloads if r[2] not in ("0", "OK")]
    rows.append(("config reloads", f"{len(soak.reloads)}",
                 f"{len(bad_reloads)} failed; slowest "
                 f"{max((r[4] for r in soak.reloads), default=0):.1f} s"))  # fmt: skip
    for r in bad_reloads[:3]:
        rows.append(("  failed reload", r[1], f"{r[2]}: {' '.join(r[3].split())[:120]}"))
    slope, n = rss_slope(soak.rss, args.warmup_minutes * 60)
    rss = [r[1] for r in soak.rss if r[1] > 0]
    why = " (restarted: too few samples)" if slope is None and soak.outages else ""
    rows.append(("server RSS MB first / last / max",
                 f"{rss[0]:.0f} / {rss[-1]:.0f} / {max(rss):.0f}" if rss else "-",
                 f"slope after warm-up {'-' if slope is None else f'{slope:+.1f}'} MB/min "
                 f"({n} samples every 5 s){why}"))  # fmt: skip
    kills = sum("killed" in e[1] for e in soak.events)
    rows.append(("server restarts", f"{len(soak.outages)}",
                 f"{kills} killed over the RSS limit (idle {soak.idle_rss:.0f} + "
                 f"{args.rss_kill_mb:.0f} MB), {len(soak.outages) - kills} died; "
                 f"down {down:.0f} s of {wall:.0f} s"))  # fmt: skip
    load = os.getloadavg()
    print(f"\nSoak: {wall / 60:.1f} min, {args.clients} clients ({args.think_ms:.0f} ms think time, "
          f"{args.deadline:.0f} s deadline), tree {args.tree.resolve()}, {os.cpu_count()} CPUs, "
          f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")  # fmt: skip
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:<{value_width}}  {note}".rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--warmup-minutes", type=float, default=5)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--think-ms", type=float, default=100, help="pause between a client's requests"
    )
    parser.add_argument(
        "--deadline", type=float, default=10, help="good requests' client deadline, s"
    )
    parser.add_argument("--reload-every", type=float, default=60)
    parser.add_argument("--abuse-every", type=float, default=1.0)
    parser.add_argument(
        "--quiet-minutes",
        type=float,
        default=1,
        help="good traffic alone first: the baseline latency",
    )
    parser.add_argument(
        "--abuse-timeout", type=float, default=30, help="an abusive request's client timeout cap"
    )
    parser.add_argument("--max-abusive-in-flight", type=int, default=4)
    parser.add_argument(
        "--skip", nargs="+", default=[], metavar="NAME", choices=list(abuse.BY_NAME)
    )
    parser.add_argument("--no-abuse", action="store_true", help="good traffic and reloads only")
    parser.add_argument(
        "--rss-kill-mb",
        type=float,
        default=3000,
        help="kill + restart the server when its RSS grows this much over idle",
    )
    parser.add_argument("--tree", type=Path, default=REPO)
    parser.add_argument("--models-config", type=Path, default=REPO / "models" / "models.config")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--server-args", default="", help="extra `zoo serve` flags, one string")
    parser.add_argument("--out", type=Path, default=Path("/tmp/soak.json"))
    args = parser.parse_args(argv)  # fmt: skip

    inputs = GoodInputs.load(args.data)
    requests = prepare_requests(inputs)
    probes = [p for p in abuse.PROBES if p.name not in args.skip]
    left_out = [p.name for p in abuse.PROBES if p not in probes]
    abuse.prepare()
    configs = reload_configs(args.models_config.resolve())
    server = ServerProcess(
        args.tree.resolve(), args.models_config.resolve(), shlex.split(args.server_args)
    )
    server.start()
    options = [("grpc.max_receive_message_length", -1), ("grpc.initial_reconnect_backoff_ms", 200),
               ("grpc.max_reconnect_backoff_ms", 1000)]  # fmt: skip
    channel = grpc.insecure_channel(f"{server.ports.host}:{server.ports.grpc}", options=options)
    soak = Soak(server, args)
    threads = [threading.Thread(target=soak.monitor, daemon=True)]
    threads += [threading.Thread(target=soak.client, args=(i, requests, channel), daemon=True)
                for i in range(args.clients)]  # fmt: skip
    threads.append(threading.Thread(target=soak.reloader, args=(channel, configs), daemon=True))
    if not args.no_abuse:
        threads.append(threading.Thread(target=soak.abuser, args=(probes,), daemon=True))
    previous = signal.signal(signal.SIGINT, lambda *_: soak.stop.set())
    try:
        for t in threads:
            t.start()
        end = soak.t0 + args.minutes * 60
        while not soak.stop.wait(min(30.0, max(0.0, end - time.monotonic()))):
            if time.monotonic() >= end:
                break
            with soak.lock:
                n, bad = len(soak.good), sum(g[4] not in (200, "OK") for g in soak.good)
            soak.event(f"{n} good requests, {bad} failed, RSS {server.rss_mb():.0f} MB")
        soak.stop.set()
        wall = soak.now()
        for t in threads:
            t.join(timeout=args.deadline + 5)
    finally:
        signal.signal(signal.SIGINT, previous)
        soak.stop.set()
        server.stop()
        channel.close()
    with soak.lock:
        samples = {"args": {k: str(v) for k, v in vars(args).items()}, "good": soak.good,
                   "abusive": soak.abusive, "rss": soak.rss, "reloads": soak.reloads,
                   "events": soak.events, "outages": soak.outages,
                   "left_out": left_out}  # fmt: skip
        args.out.write_bytes(orjson.dumps(samples))
        report(soak, args, wall, left_out)
    print(f"raw samples: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
