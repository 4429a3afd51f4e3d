"""`zoo train`: fit any registered model with checkpoints, resume, TensorBoard and metrics.

Run directory layout (`--model-dir`):
    run.json                 model, preset, config, data assets (vocabularies, class names),
                             the command, and `training`: each start or resume's
                             environment, epochs and seconds (`training.provenance`)
    checkpoints/ckpt-N.weights.h5   weights + optimizer state after epoch N (atomic)
    checkpoints/best.weights.h5     the best epoch by `checkpoint_monitor`, when configured
    history.json             per-epoch logs (survives resume)
    logs/                    TensorBoard
    metrics.json             final task metrics and training throughput
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import keras

from training import checkpoints, plateau, prepared, run_files
from training import provenance as training_provenance
from training.distribution import placement
from training.recipe import get_recipe
from training.sources import LoadSource, run_directory
from training.transfer import copy_weights


class Throughput(keras.callbacks.Callback):
    """Examples per second of training, per epoch (the first epoch includes tracing)."""

    def __init__(self, examples_per_step: int):
        super().__init__()
        self.examples_per_step = examples_per_step
        self.rates: list[float] = []
        self._steps = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start, self._steps = time.perf_counter(), 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._steps = batch + 1  # `batch` is the last step run (steps_per_execution > 1)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        seconds = time.perf_counter() - self._start
        self.rates.append(self._steps * self.examples_per_step / max(seconds, 1e-9))
        if logs is not None:
            logs["examples_per_sec"] = self.rates[-1]

    def steady_rate(self) -> float:
        """Mean rate over epochs after the first (all epochs when only one ran)."""
        rates = self.rates[1:] or self.rates
        return sum(rates) / len(rates) if rates else 0.0


class TrainingRecord(keras.callbacks.Callback):
    """Keeps run.json's `training` record (`training.provenance`) current: a segment for
    this start or resume when `fit` begins, then after every epoch its epochs completed
    and seconds of `fit` so far (wall time, validation included), so a run killed midway
    keeps the record of what it trained."""

    def __init__(self, run_dir: Path, first_epoch: int, command: str, **segment: Any):
        super().__init__()
        self.run_dir, self.first_epoch = run_dir, first_epoch
        self.command, self.segment = command, segment

    def _write(self) -> None:
        run_files.update_info(self.run_dir, training=self.record)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._start = time.perf_counter()
        self.record = training_provenance.start_segment(
            (run_files.read_info(self.run_dir) or {}).get("training"),
            command=self.command,
            first_epoch=self.first_epoch,
            **self.segment,
        )
        self._write()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        training_provenance.end_epoch(self.record, epoch + 1, time.perf_counter() - self._start)
        self._write()


def _prepared_config(spec, model_name: str, preset: str | None, source, overrides) -> tuple:
    """The preset and config of a run on prepared data: the prepared ones, with `overrides`
    (training settings) on top; an error when the data was prepared for another family or
    preset."""
    if source.family != model_name:
        raise ValueError(f"{source.path} holds {source.family} data, not {model_name}'s")
    if preset and preset != source.preset:
        raise ValueError(f"{source.path} was prepared for preset {source.preset}, not {preset}")
    base = spec.config(source.preset)
    prepared_changes = {k: v for k, v in source.config.items() if base.get(k) != v}
    return source.preset, spec.config(source.preset, **{**prepared_changes, **(overrides or {})})


def _whole_replica_batches(data, place, global_batch: int):
    """`data` with every PyDataset's batches cut to a multiple of the replica count, and
    this process's share of each where several processes train (`place`)."""
    import dataclasses

    from training.array_datasets import WholeReplicaBatches

    replicas = place.replicas
    if global_batch % replicas:
        raise ValueError(f"a global batch of {global_batch} does not split over {replicas} devices")
    splits = {
        name: WholeReplicaBatches(split, replicas, place.process, place.processes)
        for name in ("train", "val", "test")
        if isinstance(split := getattr(data, name), keras.utils.PyDataset)
    }
    return dataclasses.replace(data, **splits)


def _compile(recipe, model, config, data, jit_compile) -> None:
    recipe.compile(model, config, data, jit_compile=jit_compile)
    checkpoints.build_optimizer_state(model)


def run(
    model_name: str,
    preset: str | None = None,
    model_dir: str | Path = "runs/model",
    data_dir: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    strategy: Any = "auto",
    overrides: dict[str, Any] | None = None,
    steps_per_epoch: int | None = None,
    tpu: str | None = None,
    jit_compile: bool | str = "auto",
    parent: str | Path | None = None,
    provenance: dict[str, Any] | None = None,
    steps_per_execution: int = 1,
    verbose: int = 1,
    seed: int | None = 0,
    load_source: LoadSource | None = None,
    data: str | Path | None = None,
) -> dict[str, Any]:
    """Train `model_name` and return the metrics written to `<model_dir>/metrics.json`.

    A run directory that already holds checkpoints is resumed from its newest complete
    epoch with the config it was started with (a different preset is an error).
    `parent` (a run directory) starts from its trained weights: fine-tuning. Its weights are
    copied strictly, except in the layers the recipe re-initialises for the new data.
    `provenance` (how the run was made: command line, data, parent artifact) is recorded in
    run.json from the start; a resumed run keeps what its first start recorded.
    Each start or resume that trains adds a segment to run.json's `training` record: its
    command (`provenance["command"]`, else this process's command line), the environment
    the framework reports (backend, devices, the model's dtype policy), and its epochs
    and seconds; `training.seconds` sums the segments (`training.provenance`).
    `steps_per_execution` runs that many training steps per call into the graph (less
    Python overhead per step; the progress bar and callbacks update less often).
    `seed` seeds Python, NumPy and TensorFlow: two runs of one command draw the same initial
    weights, data order, augmentation and dropout (TensorFlow's multi-threaded CPU kernels
    still sum gradients in varying order, so the runs differ in the last bits). It is
    recorded in run.json; a resumed run keeps the seed it started with. None: unseeded.
    `load_source` maps a source of trained weights that the config names (the captioner's
    `encoder_init`) to a loaded Keras model; None accepts run directories only
    (`training.sources.run_directory`). The catalogue's published NAME[@VERSION] need one
    that resolves them: `zoo train` passes `catalogue.load_model`'s.
    `data` (instead of `data_dir`) is a folder written by `zoo prepare`
    (`training.prepared`): the recipe's arrays, read without TensorFlow, so the run works
    on any Keras backend. Its preset, config and assets are the prepared ones (`overrides`
    may change training settings). `strategy` is a name (`training.distribution`: under
    JAX, `auto` is data parallelism over every device) or a tf.distribute strategy.
    """
    from zoo import registry

    spec = registry.get(model_name)
    recipe = get_recipe(model_name)
    model_dir = Path(model_dir)
    previous = run_files.read_info(model_dir)
    if data is not None and data_dir is not None:
        raise ValueError("pass prepared --data or a --data-dir, not both")
    source = prepared.read(data) if data is not None else None
    if source is not None:
        preset, config = _prepared_config(spec, model_name, preset, source, overrides)
    else:
        preset = preset or (previous or {}).get("preset") or spec.default_preset
        config = spec.config(preset, **(overrides or {}))
    if previous and (previous["model"], previous["config"]) != (model_name, config):
        raise ValueError(
            f"{model_dir} holds a run of {previous['model']} with another config; "
            "use a new --model-dir (or the same preset and settings to resume)"
        )
    epochs = int(epochs if epochs is not None else config.get("epochs", 1))
    place = placement(strategy, tpu) if isinstance(strategy, str) else placement(strategy=strategy)
    global_batch = int(batch_size or recipe.default_batch_size(config))
    if previous:
        seed = previous.get("seed")
    if seed is not None:  # before the data pipeline is built and the weights initialised
        keras.utils.set_random_seed(int(seed))
    assets = previous["assets"] if previous else None  # a resumed run keeps its vocabularies
    if source is not None:
        if parent:
            raise ValueError("fine-tuning reads --data-dir (the parent's vocabularies decide ids)")
        if assets is not None and assets != source.assets:
            raise ValueError(f"{model_dir} was trained on data with other assets than {data}")
        train_data = recipe.array_data(config, source, global_batch, training=True, seed=seed)
    else:
        train_data = recipe.load_data(
            config, data_dir, global_batch, training=True, assets=assets, load_source=load_source
        )
    if parent and assets is None:  # fine-tuning: the parent's vocabularies, extended
        parent_assets = run_files.read_info(parent)["assets"]
        assets = recipe.extend_assets(parent_assets, train_data.assets, config)
        if assets != train_data.assets:
            train_data = recipe.load_data(
                config,
                data_dir,
                global_batch,
                training=True,
                assets=assets,
                load_source=load_source,
            )
    assets = assets or train_data.assets
    if place.strategy is None and place.replicas > 1:  # keras.distribution: even shares
        train_data = _whole_replica_batches(train_data, place, global_batch)
    chief = place.chief
    if chief:
        run_info = {
            "model": model_name,
            "preset": preset,
            "config": config,
            "assets": assets,
            "seed": seed,
            **({"prepared_data": source.info.get("command") or str(data)} if source else {}),
        }
        kept = {k: v for k, v in (previous or {}).items() if k not in run_info}
        run_files.write_info(model_dir, {**run_info, **(provenance or {}), **kept})

    resume, history = checkpoints.resume_point(model_dir, repair=chief)
    with place.scope():
        model = recipe.build_model(config, assets)
        if parent and not resume:
            from training.export import load_trained

            # before compile: the trained layers, not the old optimizer state
            parent_model, parent_info = load_trained(parent)
            fresh = recipe.reinitialized_layers(
                model, config, parent_info["config"], assets, parent_info["assets"]
            )
            grown = copy_weights(
                parent_model, model, reinitialized=fresh, grown=recipe.grown_layers(model)
            )
            print(
                f"[train] starting from {parent}; re-initialised: {', '.join(fresh) or 'none'}; "
                f"new vocabulary rows in: {', '.join(grown) or 'none'}"
            )
        elif not resume:
            # e.g. a backbone from a trained run (init_from)
            recipe.initialize(model, config, load_source or run_directory)
        _compile(recipe, model, config, train_data, jit_compile)
        model.steps_per_execution = int(steps_per_execution)
    initial_epoch = 0
    if resume:
        initial_epoch, path = resume
        model.load_weights(path)
        print(f"[train] resuming from {path.name}: epoch {initial_epoch} of {epochs} completed")
    if hasattr(train_data.train, "set_epoch"):  # arrays: the order that epoch would have had
        train_data.train.set_epoch(initial_epoch)

    steps = steps_per_epoch or train_data.steps_per_epoch
    if isinstance(train_data.train, keras.utils.PyDataset) and not steps_per_epoch:
        steps = None  # its length is the epoch (Keras warns when told it again)
    throughput = Throughput(train_data.examples_per_step or global_batch)
    monitor = config.get("checkpoint_monitor")
    callbacks = [throughput, *recipe.callbacks(config), *plateau.from_config(config, history)]
    # last, so it sees (and records) every other callback's logs
    collective = place.multi_worker and place.strategy is None  # JAX across processes
    callbacks.append(
        checkpoints.EpochCheckpoint(model_dir, write=chief, monitor=monitor, collective=collective)
    )
    if chief:
        if keras.backend.backend() == "tensorflow":  # its summary writer is TensorFlow's
            callbacks.append(keras.callbacks.TensorBoard(str(model_dir / "logs")))
        callbacks.append(  # after the checkpoint: an epoch is recorded once it is saved
            TrainingRecord(
                model_dir,
                initial_epoch,
                (provenance or {}).get("command") or training_provenance.command_line(),
                strategy=place.name,
                replicas=place.replicas,
                environment=training_provenance.training_environment(model),
            )
        )
    start = time.perf_counter()
    if initial_epoch < epochs:
        fit_kwargs = dict(
            epochs=epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps,
            validation_data=train_data.val,
            validation_steps=(
                None
                if isinstance(train_data.val, keras.utils.PyDataset)
                else train_data.validation_steps
            ),
            callbacks=callbacks,
            verbose=verbose,
        )
        if place.multi_worker and place.strategy is not None:
            from training.distributed_loop import distributed_fit

            distributed_fit(model, place.strategy, train_data.train, **fit_kwargs)
        else:  # the data shuffles itself (tf.data, or the arrays' epoch order)
            model.fit(train_data.train, shuffle=False, **fit_kwargs)
    train_seconds = time.perf_counter() - start
    best = checkpoints.best_checkpoint(model_dir / "checkpoints") if monitor else None
    if best is not None:
        model.load_weights(best)
        print(f"[train] evaluating the best epoch by {monitor} ({best.name})")

    if source is not None:
        results = recipe.evaluate_arrays(model, config, train_data)
    else:
        results = recipe.evaluate(model, config, train_data)
    metrics = {
        "model": model_name,
        "preset": preset,
        "epochs": epochs,
        "resumed_from_epoch": initial_epoch,
        "global_batch_size": global_batch,
        "backend": keras.backend.backend(),
        "replicas": place.replicas,
        "strategy": place.name,
        "train_seconds_this_run": train_seconds,
        "examples_per_sec": throughput.steady_rate(),
        "history": run_files.read_history(model_dir),
        **results,
    }
    if chief:
        run_files.write_metrics(model_dir, metrics)
    return metrics
