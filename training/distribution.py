"""Where a run's replicas live, on any Keras backend: one interface over `tf.distribute`
(TensorFlow) and `keras.distribution` (JAX), so that `training.train` never asks which.

    TensorFlow   `training.strategy.make_strategy`: one device, Mirrored, MultiWorkerMirrored
                 or TPU, and the model built and compiled under the strategy's scope.
    JAX          `keras.distribution.DataParallel` over every device of every process (the
                 global batch split across them) when there are several, else the one
                 device. Several processes join through `keras.distribution.initialize`
                 when `KERAS_DISTRIBUTION_JOB_ADDRESSES` (or JAX's own coordinator
                 variables) say so.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import keras


@dataclass
class Placement:
    """A run's distribution: its scope, replica count, name, and whether this process is
    the chief (the one writer of the run directory); under `keras.distribution`, this
    process's index among the `processes` that train together."""

    name: str
    replicas: int
    chief: bool
    strategy: Any = None  # the tf.distribute strategy (TensorFlow), else None
    multi_worker: bool = False
    process: int = 0
    processes: int = 1

    def scope(self) -> contextlib.AbstractContextManager:
        """The context in which the model is built and compiled."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()


def _jax_placement(name: str) -> Placement:
    import jax

    if name not in ("auto", "default", "one_device", "mirrored", "multi_worker", "data_parallel"):
        raise ValueError(f"strategy {name!r} is TensorFlow's; under JAX use auto or data_parallel")
    joins = os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES") or os.environ.get(
        "JAX_COORDINATOR_ADDRESS"
    )
    # before any other JAX call: jax.distributed must start before the backend does
    if joins and not jax.distributed.is_initialized() and name != "one_device":
        keras.distribution.initialize()
    devices = jax.devices()
    chief = jax.process_index() == 0
    if name in ("default", "one_device") or len(devices) == 1:
        keras.distribution.set_distribution(None)  # not an earlier run's, in this process
        return Placement("OneDevice", 1, chief)
    # the prepared arrays give each process its share (`WholeReplicaBatches`), not Keras
    distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
    keras.distribution.set_distribution(distribution)
    return Placement(
        "DataParallel",
        len(devices),
        chief,
        multi_worker=jax.process_count() > 1,
        process=jax.process_index(),
        processes=jax.process_count(),
    )


def _from_strategy(strategy: Any) -> Placement:
    from training.strategy import is_chief, is_multi_worker

    return Placement(
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
        is_chief(strategy),
        strategy=strategy,
        multi_worker=is_multi_worker(strategy),
    )


def placement(name: str = "auto", tpu: str | None = None, strategy: Any = None) -> Placement:
    """The placement named `name` on the current backend (`strategy`: a ready tf.distribute
    strategy, TensorFlow only)."""
    backend = keras.backend.backend()
    if strategy is not None:
        return _from_strategy(strategy)
    if backend == "tensorflow":
        from training.strategy import make_strategy

        return _from_strategy(make_strategy(name, tpu))
    if backend == "jax":
        return _jax_placement(name)
    if name not in ("auto", "default", "one_device"):
        raise ValueError(f"{backend} runs on one device here; strategy {name!r} needs TF or JAX")
    return Placement("OneDevice", 1, True)


def accelerator_present() -> bool:
    """Whether the backend sees a GPU or TPU (mixed precision pays off there, not on a CPU)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return any(d.platform in ("gpu", "tpu") for d in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False
