"""`zoo generate`: complete prompts with a trained language model (a run or an export).

    zoo generate --model-dir runs/gpt --prompt "ROMEO:" --max-new-tokens 200 \
        --temperature 0.8 --top-k 40 --seed 1

It serves any family whose export has a `generate` signature of this contract (GPT's is
the one today):

    generate   prompt [N] string, max_new_tokens [N] int32, temperature [N] float32,
               top_k [N] int32, top_p [N] float32, seed [N] int32, stop [N] string
               -> completion [N] string (the text after each prompt)

A run directory's model is wrapped by its recipe's `export`, the module the SavedModel is
written from, so `zoo generate`, the Python API below and the SavedModel's `generate`
signature run one traced loop and give the same text for the same seed. The signature
checks its inputs itself; its messages come back as `ValueError`s here.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from training.export_module import ExportModule


def load_module(model_dir: str | Path, use_cache: bool = True) -> ExportModule:
    """The export module of a trained run directory (best, else newest checkpoint).

    `use_cache=False` asks a model with a key/value cache to recompute its window at every
    step instead (for checks and benchmarks).
    """
    from training.export import load_trained
    from training.recipe import get_recipe

    model, run_info = load_trained(model_dir)
    recipe = get_recipe(run_info["model"])
    options = {}
    if not use_cache:
        if "use_cache" not in inspect.signature(recipe.export).parameters:
            raise ValueError(f"--no-cache: {run_info['model']} has no cache to turn off")
        options["use_cache"] = False
    module = recipe.export(model, run_info["config"], run_info["assets"], **options)
    if not callable(getattr(module, "generate", None)):
        raise ValueError(
            f"{model_dir} holds a {run_info['model']} run, whose export has no `generate` "
            "signature (prompt -> completion)"
        )
    return module


def generate_text(
    module,
    prompts: list[str],
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    stop: str = "",
) -> list[str]:
    """Completions (without the prompts) of `prompts`: the Python API of generation.

    `module` is an export module (`load_module`) or a loaded SavedModel
    (`tf.saved_model.load`). Out-of-range settings raise ValueError with the signature's
    message.
    """
    from serving.errors import error_summary

    n = len(prompts)
    args = dict(
        prompt=tf.constant(prompts, tf.string, [n]),
        max_new_tokens=tf.fill([n], np.int32(max_new_tokens)),
        temperature=tf.fill([n], np.float32(temperature)),
        top_k=tf.fill([n], np.int32(top_k)),
        top_p=tf.fill([n], np.float32(top_p)),
        seed=tf.fill([n], np.int32(seed)),
        stop=tf.fill([n], stop),
    )
    fn = module.generate if isinstance(module, ExportModule) else module.signatures["generate"]
    try:
        result = fn(**args)
    except tf.errors.InvalidArgumentError as err:
        message = error_summary(err.message) or err.message
        check = re.match(r"assertion failed: \[(.*?)\] \[Condition", message)  # its message
        raise ValueError((check.group(1) if check else message).strip()) from None
    return [c.decode("utf-8", errors="replace") for c in result["completion"].numpy()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="zoo generate", description="Complete prompts with a trained language model."
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-dir", help="a training run directory (zoo train gpt ...)")
    src.add_argument("--saved-model", help="an exported version directory (zoo export ...)")
    p.add_argument("--prompt", action="append", help="prompt text (repeat for a batch)")
    p.add_argument("--num-samples", type=int, default=1, help="samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=40, help="0 = all tokens")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling; 1 = off")
    p.add_argument("--seed", type=int, default=0, help="same seed, same text")
    p.add_argument("--stop", default="", help="stop before this string (at most 16 chars)")
    p.add_argument("--no-cache", action="store_true", help="recompute the window every step")
    return p


def main(argv: list[str]) -> int:
    """Entry point of `zoo generate`; returns the exit status."""
    args = build_parser().parse_args(argv)
    prompts = args.prompt or [""]
    try:
        if args.num_samples < 1:
            raise ValueError("--num-samples must be >= 1")
        if args.saved_model:
            if args.no_cache:
                raise ValueError("--no-cache applies to --model-dir only")
            module = tf.saved_model.load(args.saved_model)
            if "generate" not in module.signatures:
                raise ValueError(f"{args.saved_model} has no `generate` signature")
        else:
            module = load_module(args.model_dir, use_cache=not args.no_cache)
        for sample in range(args.num_samples):
            start = time.perf_counter()
            completions = generate_text(
                module,
                prompts,
                args.max_new_tokens,
                args.temperature,
                args.top_k,
                args.top_p,
                args.seed + sample,
                args.stop,
            )
            seconds = time.perf_counter() - start
            for prompt, completion in zip(prompts, completions, strict=True):
                print(prompt + completion)
                print("---------------")
            print(
                f"[{len(prompts)} x {args.max_new_tokens} tokens in {seconds:.2f} s]",
                file=sys.stderr,
            )
    except (ValueError, FileNotFoundError) as err:
        print(f"zoo generate: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
