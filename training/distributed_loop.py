"""A distributed training loop for strategies where Keras 3 `fit` breaks.

`model.fit` under MultiWorkerMirroredStrategy fails in Keras 3 (keras-team/keras #20585,
#20329: "Attempt to convert a value (PerReplica:{...}) ... to a Tensor"). This loop runs the
model's own `train_step` / `test_step` (so loss scaling, optimizer, metrics are exactly
those of `fit`) under `strategy.run` over a distributed dataset, and drives the same
Keras callbacks (progress bar, checkpoints, TensorBoard).
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _first_replica(logs):
    """Metric results are synchronised; take the values of the first local replica."""
    strategy = tf.distribute.get_strategy()
    return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], logs)


def _step_count(dataset: tf.data.Dataset, steps: int | None) -> int:
    """Steps per pass: all batches but the last, which may be short.

    Collective ops pair up across workers by trace order: a worker that meets a short last
    batch retraces its step function and the workers' collectives stop matching (the run
    fails with "Collective instance ... expected type"). Skipping it keeps them in step.
    """
    if steps:
        return int(steps)
    cardinality = int(dataset.cardinality())
    if cardinality < 0:
        raise ValueError("A repeating or unknown-size dataset needs steps_per_epoch")
    return max(cardinality - 1, 1)


def evaluate_dataset(
    model: keras.Model,
    dataset: tf.data.Dataset,
    steps: int | None = None,
) -> dict[str, float]:
    """`model.evaluate(..., return_dict=True)` that also works under multi-worker strategies.

    Under multi-worker, the last batch is left out (see `_step_count`).
    """
    from training.strategy import is_multi_worker

    strategy = model.distribute_strategy
    if not is_multi_worker(strategy):
        results = model.evaluate(dataset, steps=steps, return_dict=True, verbose=0)
        return {k: float(v) for k, v in results.items()}

    @tf.function
    def test_step(iterator):
        return _first_replica(strategy.run(model.test_step, args=(next(iterator),)))

    for metric in model.metrics:
        metric.reset_state()
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    logs = {}
    for _ in range(_step_count(dataset, steps)):
        logs = test_step(iterator)
    return {k: float(v) for k, v in logs.items()}


def distributed_fit(
    model: keras.Model,
    strategy: tf.distribute.Strategy,
    train: tf.data.Dataset,
    *,
    epochs: int,
    initial_epoch: int = 0,
    steps_per_epoch: int | None = None,
    validation_data: tf.data.Dataset | None = None,
    validation_steps: int | None = None,
    callbacks: list[keras.callbacks.Callback] = (),
    verbose: int = 1,
) -> keras.callbacks.History:
    """Like `model.fit`, for any tf.distribute strategy (multi-worker included)."""
    steps = _step_count(train, steps_per_epoch)
    history = keras.callbacks.History()
    callback_list = keras.callbacks.CallbackList(
        list(callbacks) + [history],
        add_progbar=verbose != 0,
        model=model,
        epochs=epochs,
        steps=steps,
        verbose=verbose,
    )
    dist_train = strategy.experimental_distribute_dataset(train)

    @tf.function
    def train_step(iterator):
        return _first_replica(strategy.run(model.train_step, args=(next(iterator),)))

    model.stop_training = False
    callback_list.on_train_begin()
    train_iter = iter(dist_train)
    logs = {}
    for epoch in range(initial_epoch, epochs):
        for metric in model.metrics:
            metric.reset_state()
        callback_list.on_epoch_begin(epoch)
        if steps_per_epoch is None and epoch > initial_epoch:
            train_iter = iter(dist_train)  # finite dataset: one pass per epoch
        for step in range(steps):
            callback_list.on_train_batch_begin(step)
            logs = {k: float(v) for k, v in train_step(train_iter).items()}
            callback_list.on_train_batch_end(step, logs)
        epoch_logs = dict(logs)
        if validation_data is not None:
            val_logs = evaluate_dataset(model, validation_data, validation_steps)
            epoch_logs.update({f"val_{k}": v for k, v in val_logs.items()})
        callback_list.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return history
