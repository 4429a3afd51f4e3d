"""TF_CONFIG for a multi-worker run from a Kubernetes Indexed Job's completion index.

An Indexed Job numbers its pods 0..N-1 (env JOB_COMPLETION_INDEX) and, with a headless
Service named in the pod template's `subdomain`, gives pod i the stable address
`<job>-<i>.<service>`. This module turns those into the TF_CONFIG that
MultiWorkerMirroredStrategy reads, then replaces itself with the command after `--`:

    python -m training.tf_config -- zoo train cifar_convnet --model-dir /runs/c ...

The workers, in index order, are $TFZOO_WORKERS (comma-separated host:port) when set,
else `<$TFZOO_JOB_NAME>-<i>.<$TFZOO_SERVICE>:<$TFZOO_PORT>` for i < $TFZOO_NUM_WORKERS
(port 2222 by default). Worker 0 is the chief (it writes checkpoints and metrics).
A missing or invalid setting exits with status 2 and a message, before TensorFlow starts.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence

#: set by Kubernetes in every pod of an Indexed Job
INDEX_ENV = "JOB_COMPLETION_INDEX"
DEFAULT_PORT = 2222
#: exit status of a configuration error (the Job's podFailurePolicy fails the Job on it)
USAGE_ERROR = 2


class ConfigError(ValueError):
    """The environment does not describe a multi-worker cluster."""


def _require(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"${name} is not set")
    return value


def _positive_int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    raw = env.get(name, "").strip() or (str(default) if default is not None else "")
    if not raw:
        raise ConfigError(f"${name} is not set")
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
        raise ConfigError(f"${name} must be a positive integer, not {raw!r}")
    return int(raw)


def worker_addresses(env: Mapping[str, str]) -> list[str]:
    """The workers' host:port addresses, in completion-index order."""
    listed = env.get("TFZOO_WORKERS", "").strip()
    if listed:
        workers = [w.strip() for w in listed.split(",")]
        bad = [
            w for w in workers if w.rpartition(":")[0] == "" or not w.rpartition(":")[2].isdigit()
        ]
        if bad:
            raise ConfigError(f"$TFZOO_WORKERS entries must be host:port, not {bad}")
        return workers
    job, service = _require(env, "TFZOO_JOB_NAME"), _require(env, "TFZOO_SERVICE")
    count = _positive_int(env, "TFZOO_NUM_WORKERS")
    port = _positive_int(env, "TFZOO_PORT", DEFAULT_PORT)
    return [f"{job}-{i}.{service}:{port}" for i in range(count)]


def completion_index(env: Mapping[str, str], num_workers: int) -> int:
    """This pod's index from $JOB_COMPLETION_INDEX, checked against the number of workers."""
    raw = env.get(INDEX_ENV, "").strip()
    if not raw:
        raise ConfigError(f"${INDEX_ENV} is not set (run as a Kubernetes Indexed Job)")
    if not (raw.isascii() and raw.isdigit()) or int(raw) >= num_workers:
        raise ConfigError(f"${INDEX_ENV}={raw!r} is not an index of the {num_workers} workers")
    return int(raw)


def build_tf_config(workers: Sequence[str], index: int) -> dict:
    """TF_CONFIG (as a dict) for worker `index` of the cluster `workers`."""
    if not 0 <= index < len(workers):
        raise ConfigError(f"worker index {index} is outside the {len(workers)} workers")
    return {"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": index}}


def tf_config_from_env(env: Mapping[str, str]) -> dict:
    """TF_CONFIG (as a dict) for this pod, from the environment described above."""
    workers = worker_addresses(env)
    return build_tf_config(workers, completion_index(env, len(workers)))


def main(argv: Sequence[str] | None = None) -> int:
    """Set TF_CONFIG from the environment and exec the command after `--`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print("usage: python -m training.tf_config -- COMMAND [ARG...]", file=sys.stderr)
        return USAGE_ERROR
    try:
        config = tf_config_from_env(os.environ)
    except ConfigError as err:
        print(f"[tf_config] {err}", file=sys.stderr)
        return USAGE_ERROR
    os.environ["TF_CONFIG"] = json.dumps(config)
    workers = config["cluster"]["worker"]
    print(f"[tf_config] worker {config['task']['index']} of {len(workers)}: {','.join(workers)}")
    sys.stdout.flush()
    try:
        os.execvp(args[0], args)  # returns only on failure
    except OSError as err:
        print(f"[tf_config] cannot run {args[0]!r}: {err}", file=sys.stderr)
    return 127


if __name__ == "__main__":
    sys.exit(main())
