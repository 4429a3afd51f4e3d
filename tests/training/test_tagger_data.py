"""The tagger recipe's data side: saved assets are reused as they are (resume, evaluate),
evaluation needs no training file, batch counting; the prepared arrays give the tf.data
pipeline's batches and scores."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from training import prepared
from training.data.conllu import read_conllu
from training.data.tagging import (
    BUCKETS,
    TagEncoder,
    TaggedBatches,
    build_vocabularies,
    count_batches,
)
from training.data.tagging_graph import featurizer_from_assets, make_dataset
from training.recipes.tagger import RECIPE
from zoo.tagger import PRESETS


def _config(**overrides):
    return {**PRESETS["tiny"], **overrides}


def _decode_words(data, assets):
    """(word strings, tag names) of the first validation batch, read back through `assets`."""
    features, tags, weights = next(iter(data.val))
    words, tag_ids, mask = features["words"].numpy(), tags.numpy(), weights.numpy() > 0
    vocab = assets["words"]
    return [vocab[i] for i in words[mask]], [assets["tags"][i] for i in tag_ids[mask]]


def test_given_assets_are_reused_not_rebuilt(shared_data):
    ewt = str(shared_data / "ud_english_ewt")
    small = RECIPE.load_data(_config(train_limit=40), ewt, 8).assets
    fresh = RECIPE.load_data(_config(train_limit=400), ewt, 8)
    assert len(fresh.assets["words"]) > len(small["words"])  # the slices differ
    train = read_conllu(shared_data / "ud_english_ewt" / "en_ewt-ud-train.conllu", limit=400)
    assert fresh.train_batches == count_batches(train, 8)
    assert len(fresh.eval_sentences) == 100  # train_limit // 4 dev sentences

    for training in (True, False):
        data = RECIPE.load_data(_config(train_limit=400), ewt, 8, training=training, assets=small)
        assert data.assets is small
        words, tags = _decode_words(data, small)
        # ids are those of the saved vocabulary: words it lacks are [UNK] there
        assert "[UNK]" in words and set(words) <= set(small["words"])
        assert set(tags) <= set(small["tags"])
        fresh_words, _ = _decode_words(fresh, fresh.assets)
        assert len(fresh_words) == len(words)
        unk_small = sum(w == "[UNK]" for w in words)
        assert unk_small > sum(w == "[UNK]" for w in fresh_words)
        assert (data.train is not None) == training
        model = RECIPE.build_model(_config(), data.assets)
        assert model.get_layer("word_embedding").input_dim == len(small["words"])


def test_evaluation_needs_only_a_dev_file(shared_data, tmp_path):
    ewt = shared_data / "ud_english_ewt"
    assets = RECIPE.load_data(_config(train_limit=40), str(ewt), 8).assets
    # a folder with only a dev file (a few sentences copied to a temporary folder)
    dev_text = (ewt / "en_ewt-ud-dev.conllu").read_text(encoding="utf-8")
    blocks = dev_text.split("\n\n")[:5]
    folder = tmp_path / "only_dev"
    folder.mkdir()
    (folder / "mine-dev.conllu").write_text("\n\n".join(blocks) + "\n\n", encoding="utf-8")
    data = RECIPE.load_data(_config(), str(folder), 4, training=False, assets=assets)
    assert len(data.eval_sentences) == 5 and data.train is None
    with pytest.raises(FileNotFoundError, match="train"):
        RECIPE.load_data(_config(), str(folder), 4, training=True, assets=assets)
    with pytest.raises(ValueError, match="assets"):
        RECIPE.load_data(_config(), str(folder), 4, training=False)


def test_bad_assets_are_clear_errors(shared_data):
    ewt = str(shared_data / "ud_english_ewt")
    assets = RECIPE.load_data(_config(train_limit=40), ewt, 8).assets
    with pytest.raises(ValueError, match="tagset"):
        RECIPE.load_data(_config(train_limit=40, tagset="xpos"), ewt, 8, assets=assets)
    with pytest.raises(ValueError, match="lack"):
        RECIPE.load_data(_config(train_limit=40), ewt, 8, assets={"classes": ["a"]})


def test_count_batches_matches_the_dataset(shared_data):
    sentences = read_conllu(shared_data / "ud_english_ewt" / "en_ewt-ud-dev.conllu", limit=300)
    assets = build_vocabularies(sentences, _config())
    ds = make_dataset(sentences, assets, featurizer_from_assets(assets), 16, training=True)
    assert sum(1 for _ in ds) == count_batches(sentences, 16) > 300 // 16


def _prepared(config, data_dir, tmp_path, assets=None) -> prepared.Prepared:
    splits, assets = RECIPE.prepare(config, data_dir, assets)
    path = prepared.write(
        tmp_path / "prepared",
        family="tagger",
        preset="tiny",
        config=config,
        assets=assets,
        splits=splits,
    )
    return prepared.read(path)


def _rows(batches):
    """Every sentence of `batches` as (word ids, char ids, tag ids) with the padding cut
    off (checked to be 0 with weight 0), sorted; and the real rows of each batch, sorted."""
    rows, sizes = [], []
    for x, y, w in batches:
        words, chars, y, w = (np.asarray(v) for v in (x["words"], x["chars"], y, w))
        sizes.append(int((w.sum(axis=1) > 0).sum()))
        for i in range(len(y)):
            n = int(w[i].sum())
            assert (w[i, :n] == 1).all() and (w[i, n:] == 0).all()
            assert not words[i, n:].any() and not chars[i, n:].any() and not y[i, n:].any()
            if n:
                rows.append((words[i, :n].tobytes(), chars[i, :n].tobytes(), y[i, :n].tobytes()))
    return sorted(rows), sorted(sizes)


def test_prepared_arrays_give_the_tf_pipelines_batches_and_scores(shared_data, tmp_path):
    """`prepare` records the assets `load_data` builds; `array_data` batches every sentence
    as the tf.data pipeline does (same ids, padding, weights, bucket batch sizes), in a
    bounded set of shapes; the loss and the gold-word accuracy are the same on both."""
    ewt = str(shared_data / "ud_english_ewt")
    config = _config(train_limit=200, word_dropout=0.0)
    data = _prepared(config, ewt, tmp_path)
    assert data.splits == ["train", "train_words", "val", "val_words"]
    lengths, words = data.split("train")["lengths"], data.split("train_words")
    assert lengths.dtype == np.int32 and len(lengths) == 200
    assert {k: (v.dtype, v.shape) for k, v in words.items()} == {
        "words": (np.int32, (lengths.read().sum(),)),
        "chars": (np.int32, (lengths.read().sum(), config["max_word_length"])),
        "tags": (np.int32, (lengths.read().sum(),)),
    }
    graph = RECIPE.load_data(config, ewt, 16)
    assert graph.assets == data.assets  # the exported model is the same either way
    arrays = RECIPE.array_data(config, data, 16)
    assert len(arrays.train) == graph.train_batches
    for name in ("train", "val"):
        ours = getattr(arrays, name)
        batches = [ours[i] for i in range(len(ours))]
        assert _rows(batches) == _rows(getattr(graph, name)), name
        shapes = {np.asarray(y).shape for _, y, _ in batches}
        assert len(shapes) <= len(BUCKETS) + 1 and {s[0] for s in shapes} == {16}

    model = RECIPE.build_model(config, data.assets)
    RECIPE.compile(model, config, graph, jit_compile=False)
    # a short batch padded with empty rows has the short batch's (masked) loss
    x, y, w = min(batches, key=lambda b: int((b[2].sum(axis=1) > 0).sum()))
    real = int((w.sum(axis=1) > 0).sum())
    assert real < 16
    short = {k: v[:real] for k, v in x.items()}
    np.testing.assert_allclose(
        model.test_on_batch(x, y, sample_weight=w),
        model.test_on_batch(short, y[:real], sample_weight=w[:real]),
        rtol=1e-6,
    )
    on_arrays = RECIPE.evaluate_arrays(model, config, arrays)
    losses = []  # the cross-entropy of every dev word, on the tf.data batches
    for features, tags, weights in graph.val:
        probs = model.predict_on_batch(features)
        picked = np.take_along_axis(probs, tags.numpy()[..., None], axis=-1)[..., 0]
        losses.extend(-np.log(picked[weights.numpy() > 0]))
    assert on_arrays["loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    scored = RECIPE.evaluate(model, config, graph)
    assert on_arrays["upos_accuracy"] == pytest.approx(scored["upos_accuracy"], abs=1e-9)
    assert on_arrays["eval_words"] == scored["eval_words"] > 0
    assert on_arrays["eval_sentences"] == scored["eval_sentences"] == 50


def test_prepare_reuses_given_assets(shared_data, tmp_path):
    ewt = str(shared_data / "ud_english_ewt")
    small = RECIPE.load_data(_config(train_limit=40), ewt, 8).assets
    data = _prepared(_config(train_limit=200), ewt, tmp_path, assets=small)
    assert data.assets == small
    tags = data.split("val_words")["tags"].read()
    assert tags.min() >= -1 and tags.max() < len(small["tags"])  # -1: a tag `small` lacks
    with pytest.raises(ValueError, match="tagset"):
        RECIPE.prepare(_config(train_limit=40, tagset="xpos"), ewt, small)


def test_numpy_features_are_the_graphs(shared_data):
    sentences = read_conllu(shared_data / "ud_english_ewt" / "en_ewt-ud-dev.conllu", limit=50)
    assets = build_vocabularies(sentences, _config(max_word_length=8))
    words = ["antidisestablishmentarianism", "The", "1984", "İstanbul", "東京", "qqqzzz", "a"]
    ours = TagEncoder(assets)
    graph = featurizer_from_assets(assets).features(tf.constant([words]))
    np.testing.assert_array_equal(ours.word_ids(words), graph["words"].numpy()[0])
    np.testing.assert_array_equal(ours.char_ids(words), graph["chars"].numpy()[0])
    assert ours.tag_ids(["NOUN", "NOT-A-TAG"]).tolist() == [assets["tags"].index("NOUN"), -1]


def test_word_dropout_is_drawn_from_seed_epoch_and_batch(shared_data, tmp_path):
    ewt = str(shared_data / "ud_english_ewt")
    data = _prepared(_config(train_limit=100), ewt, tmp_path)
    batches = TaggedBatches(
        data.split("train"), data.split("train_words"), 8, training=True, word_dropout=0.5
    )
    first = batches[0][0]["words"]
    again = batches[0][0]["words"]
    np.testing.assert_array_equal(first, again)
    clean = batches.gold(0)[0]["words"]
    dropped = first != clean
    assert dropped.any() and (first[dropped] == 1).all() and (clean[dropped] > 0).all()
    assert 0.3 < dropped.sum() / (clean > 0).sum() < 0.7
    train = read_conllu(shared_data / "ud_english_ewt" / "en_ewt-ud-train.conllu", limit=100)
    assert len(batches) == count_batches(train, 8)


def test_prepared_rows_must_add_up(shared_data, tmp_path):
    data = _prepared(_config(train_limit=40), str(shared_data / "ud_english_ewt"), tmp_path)
    words = dict(data.split("train_words"))
    words["tags"] = words["tags"][:-1]
    with pytest.raises(ValueError, match="rows of 'tags'"):
        TaggedBatches(data.split("train"), words, 8, training=False)
