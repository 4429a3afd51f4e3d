"""Choose a tf.distribute strategy: auto | default | one_device | mirrored | multi_worker | tpu."""

from __future__ import annotations

import json
import os

import tensorflow as tf

STRATEGIES = ("auto", "default", "one_device", "mirrored", "multi_worker", "tpu")


def _tf_config_workers() -> int:
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON: {err}") from err
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def _tpu_strategy(tpu: str | None) -> tf.distribute.Strategy:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def make_strategy(name: str = "auto", tpu: str | None = None) -> tf.distribute.Strategy:
    """The strategy named `name`.

    `auto` picks, in order: TPU when `tpu` (or $TPU_NAME) resolves; MultiWorkerMirrored
    when TF_CONFIG lists more than one worker; Mirrored over all GPUs when there are several;
    OneDevice on the GPU when there is one; else the default strategy.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    # Collective ops must be configured before anything initialises the TF context
    # (listing devices does): decide on multi-worker first.
    if name == "multi_worker" or (
        name == "auto" and not (tpu or os.environ.get("TPU_NAME")) and _tf_config_workers() > 1
    ):
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        tpu = tpu or os.environ.get("TPU_NAME")
        if tpu:
            try:
                return _tpu_strategy(tpu)
            except (ValueError, tf.errors.OpError) as err:
                print(f"[strategy] TPU {tpu!r} did not resolve ({err}); trying other devices")
        if _tf_config_workers() > 1:
            return tf.distribute.MultiWorkerMirroredStrategy()
        if len(gpus) > 1:
            return tf.distribute.MirroredStrategy()
        if len(gpus) == 1:
            return tf.distribute.OneDeviceStrategy(gpus[0].name)
        return tf.distribute.get_strategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    return _tpu_strategy(tpu)


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """True for strategies whose replicas live in several processes."""
    return bool(getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)())


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True where this process should write checkpoints, logs and metrics."""
    if not is_multi_worker(strategy):
        return True
    resolver = strategy.cluster_resolver
    return resolver.task_type in (None, "chief") or (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict()
    )


def split_cpu(n: int = 2) -> None:
    """Expose the CPU as `n` logical devices (for testing distribution on one machine).

    Must run before TensorFlow initialises its devices.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
    )
