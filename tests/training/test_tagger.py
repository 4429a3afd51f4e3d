"""The BiLSTM tagger: the tiny preset trains on EWT and tags better than chance; its export
tags raw text as the Keras model does, edge cases have defined answers. The end-to-end steps
every family passes (fresh-process load, `zoo serve` over gRPC and REST) are the harness's.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.harness import (
    FamilyEndToEnd,
    PreparedCase,
    assert_known_rows_kept,
    export_tiny_run,
    need,
)
from training import evaluate as evaluate_lib
from training import export as export_lib
from training import train
from training.data.tagging_graph import featurizer_from_assets
from training.data.ud_tokenize import tokenize
from training.exports.tagger import TaggerModule
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
    """The tiny run exported by `zoo export` as <base>/1 (the harness's export)."""
    return export_tiny_run(tiny_run[0], "tagger")


@pytest.fixture(scope="module")
def request_inputs():
    """Every test sentence, "" and the 600-word one included, as plain text."""
    return {"sentences": np.array(SENTENCES, dtype=object)}


class TestEndToEnd(FamilyEndToEnd):
    family = "tagger"
    loss_drop = 0.9


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


def test_tiny_trains_two_epochs_and_tags_better_than_chance(tiny_run):
    _, metrics = tiny_run
    assert len(metrics["history"]) == 2  # the loss falling by 10%: TestEndToEnd (loss_drop)
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


def test_export_tags_raw_text_as_keras_does(tiny_run, exported):
    """The loaded SavedModel tokenizes, then tags as the Keras model does on those tokens."""
    model_dir, _ = tiny_run
    model, run_info = export_lib.load_trained(model_dir)
    loaded = tf.saved_model.load(str(exported))
    out = loaded.signatures["serving_default"](sentences=tf.constant(SENTENCES))
    tokens = [[t.decode() for t in row] for row in out["tokens"].numpy()]
    tags = [[t.decode() for t in row] for row in out["tags"].numpy()]
    again = loaded.signatures["tag_tokens"](tokens=out["tokens"])["tags"].numpy()
    empty = loaded.signatures["serving_default"](sentences=tf.constant([], tf.string))
    assert empty["tags"].shape.as_list() == [0, 0]
    expected_tokens = [tokenize(s) for s in SENTENCES]
    width = max(len(t) for t in expected_tokens)
    lengths = out["lengths"].numpy().tolist()
    assert lengths == [len(t) for t in expected_tokens]
    assert lengths[2] == 0 and lengths[5] == 600
    expected_tags = keras_tags(model, run_info["assets"], expected_tokens)
    for i, (want_tokens, want_tags) in enumerate(zip(expected_tokens, expected_tags, strict=True)):
        pad = [""] * (width - len(want_tokens))
        assert tokens[i] == want_tokens + pad
        assert tags[i] == want_tags + pad, SENTENCES[i]
        assert [t.decode() for t in again[i]] == want_tags + pad
        assert set(want_tags) <= UPOS
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


def test_cli_predict_prints_token_tag_pairs(exported):
    from tests.helpers import zoo_in_process

    out = zoo_in_process("predict", str(exported), "She sells seashells.", "").stdout
    out = out.splitlines()
    first = out[-2].split(": ", 1)[1].split()
    assert [pair.rsplit("/", 1)[0] for pair in first] == ["She", "sells", "seashells", "."]
    assert all(pair.rsplit("/", 1)[1] for pair in first)  # every token got a tag
    assert out[-1] == ": "  # an empty sentence: no tokens, no crash


def _conllu_slice(source, start: int, stop: int) -> str:
    """Sentences [start, stop) of a CoNLL-U file, as CoNLL-U text."""
    blocks = source.read_text(encoding="utf-8").split("\n\n")
    return "\n\n".join(blocks[start:stop]).strip("\n") + "\n\n"


def test_finetune_to_xpos_extends_the_vocabulary_and_keeps_known_rows(
    tiny_run, shared_data, tmp_path
):
    """Fine-tuning on a held-back EWT slice with XPOS tags at learning rate 0: the tag head
    is new, the words and characters the slice adds get new rows, and every known row (and
    every other weight) is bit-identical to the parent's."""
    ewt = shared_data / "ud_english_ewt" / "en_ewt-ud-train.conllu"
    data = tmp_path / "held_back"
    data.mkdir()
    (data / "slice-train.conllu").write_text(_conllu_slice(ewt, 5000, 5150), encoding="utf-8")
    (data / "slice-dev.conllu").write_text(_conllu_slice(ewt, 5150, 5200), encoding="utf-8")
    run = tmp_path / "xpos"
    train.run("tagger", preset="tiny", model_dir=run, data_dir=str(data), epochs=1,
              steps_per_epoch=2, parent=tiny_run[0], verbose=0,
              overrides={"tagset": "xpos", "learning_rate": 0.0})  # fmt: skip
    grown = {"word_embedding": "words", "char_cnn": "chars"}
    old, new = assert_known_rows_kept(tiny_run[0], run, grown)
    assert new["tagset"] == "xpos" and "NN" in new["tags"] and "NOUN" not in new["tags"]
    assert len(new["words"]) > len(old["words"])  # the slice brings new words


def _ewt_short(tmp, shared):
    """240 training and 60 dev sentences of EWT with fewer than 16 words: two length buckets,
    so the JAX run compiles a training step for two batch shapes only."""
    folder = tmp / "ewt_short"
    folder.mkdir()
    for split, count in (("train", 240), ("dev", 60)):
        source = need(shared / "ud_english_ewt" / f"en_ewt-ud-{split}.conllu")
        blocks = source.read_text(encoding="utf-8").split("\n\n")
        short = [b for b in blocks if 0 < _words(b) < 16][:count]
        (folder / f"short-{split}.conllu").write_text("\n\n".join(short) + "\n\n")
    return folder


def _words(block: str) -> int:
    """Syntactic words of a CoNLL-U sentence block (integer ids)."""
    return sum(line.split("\t", 1)[0].isdigit() for line in block.splitlines())


#: the tiny run on prepared arrays under JAX (tests/training/test_prepared_training.py)
PREPARED_CASE = PreparedCase(
    data=_ewt_short,
    request={
        "sentences": np.array(
            ["She sells seashells by the seashore.", "", "I don't think it's 2004 yet!"],
            dtype=object,
        )
    },
)
