"""Run every fuzz target (fuzz/fuzz_*.py) for a set time each, and print what each did.

    python fuzz/run.py                      # 600 s a target, atheris when installed
    python fuzz/run.py --seconds 30 --targets json_tensor v2_rest
    python fuzz/run.py --engine random      # no atheris: random mutations, in this process

A target is a module with `test_one_input(data: bytes)` (raising on a finding) and a `main()`
that runs it under atheris; `seed_inputs()` (a list of bytes) and `TOKENS` (what
`_harness.mutate` inserts) are used when present. With atheris (`pip install .[fuzz]`) each target runs in its own process
(`python fuzz/fuzz_x.py -max_total_time=N -rss_limit_mb=2048 -print_final_stats=1 ...`),
restarted after a crash until its time is spent, and libFuzzer's final statistics are read
back. With `--engine random` the targets are imported here and fed mutations of their seeds.

Crash inputs and each target's log go to --artifacts (a new temporary folder by default).
The table lists target, seconds, executions, exec/s and crashes; the exit status is 1 when
any target crashed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as harness  # noqa: E402

FUZZ_DIR = Path(__file__).resolve().parent
REPO_ROOT = FUZZ_DIR.parent
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.M)
_ARTIFACT = re.compile(r"Test unit written to (\S+)")
_CRASH_KINDS = ("crash-", "oom-", "timeout-", "leak-")
#: what libFuzzer may run past -max_total_time: the target's imports (TensorFlow) and exit
_GRACE_SECONDS = 180


@dataclass
class Result:
    """What one target did."""

    target: str
    seconds: float = 0.0
    executions: int = 0
    crashes: int = 0
    findings: list[str] = field(default_factory=list)  # crash files, or notes

    @property
    def per_second(self) -> float:
        return self.executions / self.seconds if self.seconds else 0.0


def targets(names: list[str] | None) -> list[Path]:
    """fuzz/fuzz_*.py, or those named (with or without the fuzz_ prefix)."""
    found = sorted(FUZZ_DIR.glob("fuzz_*.py"))
    if not names:
        return found
    wanted = {n if n.startswith("fuzz_") else f"fuzz_{n}" for n in names}
    chosen = [p for p in found if p.stem in wanted]
    missing = wanted - {p.stem for p in chosen}
    if missing:
        raise SystemExit(f"no such fuzz target: {', '.join(sorted(missing))}")
    return chosen


# ---- atheris: one process per target, restarted after a crash ---------------------------------
def run_atheris(path: Path, seconds: int, artifacts: Path) -> Result:
    """Fuzz `path` under libFuzzer for `seconds`, restarting it after each crash."""
    result = Result(path.stem)
    log = (artifacts / f"{path.stem}.log").open("w")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    started = time.monotonic()
    while (left := seconds - (time.monotonic() - started)) >= 1:
        command = [
            sys.executable,
            str(path),
            f"-max_total_time={int(left)}",
            "-rss_limit_mb=2048",
            "-timeout=60",
            "-print_final_stats=1",
            f"-artifact_prefix={artifacts}/{path.stem}-",
        ]
        try:
            done = subprocess.run(
                command,
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=left + _GRACE_SECONDS,
            )
            output, code = done.stdout + done.stderr, done.returncode
        except subprocess.TimeoutExpired as e:
            output, code = f"{e.stdout or ''}{e.stderr or ''}\nrun.py: killed (time out)", -9
        log.write(output)
        stats = {k: int(v) for k, v in _STAT.findall(output)}
        result.executions += stats.get("number_of_executed_units", 0)
        crashed = [
            p
            for p in _ARTIFACT.findall(output)
            if Path(p).name.startswith(_CRASH_KINDS, len(path.stem) + 1)
        ]
        result.findings += crashed
        if crashed:
            result.crashes += len(crashed)
        elif code != 0 or not stats:  # died without a crash file: import error, killed ...
            result.crashes += 1
            tail = output.strip().splitlines()[-1:] or ["no output"]
            result.findings.append(f"exit status {code}: {tail[0]}")
            break
        else:
            break  # ran its time out
    result.seconds = time.monotonic() - started
    log.close()
    return result


# ---- random: in this process, mutations of the seeds -----------------------------------------
def _load(path: Path):
    """Import a target module by path (its folder on sys.path, as when run as a script)."""
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_random(path: Path, seconds: int, artifacts: Path, seed: int) -> Result:
    """Feed `path`'s test_one_input its seeds, then mutations of them, for `seconds`."""
    result = Result(path.stem)
    started = time.monotonic()
    try:
        module = _load(path)
        seeds = list(getattr(module, "seed_inputs", lambda: [b""])()) or [b""]
    except Exception as e:  # the target itself does not import: report it, go on
        result.crashes = 1
        result.findings.append(f"import failed: {type(e).__name__}: {e}")
        result.seconds = time.monotonic() - started
        return result
    tokens = getattr(module, "TOKENS", harness.TOKENS)
    rng = random.Random(seed)
    pool, seen = list(seeds), set()
    deadline = started + seconds
    queue = iter(seeds)
    while time.monotonic() < deadline:
        data = next(queue, None)
        if data is None:
            data = (
                harness.mutate(rng.choice(pool), rng, tokens)
                if rng.random() < 0.9
                else rng.randbytes(64)
            )
        result.executions += 1
        try:
            module.test_one_input(data)
        except Exception as e:  # a finding: keep the input, go on
            digest = hashlib.sha1(data).hexdigest()
            if digest not in seen:
                seen.add(digest)
                result.crashes += 1
                crash = artifacts / f"{path.stem}-crash-{digest}"
                crash.write_bytes(data)
                (artifacts / f"{crash.name}.txt").write_text(traceback.format_exc())
                result.findings.append(f"{crash}: {type(e).__name__}: {str(e)[:120]}")
            continue
        if len(pool) < 512 and rng.random() < 0.02:
            pool.append(data)
    result.seconds = time.monotonic() - started
    return result


def table(results: list[Result]) -> str:
    """target | seconds | executions | exec/s | crashes."""
    rows = [("target", "seconds", "executions", "exec/s", "crashes")]
    for r in results:
        rows.append(
            (r.target, f"{r.seconds:.0f}", str(r.executions), f"{r.per_second:.0f}", str(r.crashes))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _atheris_available() -> bool:
    return importlib.util.find_spec("atheris") is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=600, help="per target (default 600)")
    parser.add_argument(
        "--engine",
        choices=("auto", "atheris", "random"),
        default="auto",
        help="atheris (libFuzzer, coverage-guided), random (in-process mutations, no atheris), "
        "or auto: atheris when installed (default)",
    )
    parser.add_argument("--targets", nargs="*", help="names, e.g. json_tensor fuzz_v2_rest")
    parser.add_argument("--artifacts", type=Path, help="where crash inputs and logs go")
    parser.add_argument("--seed", type=int, default=0, help="random engine's seed")
    args = parser.parse_args(argv)
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if _atheris_available() else "random"
    elif engine == "atheris" and not _atheris_available():
        parser.error("atheris is not installed (pip install .[fuzz]); try --engine random")
    artifacts = args.artifacts or Path(tempfile.mkdtemp(prefix="fuzz-run-"))
    artifacts.mkdir(parents=True, exist_ok=True)
    results = []
    for path in targets(args.targets):
        print(f"{path.stem}: {args.seconds} s ({engine})", flush=True)
        if engine == "atheris":
            result = run_atheris(path, args.seconds, artifacts.resolve())
        else:
            result = run_random(path, args.seconds, artifacts, args.seed)
        results.append(result)
        for finding in result.findings:
            print(f"  {finding}", flush=True)
    print()
    print(table(results))
    print(f"\nengine: {engine}; artifacts and logs: {artifacts}")
    return 1 if any(r.crashes for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
