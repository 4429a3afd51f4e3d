"""Fine-tuning against its baselines, for every task: one table, all runs in one invocation.

For each task (`training/finetune_compare.py`): the shipped artifact adapted to a slice of
new data and not trained ("pretrained"), the same model trained from scratch on the slice,
and the artifact fine-tuned on it, for the same epochs (GPT: optimizer steps), scored by the
recipe's evaluation on the slice's held-out part. Ratios are against the scratch run.

    python -m benchmarks.finetune --data-dir ../shared/data
    python -m benchmarks.finetune --tasks tagging --size tagging=1000 --epochs tagging=3
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import catalogue  # noqa: E402
from training.finetune_compare import (  # noqa: E402
    ARMS,
    COMPARISONS,
    finetuning_wins,
    run_comparison,
    score,
)

#: task -> (slice size, epochs, GPT steps): larger than the tests' slices
DEFAULTS = {
    "images": (100, 5, None),
    "tagging": (1000, 3, None),
    "translation": (600, 3, None),
    "language_model": (4000, 1, 300),
}


def _per_task(pairs: list[str], cast) -> dict:
    out = {}
    for pair in pairs:
        task, _, value = pair.partition("=")
        if task not in DEFAULTS:
            raise SystemExit(f"unknown task {task!r}; one of {', '.join(DEFAULTS)}")
        out[task] = cast(value)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the comparisons and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--tasks", nargs="*", default=list(DEFAULTS))
    parser.add_argument("--size", nargs="*", default=[], help="task=N (slice size)")
    parser.add_argument("--epochs", nargs="*", default=[], help="task=N")
    parser.add_argument("--steps", nargs="*", default=[], help="language_model=N")
    args = parser.parse_args(argv)
    sizes, epochs, steps = (_per_task(v, int) for v in (args.size, args.epochs, args.steps))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for task in args.tasks:
            size, n_epochs, n_steps = DEFAULTS[task]
            size, n_epochs = sizes.get(task, size), epochs.get(task, n_epochs)
            n_steps = steps.get(task, n_steps)
            comparison = COMPARISONS[task]
            parent, _ = catalogue.run_dir_for(comparison.artifact, work / "cache", progress=False)
            start = time.perf_counter()
            results = run_comparison(
                task, parent, Path(args.data_dir), work / task,
                size=size, epochs=n_epochs, steps=n_steps,
            )  # fmt: skip
            seconds = time.perf_counter() - start
            scores = score(task, results)
            budget = f"{n_steps} steps" if n_steps else f"{n_epochs} epochs"
            rows.append((task, comparison, f"{size} / {budget}", scores, seconds))
    print("| task | artifact | slice / budget | metric | pretrained | scratch | fine-tuned "
          "| fine-tuned / scratch | wins | seconds |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for task, comparison, budget, scores, seconds in rows:
        values = " | ".join(f"{scores[arm]:.4g}" for arm in ARMS)
        ratio = scores["finetuned"] / scores["scratch"] if scores["scratch"] else float("inf")
        direction = "higher" if comparison.higher_is_better else "lower"
        print(f"| {task} | {comparison.artifact} | {budget} | {comparison.metric} "
              f"({direction} is better) | {values} | {ratio:.2f}x "
              f"| {'yes' if finetuning_wins(task, scores) else 'NO'} | {seconds:.0f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
