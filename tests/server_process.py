"""A real model server process on free loopback ports, for any test that serves a model."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import grpc

from tests.conftest import REPO_ROOT, free_port

STARTUP_TIMEOUT = 180  # the shared 2-core machine can be slow to import TensorFlow


@dataclass
class Server:
    """A running `python -m serving` process and clients for it."""

    proc: subprocess.Popen
    grpc_port: int
    rest_port: int
    lines: list[str] = field(default_factory=list)

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")

    def http(self, method: str, path: str, body=None, headers=None) -> tuple[int, dict | str]:
        """One HTTP request; returns (status, parsed JSON or text)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=60)
        try:
            if isinstance(body, dict):
                body = json.dumps(body).encode()
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read().decode()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(data)
        except ValueError:
            return resp.status, data

    def log(self) -> str:
        return "\n".join(self.lines[-60:])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_server(
    *args: str, rest: bool = True, entry: tuple[str, ...] = ("-m", "serving")
) -> Server:
    """Start the server with TF Serving flags and wait for its startup lines.

    `entry` is what follows the interpreter: `-m serving` or e.g. `-m tfzoo serve`.
    """
    grpc_port, rest_port = free_port(), free_port() if rest else 0
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable,
        *entry,
        f"--port={grpc_port}",
        "--rest_api_port",
        str(rest_port),
    ]
    proc = subprocess.Popen(
        [*cmd, *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = Server(proc, grpc_port, rest_port)
    ready = threading.Event()
    wanted = "Exporting HTTP/REST API at:localhost" if rest else "Running gRPC ModelServer at"

    def pump() -> None:
        for line in proc.stdout:
            server.lines.append(line.rstrip())
            if wanted in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not ready.wait(0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"server did not start:\n{server.log()}")
    return server
