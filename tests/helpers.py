"""Test helpers shared by several test modules (not fixtures)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from training.data.image_folder import linked_subset

REPO_ROOT = Path(__file__).resolve().parents[1]


#: a split/class/image folder of symlinks to the first images of each class
small_image_folder = linked_subset


#: XLA_FLAGS for a JAX test subprocess on the CPU: XLA's LLVM optimisations cost more compile
#: time than they save on one-off calls (eager ops, a build's initializers, one train step)
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for child processes: quiet TF, repo on the path."""
    env = dict(os.environ)
    env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)}, **extra)
    return env


def zoo(
    *args: str, timeout: float = 600, check: bool = True, **env: str
) -> subprocess.CompletedProcess:
    """Run the `zoo` CLI in a subprocess and return the completed process."""
    proc = subprocess.run(
        [sys.executable, "-m", "tfzoo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(**env),
        cwd=REPO_ROOT,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"zoo {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def zoo_in_process(*args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    """Run the `zoo` CLI's `main` in this process (its stdout and stderr captured, `env` set
    while it runs): what `zoo` does, without a new interpreter importing TensorFlow again.
    Returns what `zoo` returns; `returncode` is main's exit status (argparse's on a usage
    error)."""
    import contextlib
    import io

    from tfzoo.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exit_:  # as the interpreter reports it
                code = 0 if exit_.code is None else exit_.code
                if not isinstance(code, int):
                    print(code, file=sys.stderr)
                    code = 1
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    proc = subprocess.CompletedProcess(["zoo", *args], code, out.getvalue(), err.getvalue())
    if check and proc.returncode != 0:
        raise AssertionError(f"zoo {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc
