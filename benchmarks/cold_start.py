"""Cold start of `make serve`: seconds until every shipped model is AVAILABLE.

    .venv/bin/python -m benchmarks.cold_start [--old] [--runs N] [--keep DIR]

Runs `make serve`'s two steps as the Makefile does (`python -m catalogue.bootstrap`, then
`zoo serve` on the models.config it writes), with a fresh artifact cache and models folder
in a temporary directory, offline, and polls the REST port's `GET /v2/health/ready` (every
configured model has an AVAILABLE version, warmup included) every 50 ms:

- fresh clone: install the catalogue (pretrained/) into an empty folder, then serve;
- second start: the models installed already (the bootstrap finds nothing to do), serve.

Serving runs with the default initial load threads (TF Serving's 4 x CPUs) and, for
comparison, with `--num_initial_load_threads=0` (one model after the other, as before). With
`--old` the install also runs the old way: every artifact exported with TensorFlow instead
of its prebuilt SavedModel installed. Each model's load + warmup seconds come from the
server's log; the CPU seconds of the install and of the server until ready do not depend on
what else the machine runs. With `--runs N` every row is measured once per round, N rounds, and
each row's best run counts (other processes on a shared machine only ever slow a run down).
Prints one table.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from tests.conftest import free_port  # noqa: E402 (one reservation of ports)

REPO = Path(__file__).resolve().parents[1]
#: The old install: the archives' prebuilt SavedModels ignored, every run exported.
EXPORT_INSTALL = (
    "import sys; from catalogue import prebuilt; "
    "prebuilt.carries_export = lambda run_dir: False; "
    "from catalogue import bootstrap; sys.exit(bootstrap.main(sys.argv[1:]))"
)
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
_LOADING = re.compile(r"Loading servable: \{name: (\S+) version: (\d+)\}")
_LOADED = re.compile(r"Successfully loaded servable version \{name: (\S+) version: (\d+)\}")


def environment(cache: Path) -> dict[str, str]:
    return {**os.environ, "TFZOO_CACHE": str(cache), "TFZOO_OFFLINE": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}  # fmt: skip


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's waited-for children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def install(models: Path, cache: Path, old: bool = False) -> tuple[float, float]:
    """(seconds, CPU seconds) of `python -m catalogue.bootstrap --models MODELS` (the old
    way: every artifact exported)."""
    command = [sys.executable, "-c", EXPORT_INSTALL] if old else [
        sys.executable, "-m", "catalogue.bootstrap"]  # fmt: skip
    cpu, start = children_cpu(), time.perf_counter()
    proc = subprocess.run([*command, "--models", str(models)], cwd=REPO, env=environment(cache),
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"bootstrap failed:\n{proc.stdout}{proc.stderr}")
    return time.perf_counter() - start, children_cpu() - cpu


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def load_seconds(log: str) -> dict[str, float]:
    """Model -> seconds from its "Loading servable" line to its "Successfully loaded" one."""
    started, took = {}, {}
    for line in log.splitlines():
        stamp = _STAMP.match(line)
        if stamp is None:
            continue
        at = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if m := _LOADING.search(line):
            started[m.group(1)] = at
        elif (m := _LOADED.search(line)) and m.group(1) in started:
            took[m.group(1)] = at - started[m.group(1)]
    return took


def serve(models: Path, cache: Path, *flags: str) -> tuple[float, float, dict[str, float]]:
    """Seconds from `zoo serve` until /v2/health/ready answers 200, the server's CPU seconds
    by then, and each model's load seconds."""
    rest = free_port()
    command = [sys.executable, "-m", "tfzoo", "serve", f"--port={free_port()}",
               f"--rest_api_port={rest}", f"--model_config_file={models / 'models.config'}",
               *flags]  # fmt: skip
    with tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=REPO, env=environment(cache), stdout=out,
                                stderr=subprocess.STDOUT, text=True)  # fmt: skip
        try:
            while not ready(rest):
                if proc.poll() is not None:
                    out.seek(0)
                    raise SystemExit(f"the server exited:\n{out.read()[-3000:]}")
                time.sleep(0.05)
            seconds, cpu = time.perf_counter() - start, process_cpu(proc.pid)
        finally:
            proc.terminate()
            proc.wait(60)
        out.seek(0)
        return seconds, cpu, load_seconds(out.read())


def make_serve(root: Path, name: str, old: bool, *flags: str) -> tuple:
    """A fresh clone's `make serve` in `root/name` (removed after): (install s, serve s,
    install CPU s, serve CPU s, model -> load s)."""
    models, cache = root / name / "models", root / name / "cache"
    try:
        installed, install_cpu = install(models, cache, old)
        served, serve_cpu, loads = serve(models, cache, *flags)
    finally:
        shutil.rmtree(root / name, ignore_errors=True)
    return installed, served, install_cpu, serve_cpu, loads


def second_start(models: Path, cache: Path, *flags: str) -> tuple:
    """`make serve` again, every model installed: the same tuple as `make_serve`'s."""
    installed, install_cpu = install(models, cache)  # finds nothing to do
    served, serve_cpu, loads = serve(models, cache, *flags)
    return installed, served, install_cpu, serve_cpu, loads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", action="store_true", help="also install the old way (export)")
    parser.add_argument("--runs", type=int, default=1, help="rounds of runs; the best counts")
    parser.add_argument("--keep", type=Path, default=None, help="work here, and keep it")
    args = parser.parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="cold-start-"))
    serial = "--num_initial_load_threads=0"
    count = iter(range(1_000_000))
    models, cache = root / "again" / "models", root / "again" / "cache"
    measures = {
        "fresh clone, new: extraction, parallel loads": lambda: make_serve(
            root, f"run{next(count)}", False
        ),
        "second start, one load at a time": lambda: second_start(models, cache, serial),
        "second start, parallel loads": lambda: second_start(models, cache),
    }
    if args.old:
        measures = {
            "fresh clone, old: export, one load at a time": lambda: make_serve(
                root, f"run{next(count)}", True, serial
            ),
            **measures,
        }
    load_before = os.getloadavg()[0]
    best: dict[str, tuple] = {}
    try:
        install(models, cache)
        for _ in range(args.runs):  # rounds, so that a busy spell slows every row alike
            for label, measure in measures.items():
                run = measure()
                if label not in best or run[0] + run[1] < best[label][0] + best[label][1]:
                    best[label] = run
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    rows = list(best.items())
    load_after = os.getloadavg()[0]
    print(f"\n`make serve` cold start on {os.cpu_count()} CPU(s): seconds until every model is "
          f"AVAILABLE, best of {args.runs} round(s) (load average {load_before:.1f} before, "
          f"{load_after:.1f} after)\n")  # fmt: skip
    print("| run | install s | serve s | total s | install CPU s | serve CPU s |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, (installed, served, install_cpu, serve_cpu, _) in rows:
        print(f"| {label} | {installed:.1f} | {served:.1f} | {installed + served:.1f} "
              f"| {install_cpu:.1f} | {serve_cpu:.1f} |")  # fmt: skip
    loads = rows[-1][1][4]
    print("\n| model (second start, parallel) | load + warmup s |\n|---|---:|")
    for model, seconds in sorted(loads.items(), key=lambda kv: -kv[1]):
        print(f"| {model} | {seconds:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
