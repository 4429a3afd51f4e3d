"""Where and how a run trained, as the framework itself reports it (run.json's `training`).

Every start or resume of `zoo train` that trains at least one epoch adds a segment, on
whichever backend and machine it ran (TensorFlow here, JAX on a lent accelerator).
A resumed run may continue on another machine, so each segment carries its own
environment, and `seconds` sums the segments:

    "training": {
        "seconds": 12.8,
        "segments": [
            {
                "command": "zoo train cifar_convnet --preset tiny --model-dir runs/a",
                "epochs": [0, 1],        # epochs completed when it started and when it ended
                "seconds": 12.8,         # wall time of fit to the end of its last epoch
                "strategy": "_DefaultDistributionStrategy", "replicas": 1,
                "environment": {         # training_environment(); null: not recorded
                    "backend": "tensorflow",
                    "devices": [{"kind": "CPU", "name": null, "count": 1}],
                    "precision_policy": "float32",
                    "framework_versions": {"keras": "3.x.y", "tensorflow": "2.x.y"},
                },
            }
        ],
    }

Nothing here is inferred: a fact the framework does not report is null, and a segment
whose environment was not recorded (a run started before this record existed, or a device
run that did not write one) says so with `"environment": null`.
"""

from __future__ import annotations

import importlib
import shlex
import sys
from typing import Any

#: TensorFlow's bookkeeping device beside TPU cores: not a device that computes
_NOT_COMPUTE = {"TPU_SYSTEM"}


def training_environment(model: Any = None) -> dict[str, Any]:
    """The backend, devices, dtype policy and framework versions of this process.

    `devices` lists each distinct (kind, name) with its count: `jax.devices()` under JAX
    (kind from the platform, name its `device_kind`), `tf.config.list_logical_devices()`
    under TensorFlow (a GPU named by `get_device_details`; CPUs and TPUs have no name
    there: null). `precision_policy` is `model`'s dtype policy when given (recipes set the
    global policy only while building the model), else the global one.
    """
    import keras

    backend = keras.backend.backend()
    policy = model.dtype_policy if model is not None else keras.config.dtype_policy()
    if backend == "jax":
        devices = _jax_devices()
    elif backend == "tensorflow":
        devices = _tensorflow_devices()
    else:
        devices = []  # not reported here for other backends: recorded as none, not guessed
    versions = {"keras": keras.__version__}
    try:
        versions[backend] = importlib.import_module(backend).__version__
    except (ImportError, AttributeError):
        pass
    return {
        "backend": backend,
        "devices": devices,
        "precision_policy": policy.name,
        "framework_versions": versions,
    }


def _counted(pairs: list[tuple[str, str | None]]) -> list[dict[str, Any]]:
    """[{"kind", "name", "count"}] for each distinct (kind, name), in first-seen order."""
    counts: dict[tuple[str, str | None], int] = {}
    for pair in pairs:
        counts[pair] = counts.get(pair, 0) + 1
    return [{"kind": k, "name": n, "count": c} for (k, n), c in counts.items()]


def _jax_devices() -> list[dict[str, Any]]:
    import jax

    return _counted([(d.platform.upper(), d.device_kind) for d in jax.devices()])


def _tensorflow_devices() -> list[dict[str, Any]]:
    import tensorflow as tf

    logical = [d for d in tf.config.list_logical_devices() if d.device_type not in _NOT_COMPUTE]
    physical = tf.config.list_physical_devices("GPU")
    gpu_names = [tf.config.experimental.get_device_details(d).get("device_name") for d in physical]
    logical_gpus = [d for d in logical if d.device_type == "GPU"]

    def name(device: Any) -> str | None:
        if device.device_type != "GPU":
            return None
        if len(logical_gpus) == len(gpu_names):  # one logical device per physical GPU
            return gpu_names[logical_gpus.index(device)]
        return gpu_names[0] if len(set(gpu_names)) == 1 else None  # split GPUs, one model

    return _counted([(d.device_type, name(d)) for d in logical])


def command_line() -> str:
    """This process's command line exactly as it was started (`sys.orig_argv`): the command
    a segment records when `train.run` is called from Python rather than from `zoo train`."""
    return shlex.join(sys.orig_argv)


def start_segment(
    training: dict[str, Any] | None,
    *,
    command: str,
    first_epoch: int,
    environment: dict[str, Any] | None,
    **facts: Any,
) -> dict[str, Any]:
    """`training` (run.json's record, None for a new run) with a new segment from
    `first_epoch`; its `facts` (e.g. strategy, replicas) are stored with it. A run resumed
    from epochs that no segment recorded (started before this record existed) gets a
    segment of unknown environment for them first, so no card claims them."""
    segments = [dict(s) for s in (training or {}).get("segments", [])]
    recorded = max((s["epochs"][1] for s in segments), default=0)
    if first_epoch > recorded:
        segments.append(
            {
                "command": None,
                "epochs": [recorded, first_epoch],
                "seconds": None,
                "environment": None,
            }
        )
    segments.append(
        {
            "command": command,
            "epochs": [first_epoch, first_epoch],
            "seconds": 0.0,
            **facts,
            "environment": environment,
        }
    )
    return {"seconds": total_seconds(segments), "segments": segments}


def end_epoch(training: dict[str, Any], epochs_completed: int, seconds: float) -> None:
    """Update the last segment in place: `epochs_completed` so far, `seconds` of fit."""
    segment = training["segments"][-1]
    segment["epochs"] = [segment["epochs"][0], epochs_completed]
    segment["seconds"] = seconds
    training["seconds"] = total_seconds(training["segments"])


def total_seconds(segments: list[dict[str, Any]]) -> float | None:
    """The segments' seconds summed; None when a segment's were not recorded."""
    seconds = [s.get("seconds") for s in segments]
    return None if any(s is None for s in seconds) else float(sum(seconds))
