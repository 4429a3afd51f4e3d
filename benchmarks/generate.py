"""Tokens per second of GPT generation with and without the key/value cache.

    .venv/bin/python -m benchmarks.generate [--presets baby shakespeare_char] [--tokens 256]
        [--model-dir runs/gpt_baby] [--batch 1] [--repeats 3]

Both paths run the same traced generation loop (`training.exports.gpt.GenerationModule`,
the code the SavedModel exports), greedy, from a one-character prompt: with the cache each
step feeds one token; without it each step recomputes the whole context window, as a model
without a cache must. Speed does not depend on the weights, so untrained presets are
measured unless --model-dir names a trained run. Prints one table with the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import string
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from training.data.char_vocab import CharVocab  # noqa: E402
from training.exports.gpt import GenerationModule  # noqa: E402

# 65 characters, the size of the tinyshakespeare vocabulary
_CHARS = tuple(sorted(set(string.ascii_letters + string.digits + " \n.,;:!?'&-$")))[:65]


def _modules(preset: str, model_dir: str | None):
    if model_dir:
        from tfzoo.verbs.generate import load_module

        cached, uncached = load_module(model_dir), load_module(model_dir, use_cache=False)
        return cached, uncached, f"{preset} (trained: {model_dir})"
    from zoo import registry

    vocab = CharVocab(_CHARS)
    model = registry.get("gpt").build(preset, vocab_size=vocab.size, dtype_policy="float32")
    return GenerationModule(model, vocab, {}), GenerationModule(model, vocab, {}, False), preset


def tokens_per_second(module, batch: int, tokens: int, repeats: int) -> float:
    """Median generated tokens per second (all rows) over `repeats` timed runs."""
    fn = module.generate
    args = [
        tf.fill([batch], "\n"),
        tf.fill([batch], tokens),
        tf.zeros([batch]),
        tf.zeros([batch], tf.int32),
        tf.ones([batch]),
        tf.zeros([batch], tf.int32),
        tf.fill([batch], ""),
    ]
    fn(*args)  # trace and warm up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(*args)["completion"].numpy()
        seconds = time.perf_counter() - start
        assert all(len(c.decode()) == tokens for c in out)
        rates.append(batch * tokens / seconds)
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["baby"])
    p.add_argument("--model-dir", help="a trained run (then --presets names it in the table)")
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    rows = []
    for preset in args.presets:
        cached, uncached, label = _modules(preset, args.model_dir)
        with_cache = tokens_per_second(cached, args.batch, args.tokens, args.repeats)
        without = tokens_per_second(uncached, args.batch, args.tokens, args.repeats)
        rows.append((label, cached.model.block_size, with_cache, without))

    print(f"\nGPT generation, {args.tokens} new tokens, batch {args.batch}, greedy, "
          f"median of {args.repeats} ({os.cpu_count()} CPU cores)")  # fmt: skip
    print(f"| {'model':<34} | context | cached tok/s | uncached tok/s | speed-up |")
    print(f"|{'-' * 36}|---------|--------------|----------------|----------|")
    for label, block, with_cache, without in rows:
        print(
            f"| {label:<34} | {block:>7} | {with_cache:>12.1f} | {without:>14.1f} "
            f"| {with_cache / without:>7.1f}x |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
