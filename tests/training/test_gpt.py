"""GPT: the tiny preset memorizes a short text; the export generates and scores as the Keras
model does, its signatures' edge cases answer or fail clearly, `zoo generate` gives one text
from the run and the export, and the server answers `generate` and `score` too. The
end-to-end steps every family passes (fresh-process load, serving_default over gRPC and
REST) are the harness's."""

from __future__ import annotations

import json
import math
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.harness import (
    FamilyEndToEnd,
    PreparedCase,
    assert_known_rows_kept,
    export_tiny_run,
    grpc_answers,
)

# Sonnet 18 (public domain): short enough to memorize in a few hundred steps.
SONNET = """Shall I compare thee to a summer's day?
Thou art more lovely and more temperate:
Rough winds do shake the darling buds of May,
And summer's lease hath all too short a date;
Sometime too hot the eye of heaven shines,
And often is his gold complexion dimm'd;
And every fair from fair sometime declines,
By chance or nature's changing course untrimm'd;
But thy eternal summer shall not fade,
Nor lose possession of that fair thou ow'st;
Nor shall death brag thou wander'st in his shade,
When in eternal lines to time thou grow'st:
So long as men can breathe or eyes can see,
So long lives this, and this gives life to thee.
"""


#: prompts of the end-to-end checks: one from the text, an empty one, one cut short
PROMPTS = ["Shall I compare", "", "So long"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """600 iterations on the sonnet, in 2 epochs of 300 (an evaluation between them)."""
    from training import train

    root = tmp_path_factory.mktemp("gpt")
    text = root / "sonnet.txt"
    text.write_text(SONNET)
    metrics = train.run(
        "gpt",
        preset="tiny",
        model_dir=root / "run",
        data_dir=str(text),
        overrides={
            "max_iters": 600,  # 300 left some runs short of memorizing (0.5-1.9 nats)
            "epochs": 2,  # the schedule follows max_iters: epochs only place the evaluations
            "eval_iters": 2,
            "learning_rate": 1e-2,
            "min_lr": 1e-3,
        },
        verbose=0,
    )
    return root / "run", metrics


@pytest.fixture(scope="module")
def run_dir(tiny_run):
    return tiny_run[0]


@pytest.fixture(scope="module")
def trained(run_dir):
    from training.export import load_trained

    return load_trained(run_dir)


@pytest.fixture(scope="module")
def exported(tiny_run):
    """The tiny run exported by `zoo export` as <base>/1 (the harness's export)."""
    return export_tiny_run(tiny_run[0], "gpt")


@pytest.fixture(scope="module")
def loaded(tiny_run):
    # not through `exported`: inside TestEndToEnd that name is the harness's class fixture
    return tf.saved_model.load(str(export_tiny_run(tiny_run[0], "gpt")))


@pytest.fixture(scope="module")
def request_inputs():
    """`serving_default` samples with the preset's settings and seed 0: one text per prompt."""
    return {"prompt": np.array(PROMPTS, dtype=object)}


def _generate(loaded, prompts, max_new, temperature=0.0, top_k=0, top_p=1.0, seed=0, stop=""):
    n = len(prompts)
    out = loaded.signatures["generate"](
        prompt=tf.constant(prompts, tf.string, [n]),
        max_new_tokens=tf.fill([n], max_new),
        temperature=tf.fill([n], float(temperature)),
        top_k=tf.fill([n], top_k),
        top_p=tf.fill([n], float(top_p)),
        seed=tf.fill([n], seed),
        stop=tf.fill([n], stop),
    )
    return [c.decode("utf-8") for c in out["completion"].numpy()]


class TestEndToEnd(FamilyEndToEnd):
    family = "gpt"

    def test_served_generate_and_score(self, served, loaded):
        """The other signatures over the wire: `generate` with every knob per row (REST row
        format and gRPC), `score`, the columnar REST format, a bad knob as a 400."""
        expected = _generate(loaded, ["Shall I", "So long"], 20)
        url = "/v1/models/gpt:predict"
        rows = [
            {"prompt": p, "max_new_tokens": 20, "temperature": 0.0, "top_k": 0, "top_p": 1.0,
             "seed": 0, "stop": ""}
            for p in ["Shall I", "So long"]
        ]  # fmt: skip
        status, body = served.http("POST", url, {"signature_name": "generate", "instances": rows})
        assert status == 200 and body["predictions"] == expected, body
        status, default = served.http("POST", url, {"inputs": {"prompt": ["Thou art"]}})
        assert status == 200 and len(default["outputs"][0]) == 50, default
        status, scored = served.http(
            "POST", url, {"signature_name": "score", "instances": ["Shall I compare"]}
        )
        assert status == 200, scored
        assert scored["predictions"][0]["num_tokens"] == 15
        assert scored["predictions"][0]["log_likelihood"] < 0
        bad = {"signature_name": "generate", "instances": [{**rows[0], "top_p": 0.0}]}
        status, error = served.http("POST", url, bad)
        assert status == 400 and "top_p" in error["error"], error

        values = {
            "prompt": np.array([b"Shall I", b"So long"]),
            "max_new_tokens": np.array([20, 20], np.int32),
            "temperature": np.zeros(2, np.float32),
            "top_k": np.zeros(2, np.int32),
            "top_p": np.ones(2, np.float32),
            "seed": np.zeros(2, np.int32),
            "stop": np.array([b"", b""]),
        }
        completions = grpc_answers(served, "gpt", "generate", values)["completion"]
        assert [c.decode() for c in completions] == expected


def test_tiny_overfits_a_short_text(run_dir, trained):
    from training.data.char_text import consecutive_windows
    from training.data.char_vocab import CharVocab, split_text

    model, run_info = trained
    vocab = CharVocab.from_assets(run_info["assets"])
    train_text, _ = split_text(SONNET, 0.1)
    ids = vocab.encode(train_text)
    counts = np.bincount(ids, minlength=vocab.size)
    p = counts[counts > 0] / len(ids)
    unigram_entropy = float(-(p * np.log(p)).sum())  # nats/char, about 3
    losses = [
        keras.losses.sparse_categorical_crossentropy(y, model(x), from_logits=True)
        for x, y in consecutive_windows(ids, run_info["config"]["block_size"], 64)
    ]
    loss = float(np.mean(np.concatenate([np.ravel(batch) for batch in losses])))
    assert loss < 0.33 * unigram_entropy, (loss, unigram_entropy)

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val_perplexity"] == pytest.approx(math.exp(metrics["val_loss"]))
    assert metrics["val_bits_per_char"] == pytest.approx(metrics["val_loss"] / math.log(2))


def test_export_generates_and_scores_as_the_eager_keras_model(loaded, trained):
    """Greedy `generate` and `score` of the loaded SavedModel: the Keras model's, run eagerly."""
    from keras import ops

    from training.data.char_vocab import CharVocab
    from zoo.gpt import generate, score

    completions = _generate(loaded, PROMPTS, 20)
    scores = loaded.signatures["score"](text=tf.constant(PROMPTS))["log_likelihood"].numpy()

    model, run_info = trained
    vocab = CharVocab.from_assets(run_info["assets"])
    encoded = [vocab.encode(p) for p in PROMPTS]
    lengths = np.array([len(e) for e in encoded])
    padded = np.zeros((len(PROMPTS), lengths.max()), np.int32)
    for i, e in enumerate(encoded):
        padded[i, : len(e)] = e
    n = len(PROMPTS)
    tokens, starts, ends = generate(
        model, padded, lengths, np.full(n, 20), np.zeros(n, "float32"), np.zeros(n, "int32"),
        np.ones(n, "float32"), np.zeros(n, "int32"), start_id=vocab.start_id,
    )  # fmt: skip
    tokens, starts, ends = (ops.convert_to_numpy(x) for x in (tokens, starts, ends))
    expected = [vocab.decode(tokens[i, starts[i] : ends[i]]) for i in range(n)]
    assert completions == expected
    assert all(len(c) == 20 for c in expected)

    mean, _ = score(model, padded, lengths, start_id=vocab.start_id)
    np.testing.assert_allclose(scores, ops.convert_to_numpy(mean), atol=1e-4)


def test_edge_cases_answer_or_fail_clearly(loaded):
    long_prompt = SONNET[:300]  # ten times the 32-character context
    out = _generate(loaded, ["", long_prompt, "Zebra ☃ ✓ quixotic"], 25)
    assert [len(c) for c in out] == [25, 25, 25]
    assert _generate(loaded, ["Shall"], 0) == [""]
    raw = loaded.signatures["generate"](
        prompt=tf.constant([b"\xff\xfe bad utf-8"]), max_new_tokens=tf.constant([5]),
        temperature=tf.constant([0.0]), top_k=tf.constant([0]), top_p=tf.constant([1.0]),
        seed=tf.constant([0]), stop=tf.constant([""]),
    )  # fmt: skip
    assert len(raw["completion"].numpy()[0].decode()) == 5
    empty_batch = loaded.signatures["serving_default"](prompt=tf.constant([], tf.string))
    assert empty_batch["completion"].shape == (0,)
    default = loaded.signatures["serving_default"](prompt=tf.constant(["Thou art", ""]))
    assert [len(c.decode()) for c in default["completion"].numpy()] == [50, 50]  # tiny preset

    for kwargs, message in [
        (dict(max_new=10_001), "max_new_tokens must be <="),
        (dict(max_new=-1), "max_new_tokens must be >= 0"),
        (dict(max_new=5, temperature=-0.5), "temperature must be >= 0"),
        (dict(max_new=5, top_p=0.0), "top_p must be in (0, 1]"),
        (dict(max_new=5, top_k=-3), "top_k must be >= 0"),
        (dict(max_new=5, stop="x" * 17), "stop must be at most 16"),
    ]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=__import__("re").escape(message)):
            _generate(loaded, ["Shall"], **kwargs)
    with pytest.raises(tf.errors.InvalidArgumentError, match="one value per prompt"):
        loaded.signatures["generate"](
            prompt=tf.constant(["a", "b"]), max_new_tokens=tf.constant([5]),
            temperature=tf.constant([0.0]), top_k=tf.constant([0]), top_p=tf.constant([1.0]),
            seed=tf.constant([0]), stop=tf.constant([""]),
        )  # fmt: skip

    scores = loaded.signatures["score"](text=tf.constant([SONNET[:200], "", "☃☃☃"]))
    ll, count = scores["log_likelihood"].numpy(), scores["num_tokens"].numpy()
    assert count.tolist() == [200, 0, 3] and ll[1] == 0.0
    assert ll[0] > ll[2]  # memorized text is likelier than unknown characters


@pytest.mark.slow
def test_ten_thousand_new_tokens(loaded):
    start = time.perf_counter()
    (text,) = _generate(loaded, ["So long"], 10_000, temperature=0.8, top_k=10, seed=1)
    assert len(text) == 10_000
    print(f"10,000 tokens in {time.perf_counter() - start:.1f} s")


def test_zoo_generate_cli_same_text_from_run_and_export(run_dir, exported, capsys):
    """`zoo generate` on the run directory and on the SavedModel: one loop, same sample."""
    from tfzoo.verbs.generate import main

    argv = ["--prompt", "Shall I", "--max-new-tokens", "30", "--seed", "3", "--temperature", "1"]
    assert main(["--model-dir", str(run_dir), *argv]) == 0
    from_run = capsys.readouterr().out
    assert main(["--saved-model", str(exported), *argv]) == 0
    assert capsys.readouterr().out == from_run
    assert from_run.startswith("Shall I") and len(from_run.split("\n")[0]) >= len("Shall I")
    assert main(["--model-dir", str(run_dir), *argv, "--temperature", "-1"]) == 2
    assert "temperature must be >= 0" in capsys.readouterr().err
    assert main(["--model-dir", str(run_dir / "missing"), *argv]) == 2


def test_finetune_keeps_known_characters_and_adds_rows_for_new_ones(tiny_run, tmp_path):
    """A text using a subset of the sonnet's characters fine-tunes with the parent's
    vocabulary; one with characters the parent lacks gets new ids after the unknown one and
    new rows of the tied embedding. At learning rate 0 every known row and every other
    weight is bit-identical, and the fine-tuned model reads and writes the new characters."""
    from training import train
    from training.data.char_vocab import CharVocab

    subset = tmp_path / "subset.txt"
    subset.write_text("\n".join(SONNET.splitlines()[:7]) * 8)  # fewer characters
    frozen = {"max_iters": 2, "epochs": 1, "learning_rate": 0.0, "min_lr": 0.0}
    run = tmp_path / "finetuned"
    train.run("gpt", preset="tiny", model_dir=run, data_dir=str(subset), parent=tiny_run[0],
              overrides=frozen, verbose=0)  # fmt: skip
    old, new = assert_known_rows_kept(tiny_run[0], run, grown={})
    assert new["chars"] == old["chars"]

    alien = tmp_path / "alien.txt"
    alien.write_text(SONNET + "§¶€" * 50)
    run = tmp_path / "alien"
    train.run("gpt", preset="tiny", model_dir=run, data_dir=str(alien), parent=tiny_run[0],
              overrides=frozen, verbose=0)  # fmt: skip
    old, new = assert_known_rows_kept(tiny_run[0], run, grown={"wte": "vocab_size"})
    assert new["chars"] == old["chars"] + ["§", "¶", "€"]
    assert new["unknown_id"] == old["unknown_id"] == len(old["chars"])
    assert new["vocab_size"] == old["vocab_size"] + 3
    vocab = CharVocab.from_assets(new)
    ids = vocab.encode("I€☃").tolist()
    assert ids == [old["chars"].index("I"), new["vocab_size"] - 1, old["unknown_id"]]
    assert vocab.decode(ids) == "I€\ufffd"


def _sonnet_file(tmp, shared):
    """The sonnet as a text file: the prepared-data run's --data-dir."""
    path = tmp / "sonnet.txt"
    path.write_text(SONNET)
    return path


#: the tiny run on prepared arrays under JAX (tests/training/test_prepared_training.py)
PREPARED_CASE = PreparedCase(
    data=_sonnet_file,
    request={"prompt": np.array(PROMPTS, dtype=object)},
    prepare=("val_fraction=0.3",),  # validation windows for two devices
    train=("max_iters=200", "epochs=2", "eval_iters=2", "learning_rate=0.01"),
)
