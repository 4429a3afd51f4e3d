"""The BiLSTM tagger: the tiny preset trains on EWT, its export matches Keras in a fresh
process, edge cases have defined answers, and `zoo serve` answers a REST :predict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.request

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO_ROOT, free_port
from training import evaluate as evaluate_lib
from training import export as export_lib
from training import train
from training.data.ud_tokenize import tokenize
from training.recipes.tagger import TaggerModule, featurizer_from_assets
from zoo.tagger import PRESETS, CharCNN, build_tagger

SENTENCES = [
    "She sells seashells by the seashore.",
    "I don't think the committee's report was published in 2004.",
    "",
    "Zorblaxian flimwits quoggled the blorfy snarks!",  # unknown words
    "Müller sagte: Grüße aus Köln — ça va? 東京は大きい。",  # non-ASCII
    " ".join(["the quick brown fox jumps over the lazy dog ."] * 60),  # 600 words
]

UPOS = {
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART",
    "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X",
}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_run(shared_data, tmp_path_factory):
    """A tiny tagger trained for 2 epochs on 400 EWT sentences: (run dir, metrics)."""
    model_dir = tmp_path_factory.mktemp("tagger") / "run"
    metrics = train.run(
        "tagger",
        preset="tiny",
        model_dir=model_dir,
        data_dir=str(shared_data / "ud_english_ewt"),
        verbose=0,
    )
    return model_dir, metrics


@pytest.fixture(scope="module")
def exported(tiny_run):
    """The tiny run exported as <base>/1."""
    model_dir, _ = tiny_run
    return export_lib.run(model_dir, model_dir.parent / "export" / "tagger")


def keras_tags(model, assets, token_lists):
    """Tags from the Keras model itself (featurized in Python batches)."""
    width = max(1, max(len(t) for t in token_lists))
    tokens = tf.constant([t + [""] * (width - len(t)) for t in token_lists])
    features = featurizer_from_assets(assets).features(tokens)
    probs = model.predict_on_batch({k: v.numpy() for k, v in features.items()})
    ids = np.argmax(np.asarray(probs), axis=-1)
    return [
        [assets["tags"][i] for i in row[: len(t)]] for row, t in zip(ids, token_lists, strict=True)
    ]


def test_tiny_trains_and_loss_falls(tiny_run):
    _, metrics = tiny_run
    losses = [epoch["loss"] for epoch in metrics["history"]]
    assert len(losses) == 2 and losses[1] < losses[0] * 0.9, losses
    # 100 dev sentences: far better than the most frequent tag (NOUN, about 17%)
    assert metrics["upos_accuracy"] > 0.4
    assert 0.3 < metrics["upos_accuracy_raw_text"] <= 1.0
    assert metrics["eval_words"] > 1000


def test_model_config_round_trip():
    # the sizes the data decides, as the tiny preset had them before they became DATA_DECIDED
    model = build_tagger(
        {**PRESETS["tiny"], "word_vocab_size": 20000, "char_vocab_size": 200, "num_tags": 17}
    )
    again = keras.Model.from_config(model.get_config())
    assert isinstance(again.get_layer("char_cnn"), CharCNN)
    assert again.count_params() == model.count_params()
    words = np.array([[5, 6, 0, 0]])
    chars = np.random.default_rng(0).integers(
        1, 50, size=(1, 4, PRESETS["tiny"]["max_word_length"])
    )
    full = np.asarray(model({"words": words, "chars": chars}))
    short = np.asarray(model({"words": words[:, :2], "chars": chars[:, :2]}))
    np.testing.assert_allclose(full[:, :2], short, atol=1e-5)  # padding is masked


def test_featurizer_keeps_prefix_and_suffix(tiny_run):
    model_dir, _ = tiny_run
    assets = json.loads((model_dir / "run.json").read_text())["assets"]
    featurizer = featurizer_from_assets(assets)
    size = assets["max_word_length"]
    long_word = "antidisestablishmentarianism"  # 28 characters
    ids = featurizer.char_ids(tf.constant([[long_word, "", "Dog"]])).numpy()
    assert ids.shape == (1, 3, size)
    chars = assets["chars"]
    expected = list(long_word[: size // 2] + long_word[-(size - size // 2) :])
    assert [chars[i] for i in ids[0, 0]] == [c if c in chars else "[UNK]" for c in expected]
    assert ids[0, 1].tolist() == [0] * size
    assert [chars[i] for i in ids[0, 2, :3]] == ["D", "o", "g"] and ids[0, 2, 3:].sum() == 0
    words = featurizer.word_ids(tf.constant([["The", "1984", "", "qqqzzz"]])).numpy()[0]
    assert assets["words"][words[0]] == "the" and assets["words"][words[1]] == "0000"
    assert words[2] == 0 and words[3] == 1


EXPORT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    loaded = tf.saved_model.load(sys.argv[1])
    sentences = json.loads(sys.argv[2])
    out = loaded.signatures["serving_default"](sentences=tf.constant(sentences, tf.string))
    tokens = [[t.decode() for t in row] for row in out["tokens"].numpy()]
    tags = [[t.decode() for t in row] for row in out["tags"].numpy()]
    lengths = out["lengths"].numpy().tolist()
    again = loaded.signatures["tag_tokens"](tokens=out["tokens"])["tags"].numpy()
    empty = loaded.signatures["serving_default"](sentences=tf.constant([], tf.string))
    # the way stock TF Serving loads it: the graph and restore op in a session
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], sys.argv[1])
        sig = meta.signature_def["serving_default"]
        fetch = session.run(sig.outputs["tags"].name, {sig.inputs["sentences"].name: sentences})
    print(json.dumps({
        "session_tags": [[t.decode() for t in row] for row in fetch],
        "tokens": tokens, "tags": tags, "lengths": lengths,
        "tag_tokens": [[t.decode() for t in row] for row in again],
        "empty_shape": empty["tags"].shape.as_list(),
        "imported": sorted(m for m in ("zoo", "training") if m in sys.modules),
    }))
    """
)


def test_export_matches_keras_in_fresh_process(tiny_run, exported):
    model_dir, _ = tiny_run
    model, run_info = export_lib.load_trained(model_dir)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", EXPORT_SCRIPT, str(exported), json.dumps(SENTENCES)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["imported"] == []
    assert out["empty_shape"] == [0, 0]
    expected_tokens = [tokenize(s) for s in SENTENCES]
    width = max(len(t) for t in expected_tokens)
    assert out["lengths"] == [len(t) for t in expected_tokens]
    assert out["lengths"][2] == 0 and out["lengths"][5] == 600
    expected_tags = keras_tags(model, run_info["assets"], expected_tokens)
    for i, (tokens, tags) in enumerate(zip(expected_tokens, expected_tags, strict=True)):
        pad = [""] * (width - len(tokens))
        assert out["tokens"][i] == tokens + pad
        assert out["tags"][i] == tags + pad, SENTENCES[i]
        assert out["tag_tokens"][i] == tags + pad
        assert out["session_tags"][i] == tags + pad
        assert set(tags) <= UPOS
    assert (exported / "assets.extra" / "tf_serving_warmup_requests").is_file()
    assert (exported / "assets" / "tags.txt").read_text().split() == run_info["assets"]["tags"]


def test_edge_cases_have_defined_answers(tiny_run):
    model_dir, _ = tiny_run
    model, run_info = export_lib.load_trained(model_dir)
    module = TaggerModule(model, run_info["assets"])
    out = module.serving_default(tf.constant(["", "   ", b"caf\xc3\xa9 \xff\xfe bytes"]))
    assert out["lengths"].numpy().tolist() == [0, 0, 3]
    tokens = out["tokens"].numpy()
    assert tokens.shape == (3, 3) and tokens[0].tolist() == [b""] * 3
    assert tokens[2].tolist() == ["café".encode(), "\ufffd\ufffd".encode(), b"bytes"]
    tags = out["tags"].numpy()
    assert tags[0].tolist() == [b""] * 3 and all(t.decode() in UPOS for t in tags[2])
    # pre-tokenized input: "" is padding, zero-width batches are fine
    tagged = module.tag_tokens(tf.constant([["Dogs", "", "bark"], ["", "", ""]]))["tags"].numpy()
    assert tagged[0, 1] == b"" and tagged[1].tolist() == [b""] * 3
    assert tagged[0, 0].decode() in UPOS and tagged[0, 2].decode() in UPOS
    assert module.tag_tokens(tf.zeros([2, 0], tf.string))["tags"].shape == (2, 0)
    assert module.tag_tokens(tf.zeros([0, 4], tf.string))["tags"].shape == (0, 4)


def test_zoo_evaluate_on_gold_and_raw_text(tiny_run, shared_data):
    """`zoo evaluate` scores with the run's saved vocabularies: the training metrics again."""
    model_dir, metrics = tiny_run
    from training.data.conllu import read_conllu

    result = evaluate_lib.run(model_dir, str(shared_data / "ud_english_ewt"))
    dev = read_conllu(shared_data / "ud_english_ewt" / "en_ewt-ud-dev.conllu", limit=100)
    assert result["eval_words"] == sum(len(s.words) for s in dev)
    for key in ("upos_accuracy", "upos_accuracy_raw_text", "upos_f1_raw_text"):
        assert result[key] == pytest.approx(metrics[key], abs=1e-6), key
    # raw text loses what the tokenizer splits differently, never gains much
    assert result["upos_accuracy_raw_text"] <= result["upos_accuracy"] + 0.01


def _wait_for(proc: subprocess.Popen, marker: str, timeout: float) -> str:
    seen = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"server not ready ({marker!r} not printed):\n{''.join(seen)[-3000:]}")


@pytest.mark.skipif(
    not (REPO_ROOT / "serving" / "main.py").is_file(),
    reason="serving/main.py (the zoo serve model server) does not exist yet",
)
def test_served_through_zoo_serve_rest(exported):
    port, rest_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serving",
            "--port",
            str(port),
            "--rest_api_port",
            str(rest_port),
            "--model_name",
            "tagger",
            "--model_base_path",
            str(exported.parent),
        ],  # fmt: skip
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    try:
        _wait_for(proc, f"Exporting HTTP/REST API at:localhost:{rest_port}", 120)
        sentence = "She sells seashells by the seashore."
        request = urllib.request.Request(
            f"http://127.0.0.1:{rest_port}/v1/models/tagger:predict",
            data=json.dumps({"instances": [sentence]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.loads(response.read())
        (prediction,) = body["predictions"]
        assert prediction["tokens"] == tokenize(sentence)
        assert prediction["lengths"] == 7
        assert len(prediction["tags"]) == 7 and set(prediction["tags"]) <= UPOS
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_cli_predict_prints_token_tag_pairs(exported):
    from tests.helpers import zoo

    version_dir = exported if (exported / "saved_model.pb").exists() else exported / "1"
    out = zoo("predict", str(version_dir), "She sells seashells.", "").stdout.splitlines()
    first = out[-2].split(": ", 1)[1].split()
    assert [pair.rsplit("/", 1)[0] for pair in first] == ["She", "sells", "seashells", "."]
    assert all(pair.rsplit("/", 1)[1] for pair in first)  # every token got a tag
    assert out[-1] == ": "  # an empty sentence: no tokens, no crash
