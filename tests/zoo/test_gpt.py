"""GPT model and generation loop: cache correctness, sampling, reproducibility (no data needed)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from training.data.char_text import CharTokenizer
from training.data.char_vocab import CharVocab
from training.exports.gpt import GenerationModule
from zoo import registry
from zoo.gpt import GPT, generate, sample_logits, score

VOCAB = 12


@pytest.fixture(scope="module")
def model() -> GPT:
    return registry.get("gpt").build("tiny", vocab_size=VOCAB, block_size=16)


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


def _params(n, max_new, temperature=0.0, top_k=0, top_p=1.0, seed=0):
    return dict(
        max_new_tokens=np.full([n], max_new, np.int32),
        temperature=np.full([n], temperature, np.float32),
        top_k=np.full([n], top_k, np.int32),
        top_p=np.full([n], top_p, np.float32),
        seed=np.full([n], seed, np.int32),
    )


def test_shapes_and_config_round_trip(model):
    ids = np.random.default_rng(0).integers(0, VOCAB, (3, 16)).astype("int32")
    logits = _np(model(ids))
    assert logits.shape == (3, 16, VOCAB) and logits.dtype == np.float32
    clone = GPT.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(_np(clone(ids)), logits, atol=1e-5)
    # the output projection is the token embedding: no separate head weights
    names = [w.path for w in model.weights]
    assert sum("embeddings" in n for n in names) == 2 and not any("head" in n for n in names)


def test_causal_mask_future_tokens_do_not_matter(model):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, VOCAB, (2, 16)).astype("int32")
    changed = ids.copy()
    changed[:, 10:] = rng.integers(0, VOCAB, (2, 6))
    a, b = _np(model(ids)), _np(model(changed))
    np.testing.assert_allclose(a[:, :10], b[:, :10], atol=1e-5)
    assert np.abs(a[:, 10:] - b[:, 10:]).max() > 1e-4


def test_decode_step_matches_full_forward(model):
    ids = np.random.default_rng(2).integers(0, VOCAB, (2, 16)).astype("int32")
    full = _np(model(ids))
    _, cache = model.prefill(np.concatenate([ids[:, :5], np.zeros((2, 11), "int32")], 1))
    for i in range(5, 16):  # feed tokens one at a time after a 5-token prefill
        logits, cache = model.decode_step(ids[:, i : i + 1], cache, ops.convert_to_tensor(i))
        np.testing.assert_allclose(_np(logits)[:, 0], full[:, i], atol=1e-4)


def test_cached_and_uncached_greedy_give_identical_tokens_eager(model):
    prompts = np.array([[1, 2, 3, 4, 5, 6], [7, 8, 0, 0, 0, 0]], np.int32)
    lengths = np.array([6, 2])
    with_cache = generate(model, prompts, lengths, **_params(2, 10), use_cache=True)
    without = generate(model, prompts, lengths, **_params(2, 10), use_cache=False)
    np.testing.assert_array_equal(_np(with_cache[0]), _np(without[0]))
    np.testing.assert_array_equal(_np(with_cache[2]), [16, 12])  # prompt length + 10
    # prompts are kept, generation starts right after each one
    np.testing.assert_array_equal(_np(with_cache[0])[0, :6], prompts[0])
    np.testing.assert_array_equal(_np(with_cache[0])[1, :2], prompts[1, :2])


def _module(model, use_cache):
    vocab = CharVocab(tuple("abcdefghijk"))  # 11 chars + unknown = VOCAB ids
    return GenerationModule(model, vocab, {"max_new_tokens": 10}, use_cache=use_cache)


@pytest.fixture(scope="module")
def cached(model):
    return _module(model, True)


def _run(module, prompts, max_new, temperature=0.0, top_k=0, top_p=1.0, seed=0, stop=""):
    n = len(prompts)
    out = module.generate(
        tf.constant(prompts, tf.string, [n]),
        tf.fill([n], max_new),
        tf.fill([n], float(temperature)),
        tf.fill([n], top_k),
        tf.fill([n], float(top_p)),
        tf.fill([n], seed),
        tf.fill([n], stop),
    )
    return [c.decode() for c in out["completion"].numpy()]


def test_cached_equals_uncached_beyond_the_context_window(model, cached):
    """Greedy, 40 tokens past a prompt longer than the 16-token context: window shifts."""
    prompts = ["abcabcabcabcabcabcabcab", "k", ""]
    with_cache = _run(cached, prompts, 40)
    assert with_cache == _run(_module(model, False), prompts, 40)
    assert [len(c) for c in with_cache] == [40, 40, 40]


def test_seed_reproduces_a_sample_and_batching_does_not_change_it(cached):
    module = cached
    kwargs = dict(max_new=40, temperature=1.5, top_k=0, top_p=1.0)
    first = _run(module, ["abc"], seed=7, **kwargs)
    assert _run(module, ["abc"], seed=7, **kwargs) == first
    assert _run(module, ["kj", "abc", ""], seed=7, **kwargs)[1] == first[0]
    assert _run(module, ["abc"], seed=8, **kwargs) != first


def test_stop_string_cuts_the_completion(cached):
    module = cached
    full = _run(module, ["ab"], 40, temperature=2.0, seed=3)[0]
    stop = full[10:12]
    cut = _run(module, ["ab"], 40, temperature=2.0, seed=3, stop=stop)[0]
    assert cut == full[: full.index(stop)]


def test_sampling_follows_the_distribution():
    """Gumbel-max over the hash: frequencies match softmax(logits / T) over 4,000 seeds."""
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], np.float32))
    n = 4000
    batch = np.repeat(logits, n, axis=0)
    draws = _np(
        sample_logits(
            batch, np.ones(n, "float32"), np.zeros(n, "int32"), np.ones(n, "float32"),
            np.arange(n, dtype="int32"), 5,
        )
    )  # fmt: skip
    freq = np.bincount(draws, minlength=4) / n
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.15, 0.05], atol=0.03)


def test_top_k_top_p_and_temperature_zero():
    logits = np.log(np.array([[0.1, 0.6, 0.3]], np.float32)).repeat(500, 0)
    n, seeds = 500, np.arange(500, dtype="int32")
    ones, zeros = np.ones(n, "float32"), np.zeros(n, "int32")

    def draw(temperature=ones, top_k=zeros, top_p=ones):
        return set(_np(sample_logits(logits, temperature, top_k, top_p, seeds, 0)).tolist())

    assert draw(temperature=np.zeros(n, "float32")) == {1}
    assert draw(top_k=np.ones(n, "int32")) == {1}
    assert draw(top_k=np.full(n, 2, "int32")) == {1, 2}
    assert draw(top_p=np.full(n, 0.5, "float32")) == {1}  # 0.6 alone reaches 0.5
    assert draw(top_p=np.full(n, 0.8, "float32")) == {1, 2}
    assert draw() == {0, 1, 2}


def test_score_matches_log_softmax(model):
    ids = np.array([[3, 1, 4, 1, 5], [2, 6, 0, 0, 0]], np.int32)
    mean, count = score(model, ids, np.array([5, 2]), start_id=0)
    log_probs = _np(ops.log_softmax(model(np.array([[0, 3, 1, 4, 1]], np.int32)), axis=-1))
    expected = np.mean([log_probs[0, i, t] for i, t in enumerate([3, 1, 4, 1, 5])])
    assert _np(mean)[0] == pytest.approx(expected, abs=1e-5)
    np.testing.assert_array_equal(_np(count), [5, 2])


def test_char_tokenizer_in_graph_matches_python():
    vocab = CharVocab.from_text("hello world\n")
    tok = CharTokenizer(vocab)
    texts = ["hello", "w☃rld", "", "\n"]
    ids = tok.encode(tf.constant(texts))
    assert ids.to_list() == [vocab.encode(t).tolist() for t in texts]
    assert vocab.encode("☃").tolist() == [vocab.unknown_id]
    bad = tok.encode(tf.constant([b"h\xffo"])).to_list()[0]  # invalid UTF-8: no crash
    assert bad == [vocab.encode("h")[0], vocab.unknown_id, vocab.encode("o")[0]]
    dense = ids.to_tensor(0)
    decoded = tok.decode(dense, tf.zeros([4], tf.int32), tf.cast(ids.row_lengths(), tf.int32))
    assert [d.decode() for d in decoded.numpy()] == ["hello", "w\ufffdrld", "", "\n"]
    assert vocab.decode(vocab.encode("hello")) == "hello"


def test_mixed_bfloat16_model_and_float32_export_copy(model):
    from training.recipes.gpt import float32_copy

    config = registry.get("gpt").config("tiny", vocab_size=VOCAB, block_size=16)
    mixed = registry.get("gpt").builder({**config, "dtype_policy": "mixed_bfloat16"})
    mixed.set_weights(model.get_weights())
    ids = np.arange(16, dtype="int32")[None] % VOCAB
    logits = _np(mixed(ids))
    assert logits.dtype == np.float32  # logits and softmax stay float32
    assert mixed.wte.embeddings.dtype == "float32"  # variables stay float32
    copy = float32_copy(mixed, config, {"vocab_size": VOCAB})
    assert copy is not mixed and copy.dtype_policy.name == "float32"
    np.testing.assert_allclose(_np(copy(ids)), _np(model(ids)), atol=1e-5)
    np.testing.assert_allclose(logits, _np(model(ids)), atol=0.1)  # bf16 rounding only


def test_recipe_data_on_tinyshakespeare(shared_data):
    from training.recipes.gpt import RECIPE

    config = registry.get("gpt").config("baby")
    data = RECIPE.load_data(config, str(shared_data), 12)
    assert data.assets["vocab_size"] == 66  # nanoGPT's 65 characters + "unknown"
    assert data.steps_per_epoch == 250 and data.validation_steps == 20
    x, y = next(iter(data.train))
    assert x.shape == (12, 64) and y.shape == (12, 64)
    np.testing.assert_array_equal(x.numpy()[:, 1:], y.numpy()[:, :-1])
    # the validation split is the last 10%: 111,540 characters in 1,742 windows of 64
    windows = sum(int(b[0].shape[0]) for b in data.test)
    assert windows == (111_540 - 1) // 64
