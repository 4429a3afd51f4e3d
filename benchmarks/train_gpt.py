"""GPT training speed: milliseconds per iteration with and without XLA, in one process.

Same preset (default `baby`: nanoGPT's CPU configuration, batch 12, context 64), same data
pipeline (random windows of tiny Shakespeare), same optimizer. The machines here are shared
and noisy, so the contenders are interleaved: each round trains `--steps` iterations of
every contender in turn, and the table reports the median over rounds (round 1, with tracing
and compilation, is excluded).

Contenders:
- baseline: `model.fit` as Keras compiles it by default on a CPU-only machine (a
  tf.function graph, no XLA);
- XLA: the same with `jit_compile=True`, which is what `zoo train gpt` uses (the recipe's
  "auto"), also with 25 steps per execution;
- XLA under the `mixed_bfloat16` policy (bfloat16 matmuls, float32 weights), which pays on a
  CPU with AVX512-BF16/AMX.

    python -m benchmarks.train_gpt --data-dir ../shared/data --steps 200 --rounds 4
    python -m benchmarks.train_gpt --preset shakespeare_char --steps 5 --rounds 3 \
        --contenders xla,xla_bf16
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from training.recipes.gpt import RECIPE  # noqa: E402
from zoo import registry  # noqa: E402


class StepClock(keras.callbacks.Callback):
    """Milliseconds per iteration between the first and the last batch end of a `fit` call,
    so that fit's per-call set-up (iterator, callbacks) is not counted."""

    def on_train_begin(self, logs=None):
        self.marks: list[tuple[int, float]] = []

    def on_train_batch_end(self, batch, logs=None):
        self.marks.append((batch, time.perf_counter()))

    def ms_per_iter(self) -> float:
        (b0, t0), (b1, t1) = self.marks[0], self.marks[-1]
        return 1000 * (t1 - t0) / max(b1 - b0, 1)


CONTENDERS = {  # key -> (name, jit_compile, steps per execution, dtype policy)
    "graph": ("tf.function graph, Keras' CPU default", False, 1, "float32"),
    "xla": ("XLA (zoo train gpt)", True, 1, "float32"),
    "xla25": ("XLA, 25 steps/execution", True, 25, "float32"),
    "xla_bf16": ("XLA, mixed_bfloat16", True, 1, "mixed_bfloat16"),
    "graph_bf16": ("tf.function graph (oneDNN), mixed_bfloat16", False, 1, "mixed_bfloat16"),
}


def contenders(preset: str, data_dir: str, keys: list[str]) -> dict:
    """name -> function training `steps` iterations of that contender (the first is the
    baseline of the table's ratios)."""
    runs = {}
    for key in keys:
        name, jit, spe, policy = CONTENDERS[key]
        config = {**registry.get("gpt").config(preset), "dtype_policy": policy}
        batch = int(config["batch_size"])
        keras.utils.set_random_seed(1337)
        data = RECIPE.load_data(config, data_dir, batch)
        model = RECIPE.build_model(config, data.assets)
        RECIPE.compile(model, config, data, jit_compile=jit)
        model.steps_per_execution = spe
        train = data.train

        def fit(steps: int, model=model, train=train) -> float:
            clock = StepClock()
            model.fit(train, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[clock])
            return clock.ms_per_iter()

        runs[name] = fit
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--preset", default="baby")
    parser.add_argument("--steps", type=int, default=200, help="iterations per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--contenders",
        default="graph,xla,xla25,xla_bf16",
        help=f"comma-separated, the first is the baseline; of {', '.join(CONTENDERS)}",
    )
    args = parser.parse_args()
    runs = contenders(args.preset, args.data_dir, args.contenders.split(","))
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, fit in runs.items():
            times[name].append(fit(args.steps))
    medians = {name: statistics.median(t[1:] or t) for name, t in times.items()}
    base = next(iter(medians.values()))
    print(
        f"\nGPT `{args.preset}` training, {args.steps} iterations per round, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"median of rounds 2..{args.rounds}"
    )
    print(f"{'contender':50s} {'ms/iter':>8s} {'speed-up':>9s}   per round")
    for name, ms in medians.items():
        rounds = " ".join(f"{t:.0f}" for t in times[name])
        if ms <= 0:  # one execution per round: no interval to time
            print(f"{name:50s} {'n/a':>8s} {'':>9s}   needs --steps of two executions or more")
            continue
        print(f"{name:50s} {ms:8.1f} {base / ms:8.2f}x   {rounds}")


if __name__ == "__main__":
    main()
