"""Abusive-request probes: what each request of benchmarks/abuse.py costs the model server.

    .venv/bin/python -m benchmarks.probes [--tree PATH] [--models-config models/models.config]
        [--only NAME ...] [--rss-kill-mb 3000] [--timeout S]

Starts `python -m serving` from the source tree `--tree` (its cwd, so it imports that tree's
serving/ package: `git worktree add /tmp/tfzoo-before <commit>` measures older code) with the
six zoo models, then sends each probe in turn, one at a time, and reports per probe: the
answer (HTTP status, gRPC code, or "timeout"/"reset"/... as the client saw it), its elapsed
time, the server's peak RSS during the probe minus its RSS just before (VmRSS sampled every
20 ms), its RSS afterwards, the worst latency of a small REST cifar_convnet predict sent every
50 ms meanwhile by a second client (the stall the probe causes), how long the server's CPU stays
busy after the answer (work it does not free), and whether it still answers a small REST
predict to each family right after.

Safety: a server whose RSS grows by more than --rss-kill-mb during a probe is killed at once
(recorded as "> N MB (killed)") and restarted before the next probe; so is one still busy
--settle-s after the answer. One server runs at a time.
"""

from __future__ import annotations

import argparse
import base64
import collections
import http.client
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from benchmarks import abuse
from tests.conftest import free_port  # noqa: E402 (one reservation of ports)

REPO = abuse.REPO
DATA = REPO.parent / "shared" / "data"
FAMILIES = ("cifar_convnet", "googlenet", "tagger", "seq2seq", "gpt", "captioner")
READY = "Exporting HTTP/REST API at:localhost"


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (/proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ServerProcess:
    """`python -m serving` run from a source tree, on loopback ports fixed for its lifetime
    (a restart listens on the same ones, so clients just reconnect)."""

    def __init__(self, tree: Path, config: Path, extra: list[str] | None = None):
        self.tree, self.config, self.extra = tree, config, extra or []
        self.ports = abuse.Ports(grpc=free_port(), rest=free_port())
        self.proc: subprocess.Popen | None = None
        self.lines: collections.deque[str] = collections.deque(maxlen=200)
        self.starts = 0

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def alive(self) -> bool:
        """Whether the process is running."""
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 600) -> None:
        """Start the server and wait for its REST ready line."""
        cmd = [sys.executable, "-m", "serving", f"--port={self.ports.grpc}",
               f"--rest_api_port={self.ports.rest}", f"--model_config_file={self.config}",
               *self.extra]  # fmt: skip
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen(
            cmd, cwd=self.tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace",
        )  # fmt: skip
        self.starts += 1
        ready = threading.Event()
        proc = self.proc

        def pump() -> None:
            for line in proc.stdout:
                self.lines.append(line.rstrip())
                if READY in line:
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.2):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                tail = "\n".join(list(self.lines)[-30:])
                raise RuntimeError(f"server did not start:\n{tail}")

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()

    def stop(self, grace: float = 40) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds; the exit status."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode if self.proc else None

    def restart(self) -> None:
        """Kill (if running) and start again on the same ports."""
        self.kill()
        self.start()

    def rss_mb(self) -> float:
        return rss_mb(self.pid) if self.alive() else 0.0

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid) if self.alive() else 0.0


class RssWatch:
    """Samples a server's RSS every `interval` seconds in a thread, keeps the peak, and kills
    the server once its RSS has grown by more than `limit_mb` over `base_mb`."""

    def __init__(self, server: ServerProcess, limit_mb: float, interval: float = 0.02):
        self.server, self.limit_mb, self.interval = server, limit_mb, interval
        self.base_mb = server.rss_mb()
        self.peak_mb = self.base_mb
        self.killed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        pid = self.server.pid
        while not self._stop.wait(self.interval):
            rss = rss_mb(pid)
            self.peak_mb = max(self.peak_mb, rss)
            if rss - self.base_mb > self.limit_mb and not self.killed:
                self.killed = True
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
                return

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return self.peak_mb - self.base_mb


# ---- good requests -----------------------------------------------------------------------------
@dataclass
class GoodInputs:
    """Real inputs for every family: images (JPEG bytes), sentences and prompts."""

    cifar: list[bytes] = field(default_factory=list)
    imagenette: list[bytes] = field(default_factory=list)
    flickr: list[bytes] = field(default_factory=list)
    sentences: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, data: Path = DATA, per_kind: int = 40) -> GoodInputs:
        """Up to `per_kind` of each from ../shared/data (fallbacks where a folder is absent)."""

        def images(pattern: str) -> list[bytes]:
            files = sorted(data.glob(pattern))  # every class: spread over the sorted list
            return [p.read_bytes() for p in files[:: max(1, len(files) // per_kind)][:per_kind]]

        inputs = cls(
            cifar=images("cifar10/test/*/*.jpg"),
            imagenette=images("imagenette/val/*/*.jpg"),
            flickr=images("flickr8k/images/*.jpg"),
        )
        try:
            lines = (data / "multi30k" / "val.en").read_text().splitlines()
            inputs.sentences = [s for s in lines if s.strip()][:per_kind]
        except OSError:
            inputs.sentences = ["A man is riding a bike down the street ."]
        text = abuse.shakespeare(200_000)
        inputs.prompts = [line for line in text.splitlines() if 8 < len(line) < 60][:per_kind]
        for name in ("cifar", "imagenette", "flickr"):
            if not getattr(inputs, name):
                raise SystemExit(f"no {name} images under {data}: pass --data")
        return inputs

    def image(self, family: str, i: int) -> bytes:
        pool = {"cifar_convnet": self.cifar, "googlenet": self.imagenette}.get(family, self.flickr)
        return pool[i % len(pool)]


#: small generation settings: a good request stays well under a second
GEN_TOKENS, BEAM, MAX_LENGTH = 8, 2, 20


def gpt_inputs(prompt: str) -> dict:
    """The seven inputs of gpt's `generate` signature for one prompt."""
    return {"prompt": [prompt], "max_new_tokens": [GEN_TOKENS], "temperature": [0.8],
            "top_k": [0], "top_p": [1.0], "seed": [1], "stop": [""]}  # fmt: skip


def rest_request(family: str, inputs: GoodInputs, i: int = 0) -> tuple[str, bytes]:
    """(path, body) of a small TF Serving REST predict to `family` with real input number i."""
    if family in ("cifar_convnet", "googlenet"):
        b64 = base64.b64encode(inputs.image(family, i)).decode()
        doc = {"instances": [{"b64": b64}]}
    elif family == "captioner":
        b64 = base64.b64encode(inputs.image(family, i)).decode()
        doc = {"signature_name": "caption", "inputs": {"image_bytes": [{"b64": b64}],
               "beam_size": BEAM, "max_length": MAX_LENGTH}}  # fmt: skip
    elif family == "tagger":
        doc = {"instances": [inputs.sentences[i % len(inputs.sentences)]]}
    elif family == "seq2seq":
        doc = {"signature_name": "translate", "inputs": {
            "source": [inputs.sentences[i % len(inputs.sentences)].lower()],
            "beam_size": BEAM, "max_length": MAX_LENGTH}}  # fmt: skip
    else:
        doc = {"signature_name": "generate",
               "inputs": gpt_inputs(inputs.prompts[i % len(inputs.prompts)])}  # fmt: skip
    return f"/v1/models/{family}:predict", orjson.dumps(doc)


def rest_call(conn: http.client.HTTPConnection, path: str, body: bytes) -> int:
    """POST on a keep-alive connection; the HTTP status (the body is read and dropped)."""
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    return resp.status


def health(
    ports: abuse.Ports, inputs: GoodInputs, timeout: float = 10.0
) -> dict[str, abuse.Answer]:
    """A small REST predict to each family: family -> HTTP status or client outcome."""
    answers: dict[str, abuse.Answer] = {}
    for family in FAMILIES:
        path, body = rest_request(family, inputs)
        conn = http.client.HTTPConnection(ports.host, ports.rest, timeout=timeout)
        try:
            answers[family] = rest_call(conn, path, body)
        except TimeoutError:
            answers[family] = "timeout"
        except OSError as e:
            answers[family] = type(e).__name__
        finally:
            conn.close()
    return answers


class Canary:
    """A second client sending a small REST cifar_convnet predict every `every` seconds; keeps
    the worst latency (a request still waiting at the end counts with its time so far)."""

    def __init__(self, ports: abuse.Ports, inputs: GoodInputs, every: float = 0.05,
                 timeout: float = 10.0):  # fmt: skip
        self.ports, self.every, self.timeout = ports, every, timeout
        self.path, self.body = rest_request("cifar_convnet", inputs)
        self.worst = 0.0
        self.failures = 0
        self._pending: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = None
        while not self._stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection(
                    self.ports.host, self.ports.rest, timeout=self.timeout
                )
            start = self._pending = time.perf_counter()
            try:
                if rest_call(conn, self.path, self.body) != 200:
                    self.failures += 1
            except OSError:
                self.failures += 1
                conn.close()
                conn = None
            self.worst = max(self.worst, time.perf_counter() - start)
            self._pending = None
            self._stop.wait(self.every)
        if conn is not None:
            conn.close()

    def __enter__(self) -> Canary:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        pending = self._pending
        if pending is not None:
            self.worst = max(self.worst, time.perf_counter() - pending)
        self._stop.set()


def busy_seconds(server: ServerProcess, cap: float, threshold: float = 0.25) -> float | None:
    """Seconds until the server uses under `threshold` cores over a 1 s window (0: idle at
    once); None if still busy after `cap` seconds or gone."""
    start = time.monotonic()
    while time.monotonic() - start < cap:
        if not server.alive():
            return None
        cpu0, t0 = server.cpu_seconds(), time.monotonic()
        time.sleep(1.0)
        if (server.cpu_seconds() - cpu0) / (time.monotonic() - t0) < threshold:
            return max(0.0, time.monotonic() - start - 1.0)
    return None


# ---- one probe ---------------------------------------------------------------------------------
@dataclass
class Row:
    """What one probe did."""

    name: str
    protocol: str
    answer: str
    elapsed: float
    growth: str
    rss_after: str
    stall_ms: float
    busy: str
    healthy: str
    client_cpu: float
    detail: str = ""


def run_probe(server: ServerProcess, probe: abuse.Probe, inputs: GoodInputs,
              args: argparse.Namespace) -> Row:  # fmt: skip
    """Send one probe to a running server and measure it (restarting the server if it was
    killed, died, or stayed busy)."""
    timeout = min(args.timeout, probe.timeout) if args.timeout else None
    with RssWatch(server, args.rss_kill_mb) as watch, Canary(server.ports, inputs) as canary:
        cpu0 = time.thread_time()
        answer, elapsed = probe.send(server.ports, timeout)
        client_cpu = time.thread_time() - cpu0
    detail = abuse.last_detail().replace("\n", " ")
    growth = f"{watch.growth_mb:.0f}"
    busy, healthy, rss_after, restart = "-", "-", "-", False
    if watch.killed:
        growth, healthy, restart = f"> {args.rss_kill_mb:.0f} (killed)", "killed", True
    elif not server.alive():
        growth, healthy, restart = growth + " (died)", f"died rc={server.proc.returncode}", True
    else:
        answers = health(server.ports, inputs)
        bad = {k: v for k, v in answers.items() if v != 200}
        healthy = "yes" if not bad else " ".join(f"{k}:{v}" for k, v in bad.items())
        seconds = busy_seconds(server, args.settle_s)
        busy = f"> {args.settle_s:.0f}" if seconds is None else f"{seconds:.0f}"
        rss_after = f"{server.rss_mb():.0f}"
        restart = seconds is None
    if restart:
        server.restart()
    return Row(probe.name, probe.protocol, str(answer), elapsed, growth, rss_after,
               canary.worst * 1000, busy, healthy, client_cpu, detail)  # fmt: skip


def print_table(rows: list[Row], header: str) -> None:
    """The probe table, the total, and each answer's message."""
    print(f"\n{header}")
    cols = ("probe", "proto", "answer", "elapsed s", "peak dRSS MB", "RSS after MB",
            "stall ms", "busy after s", "healthy after", "client CPU s")  # fmt: skip
    cells = [(r.name, r.protocol, r.answer, f"{r.elapsed:.2f}", r.growth, r.rss_after,
              f"{r.stall_ms:.0f}", r.busy, r.healthy, f"{r.client_cpu:.2f}") for r in rows]  # fmt: skip
    widths = [max(len(c), *(len(x[i]) for x in cells)) for i, c in enumerate(cols)]
    for cell in (cols, *cells):
        print("  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)).rstrip())
    killed = sum("killed" in r.growth for r in rows)
    unhealthy = sum(r.healthy not in ("yes",) for r in rows)
    answered = collections.Counter(
        r.answer if not r.answer.isdigit() else f"{r.answer[0]}xx" for r in rows
    )
    print(
        f"total: {len(rows)} probes, {sum(r.elapsed for r in rows):.1f} s of requests, "
        f"answers {dict(sorted(answered.items()))}, {killed} killed over the RSS limit, "
        f"{unhealthy} left the server killed/dead/unhealthy, "
        f"{sum(r.busy.startswith('>') for r in rows)} left it busy, "
        f"worst stall {max((r.stall_ms for r in rows), default=0):.0f} ms"
    )
    print("answers:")
    for r in rows:
        print(f"  {r.name}: {r.answer} {r.detail[:160]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=REPO, help="source tree whose serving/ runs")
    parser.add_argument("--models-config", type=Path, default=REPO / "models" / "models.config")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=list(abuse.BY_NAME))
    parser.add_argument(
        "--rss-kill-mb",
        type=float,
        default=3000,
        help="kill the server when its RSS grows by more than this in a probe",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=0,
        help="client timeout per probe (default: each probe's own)",
    )
    parser.add_argument(
        "--settle-s",
        type=float,
        default=30,
        help="restart a server still busy this long after an answer",
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--server-args", default="", help="extra `zoo serve` flags, one string")
    args = parser.parse_args(argv)  # fmt: skip

    probes = [abuse.BY_NAME[n] for n in args.only] if args.only else abuse.PROBES
    inputs = GoodInputs.load(args.data)
    abuse.prepare()  # the bombs are compressed before the clock starts
    server = ServerProcess(
        args.tree.resolve(), args.models_config.resolve(), shlex.split(args.server_args)
    )
    rows: list[Row] = []
    started = time.monotonic()
    try:
        server.start()
        base = health(server.ports, inputs)
        if any(v != 200 for v in base.values()):
            raise SystemExit(f"the server does not answer good requests before any probe: {base}")
        idle_rss = server.rss_mb()
        for probe in probes:
            print(f"[probes] {probe.name} ...", file=sys.stderr, flush=True)
            rows.append(run_probe(server, probe, inputs, args))
            r = rows[-1]
            print(f"[probes]   {r.answer} in {r.elapsed:.2f} s, dRSS {r.growth} MB, "
                  f"healthy {r.healthy}", file=sys.stderr, flush=True)  # fmt: skip
    finally:
        server.stop()
    load = os.getloadavg()
    print_table(
        rows,
        f"Abusive-request probes: tree {args.tree.resolve()}, {os.cpu_count()} CPUs, idle RSS "
        f"{idle_rss:.0f} MB, server started {server.starts}x, {time.monotonic() - started:.0f} s "
        f"wall; load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
