"""`zoo generate`: sample text from a trained GPT run (or an exported SavedModel).

    zoo generate --model-dir runs/gpt --prompt "ROMEO:" --max-new-tokens 200 \
        --temperature 0.8 --top-k 40 --seed 1

The run directory's model is wrapped in the same `GenerationModule` the export writes, so
`zoo generate`, the Python API below and the SavedModel's `generate` signature run one
traced generation loop (with its key/value cache) and give the same text for the same seed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from training.recipes.gpt import MAX_NEW_TOKENS, GenerationModule, float32_copy


def load_module(model_dir: str | Path, use_cache: bool = True) -> GenerationModule:
    """The generation module of a trained run directory (newest checkpoint)."""
    from training.data.char_text import CharVocab
    from training.export import load_trained

    model, run_info = load_trained(model_dir)
    if run_info["model"] != "gpt":
        raise ValueError(f"{model_dir} holds a {run_info['model']} run, not a gpt language model")
    config, assets = run_info["config"], run_info["assets"]
    model = float32_copy(model, config, assets)
    return GenerationModule(model, CharVocab.from_assets(assets), config, use_cache=use_cache)


def validate(
    max_new_tokens: int, temperature: float, top_k: int, top_p: float, stop: str = ""
) -> None:
    """Raise ValueError with a readable message for out-of-range sampling settings."""
    from zoo.gpt.generation import STOP_MAX

    if not 0 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise ValueError(f"max_new_tokens must be in [0, {MAX_NEW_TOKENS}], got {max_new_tokens}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = all tokens), got {top_k}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if len(stop) > STOP_MAX:
        raise ValueError(f"stop must be at most {STOP_MAX} characters, got {len(stop)}")


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

    `module` is a `GenerationModule` or a loaded SavedModel (`tf.saved_model.load`).
    """
    validate(max_new_tokens, temperature, top_k, top_p, stop)
    n = len(prompts)
    fn = module["generate"] if isinstance(module, GenerationModule) else None
    args = dict(
        prompt=tf.constant(prompts, tf.string, [n]),
        max_new_tokens=tf.fill([n], np.int32(max_new_tokens)),
        temperature=tf.fill([n], np.float32(temperature)),
        top_k=tf.fill([n], np.int32(top_k)),
        top_p=tf.fill([n], np.float32(top_p)),
        seed=tf.fill([n], np.int32(seed)),
        stop=tf.fill([n], stop),
    )
    if fn is None:
        result = module.signatures["generate"](**args)
    else:
        result = fn(*args.values())
    return [c.decode("utf-8", errors="replace") for c in result["completion"].numpy()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="zoo generate", description="Sample text from a trained GPT language model."
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
        validate(args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.stop)
        if args.num_samples < 1:
            raise ValueError("--num-samples must be >= 1")
        if args.saved_model:
            if args.no_cache:
                raise ValueError("--no-cache applies to --model-dir only")
            module = tf.saved_model.load(args.saved_model)
        else:
            module = load_module(args.model_dir, use_cache=not args.no_cache)
    except (ValueError, FileNotFoundError) as err:
        print(f"zoo generate: error: {err}", file=sys.stderr)
        return 2
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
            f"[{len(prompts)} x {args.max_new_tokens} tokens in {seconds:.2f} s]", file=sys.stderr
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
