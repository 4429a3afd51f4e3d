"""Autoregressive generation and scoring for `GPT`, in keras.ops only.

One implementation serves the Python API, `zoo generate` and the exported SavedModel (where
it is traced inside a `tf.function`, so the loop becomes a `tf.while_loop` with the key/value
cache as a loop variable).

Batching: prompts are right-padded to a common length and every row advances on one shared
time step `t`; a row whose prompt is longer than `t` copies its prompt token instead of
sampling, so rows of any lengths share one loop (keras-hub's approach).

Contexts longer than the model's window: the window starts at a multiple of `block_size // 2`
chosen from `t` alone (the smallest with at most `block_size` tokens of context); when it
moves, the cache is rebuilt with one forward pass over the new window. Each row therefore sees
the same windows whatever else is in its batch, and the uncached path (a full window forward
at every step) computes exactly the same function as the cached one.

Sampling is stateless and reproducible: Gumbel-max over a counter-based integer hash of
(seed, absolute position, token id), so the same prompt and seed give the same text in any
batch, on any backend, in or out of a graph.
"""

from __future__ import annotations

from keras import ops

#: longest stop sequence, in tokens
STOP_MAX = 16
_NEG = -1e9


def _shr(x, bits: int):
    """Logical right shift of int32 values (arithmetic shift, then clear the sign bits)."""
    return ops.bitwise_and(ops.right_shift(x, bits), (1 << (32 - bits)) - 1)


def _hash(x):
    """lowbias32 (C. Wellons), an avalanching 32-bit integer hash, on int32 with wraparound."""
    x = ops.bitwise_xor(x, _shr(x, 16))
    x = ops.multiply(x, ops.convert_to_tensor(0x7FEB352D, dtype="int32"))
    x = ops.bitwise_xor(x, _shr(x, 15))
    x = ops.multiply(x, ops.convert_to_tensor(0x846CA68B - (1 << 32), dtype="int32"))
    return ops.bitwise_xor(x, _shr(x, 16))


def _uniform(seed, t, vocab_size: int):
    """Uniform floats in (0, 1), [B, V], a function of (seed[b], t, token id) only."""
    key = _hash(ops.bitwise_xor(_hash(ops.cast(seed, "int32")), ops.cast(t, "int32")))
    ids = ops.arange(vocab_size, dtype="int32")
    bits = _hash(ops.bitwise_xor(key[:, None], _hash(ids + 0x3C6EF372)[None, :]))
    mantissa = ops.cast(_shr(bits, 8), "float32")  # 24 random bits
    return (mantissa + 0.5) / float(1 << 24)


def sample_logits(logits, temperature, top_k, top_p, seed, t):
    """One token per row from logits [B, V] (float32).

    Args:
        temperature: [B]; 0 means greedy (argmax).
        top_k: [B]; keep the k most likely tokens, 0 means all.
        top_p: [B]; keep the smallest set of most likely tokens whose probability reaches
            top_p (nucleus sampling), 1 means all.
        seed: [B] int; with `t` (the absolute position) it fixes the random draw.
    """
    vocab = ops.shape(logits)[-1]
    greedy = ops.argmax(logits, axis=-1)
    temperature = ops.cast(temperature, "float32")
    scaled = logits / ops.maximum(temperature, 1e-6)[:, None]

    top_k = ops.cast(top_k, "int32")
    k = ops.where(top_k > 0, ops.minimum(top_k, vocab), vocab)
    desc = ops.flip(ops.sort(scaled, axis=-1), axis=-1)
    kth = ops.take_along_axis(desc, (k - 1)[:, None], axis=-1)
    scaled = ops.where(scaled < kth, _NEG, scaled)

    desc = ops.flip(ops.sort(scaled, axis=-1), axis=-1)
    probs = ops.softmax(desc, axis=-1)
    top_p = ops.cast(top_p, "float32")[:, None]
    keep = ops.logical_or((ops.cumsum(probs, axis=-1) - probs) < top_p, top_p >= 1.0)
    n_keep = ops.maximum(ops.sum(ops.cast(keep, "int32"), axis=-1), 1)
    threshold = ops.take_along_axis(desc, (n_keep - 1)[:, None], axis=-1)
    scaled = ops.where(scaled < threshold, _NEG, scaled)

    gumbel = -ops.log(-ops.log(_uniform(seed, t, vocab)))
    sampled = ops.argmax(scaled + gumbel, axis=-1)
    return ops.cast(ops.where(temperature <= 0.0, greedy, sampled), "int32")


def _window_start(t, block_size: int):
    """Smallest multiple of block_size // 2 leaving at most block_size tokens before t."""
    shift = max(block_size // 2, 1)
    over = ops.maximum(t - block_size, 0)
    return ((over + shift - 1) // shift) * shift


def _right_align(stop_ids, stop_lengths):
    """[B, STOP_MAX] left-aligned, padded stop ids -> right-aligned with -1 padding."""
    cols = ops.arange(STOP_MAX, dtype="int32")[None, :]
    src = cols - (STOP_MAX - stop_lengths[:, None])
    gathered = ops.take_along_axis(stop_ids, ops.maximum(src, 0), axis=-1)
    return ops.where(src >= 0, gathered, -1)


def generate(
    model,
    token_ids,
    lengths,
    max_new_tokens,
    temperature,
    top_k,
    top_p,
    seed,
    stop_ids=None,
    stop_lengths=None,
    start_id: int = 0,
    use_cache: bool = True,
):
    """Extend each prompt by up to `max_new_tokens` tokens.

    Args:
        model: a `zoo.gpt.GPT`.
        token_ids: [B, P] int prompts, right-padded.
        lengths: [B] prompt lengths; an empty prompt is read as the single token `start_id`.
        max_new_tokens, temperature, top_k, top_p, seed: [B] per-row settings (see
            `sample_logits`); inputs are assumed validated (non-negative counts and
            temperature, 0 < top_p <= 1).
        stop_ids: [B, STOP_MAX] left-aligned stop sequences (padding ignored) or None.
        stop_lengths: [B] their lengths (0 = no stop sequence).
        start_id: the token an empty prompt stands for (a newline for character models).
        use_cache: False recomputes the whole window at every step (for checks, benchmarks).

    Returns:
        (tokens [B, W], starts [B], ends [B]): row b's completion is tokens[b, starts[b]:ends[b]]
        (the generated tokens, before any stop sequence).
    """
    token_ids = ops.cast(token_ids, "int32")
    lengths = ops.cast(lengths, "int32")
    max_new = ops.maximum(ops.cast(max_new_tokens, "int32"), 0)
    batch, prompt_width = ops.shape(token_ids)[0], ops.shape(token_ids)[1]
    block = model.block_size

    # Empty prompts start from `start_id`.
    empty = lengths <= 0
    first_col = ops.arange(prompt_width + 1, dtype="int32")[None, :] == 0
    token_ids = ops.pad(token_ids, [[0, 0], [0, 1]])
    token_ids = ops.where(ops.logical_and(empty[:, None], first_col), start_id, token_ids)
    lengths = ops.maximum(lengths, 1)

    ends = lengths + max_new
    # (an empty batch only occurs in a TF graph, where max/min of nothing are the dtype
    # limits and the loop below runs no step)
    width = ops.maximum(ops.max(ends), prompt_width + 1) + block
    tokens = ops.pad(token_ids, [[0, 0], [0, width - prompt_width - 1]])

    if stop_ids is None:
        stop_ids = ops.zeros((batch, STOP_MAX), "int32")
        stop_lengths = ops.zeros((batch,), "int32")
    stop_lengths = ops.cast(stop_lengths, "int32")
    stop_right = _right_align(ops.cast(stop_ids, "int32"), stop_lengths)
    stop_mask = stop_right >= 0
    has_stop = stop_lengths > 0

    zero = ops.zeros((), "int32")

    def body(t, prev_start, tokens, cache, done, ends, recent):
        start = _window_start(t, block)
        position = t - 1 - start  # of the last known token inside the window

        def full_window():
            window = ops.slice(tokens, [zero, start], [batch, block])
            if use_cache:
                logits, new_cache = model.prefill(window)
            else:
                logits, new_cache = model(window), cache
            return ops.take(logits, position, axis=1), new_cache

        def one_step():
            last = ops.slice(tokens, [zero, t - 1], [batch, 1])
            logits, new_cache = model.decode_step(last, cache, position)
            return logits[:, 0], new_cache

        if use_cache:
            logits, cache = ops.cond(start != prev_start, full_window, one_step)
        else:
            logits, cache = full_window()

        sampled = sample_logits(logits, temperature, top_k, top_p, seed, t)
        current = ops.slice(tokens, [zero, t], [batch, 1])[:, 0]
        in_prompt = t < lengths
        generating = ops.logical_and(ops.logical_not(in_prompt), ops.logical_not(done))
        new = ops.where(generating, sampled, current)
        tokens = ops.slice_update(tokens, [zero, t], new[:, None])

        shifted = ops.concatenate([recent[:, 1:], new[:, None]], axis=1)
        recent = ops.where(generating[:, None], shifted, recent)
        matches = ops.all(ops.logical_or(ops.logical_not(stop_mask), recent == stop_right), 1)
        stopped = ops.logical_and(ops.logical_and(generating, has_stop), matches)
        ends = ops.where(stopped, t + 1 - stop_lengths, ends)
        finished = ops.logical_and(generating, t + 1 >= lengths + max_new)
        done = ops.logical_or(done, ops.logical_or(stopped, finished))
        return t + 1, start, tokens, cache, done, ends, recent

    def cond(t, prev_start, tokens, cache, done, ends, recent):
        return ops.any(ops.logical_not(done))

    state = (
        ops.min(lengths),
        ops.convert_to_tensor(-1, "int32"),
        tokens,
        model.empty_cache(batch),
        max_new <= 0,
        ends,
        ops.full((batch, STOP_MAX), -1, "int32"),
    )
    _, _, tokens, _, _, ends, _ = ops.while_loop(cond, body, state)
    return tokens, lengths, ends


def score(model, token_ids, lengths, start_id: int = 0):
    """Mean log-likelihood per token of each sequence, read after the token `start_id`.

    Sequences longer than the context are cut into consecutive windows of `block_size`
    predicted tokens (each window conditions only on itself), as in the validation loss.

    Args:
        token_ids: [B, P] int, right-padded; lengths: [B].

    Returns:
        (mean log-likelihood [B] float32, 0 for an empty sequence; token counts [B] int32).
    """
    token_ids = ops.cast(token_ids, "int32")
    lengths = ops.cast(lengths, "int32")
    batch, width = ops.shape(token_ids)[0], ops.shape(token_ids)[1]
    block = model.block_size
    windows = ops.maximum((width + block - 1) // block, 1)
    ids = ops.concatenate([ops.full((batch, 1), start_id, "int32"), token_ids], axis=1)
    ids = ops.pad(ids, [[0, 0], [0, windows * block - width]])
    inputs = ops.reshape(ids[:, :-1], (-1, block))
    targets = ops.reshape(ids[:, 1:], (-1, block))
    log_probs = ops.log_softmax(model(inputs), axis=-1)
    picked = ops.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    picked = ops.reshape(picked, (batch, -1))
    valid = ops.arange(windows * block, dtype="int32")[None, :] < lengths[:, None]
    total = ops.sum(ops.where(valid, picked, 0.0), axis=1)
    mean = total / ops.cast(ops.maximum(lengths, 1), "float32")
    return mean, lengths
