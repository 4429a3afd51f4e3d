"""The tagger recipe's data side: saved assets are reused as they are (resume, evaluate),
evaluation needs no training file, batch counting."""

from __future__ import annotations

import pytest

from training.data.conllu import read_conllu
from training.recipes.tagger import (
    RECIPE,
    build_vocabularies,
    count_batches,
    featurizer_from_assets,
    make_dataset,
)
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
