"""Show, Attend and Tell's model on its tiny preset (no data): attention weights, the doubly
stochastic penalty, teacher forcing against the decoding step, beam 1 against greedy."""

from __future__ import annotations

import numpy as np
import pytest
from keras import ops

from zoo import registry
from zoo.layers import decoding


@pytest.fixture(scope="module")
def example():
    """The tiny captioner without dropout, and two random images with caption prefixes."""
    spec = registry.get("captioner")
    model = spec.build("tiny", target_vocab_size=40, dropout=0.0)
    inputs = spec.example_inputs(spec.config("tiny"), np.random.default_rng(1))
    inputs["target_in"][1, 3:] = 0  # the second caption is shorter: padding
    return model, inputs


def test_grid_and_shapes(example):
    model, inputs = example
    assert model.grid == (4, 4) and model.attention_size(None) == 16  # 64 px / 16
    assert tuple(model(inputs).shape) == (2, 5, 40)
    assert not model.backbone.trainable  # frozen at first (train_encoder: false)


def test_features_input_gives_the_pixels_answer(example):
    model, inputs = example
    features = model.backbone(inputs["pixels"])
    from_features = model({"features": features, "target_in": inputs["target_in"]})
    np.testing.assert_allclose(from_features, model(inputs), atol=1e-5)


def test_teacher_forcing_is_the_decoding_step(example):
    """`call` (scan over the words) and `step` (the decoders' loop) compute the same words."""
    model, inputs = example
    logits = ops.convert_to_numpy(model(inputs))
    context, state = model.initial_state({"pixels": inputs["pixels"]})
    for t in range(inputs["target_in"].shape[1]):
        logp, state, weights = model.step(inputs["target_in"][:, t], state, context)
        want = logits[:, t] - np.log(np.exp(logits[:, t]).sum(-1, keepdims=True))
        np.testing.assert_allclose(ops.convert_to_numpy(logp), want, atol=1e-4)
        np.testing.assert_allclose(ops.convert_to_numpy(weights).sum(-1), 1.0, atol=1e-5)


def test_doubly_stochastic_penalty_changes_the_loss(example):
    model, inputs = example
    target_in = inputs["target_in"]
    y = np.concatenate([target_in[:, 1:], np.full((2, 1), 3)], axis=1) * (target_in > 0)
    weights = (y > 0).astype("float32")
    model.compile(loss="sparse_categorical_crossentropy")

    def loss(penalty: float) -> tuple[float, list]:
        model.attention_penalty = penalty
        y_pred = ops.softmax(model(inputs, training=True))
        total = model.compute_loss(inputs, y, y_pred, weights, training=True)
        return float(total), [float(x) for x in model.losses]

    try:
        plain, none = loss(0.0)
        penalized, added = loss(1.0)
        doubled, added2 = loss(2.0)
    finally:
        model.attention_penalty = 1.0
    assert none == [] and len(added) == 1 and added[0] > 0
    assert penalized == pytest.approx(plain + added[0], rel=1e-5)
    assert added2[0] == pytest.approx(2 * added[0], rel=1e-5)
    assert doubled > penalized > plain

    # the penalty is sum_i (1 - sum_t alpha_ti)^2 over the real words, per word
    context, state = model.initial_state({"pixels": inputs["pixels"]})
    alphas = []
    for t in range(target_in.shape[1]):
        _, state, alpha = model.step(target_in[:, t], state, context)
        alphas.append(ops.convert_to_numpy(alpha))
    mask = (target_in > 0).astype("float32")
    coverage = (np.stack(alphas, 1) * mask[:, :, None]).sum(1)
    assert added[0] == pytest.approx(((1 - coverage) ** 2).sum() / mask.sum(), rel=1e-4)


def test_attention_of_every_emitted_word_sums_to_one(example):
    model, inputs = example
    images = {"pixels": inputs["pixels"]}
    for ids, attention, _ in (
        decoding.greedy_decode(model, images, 8),
        decoding.beam_search(model, images, 3, 8),
    ):
        ids, sums = ops.convert_to_numpy(ids), ops.convert_to_numpy(attention).sum(-1)
        assert sums.shape == ids.shape
        np.testing.assert_allclose(sums, (ids > 0).astype("float32"), atol=1e-5)


def test_beam_size_one_is_greedy(example):
    model, inputs = example
    images = {"pixels": inputs["pixels"]}
    greedy_ids, greedy_attention, greedy_scores = decoding.greedy_decode(model, images, 8)
    beam_ids, beam_attention, beam_scores = decoding.beam_search(model, images, 1, 8)
    np.testing.assert_array_equal(ops.convert_to_numpy(beam_ids), ops.convert_to_numpy(greedy_ids))
    np.testing.assert_allclose(beam_attention, greedy_attention, atol=1e-6)
    np.testing.assert_allclose(beam_scores, greedy_scores, atol=1e-5)


def test_unknown_feature_map_is_a_clear_error():
    with pytest.raises(ValueError, match="no feature map 'inception_9z'"):
        registry.get("captioner").build("tiny", target_vocab_size=40, feature_map="inception_9z")


def test_word_dropout_replaces_words_in_training_only():
    """`WordDropout`: about `rate` of the words become "[UNK]" (id 1) in training, padding
    and "<s>" never do, and inference leaves the ids alone; in the captioner it changes the
    training-mode logits only, and a model without it has no such layer (older runs)."""
    from zoo.layers.word_dropout import WordDropout

    ids = np.tile(np.array([[2, 5, 6, 7, 8, 9, 10, 11, 0, 0]], "int32"), (400, 1))
    layer = WordDropout(0.3, unk_id=1, kept_ids=(0, 2), seed=7)
    dropped = ops.convert_to_numpy(layer(ids, training=True))
    assert np.array_equal(ops.convert_to_numpy(layer(ids)), ids)
    words = ids > 2
    assert set(np.unique(dropped[~words])) == {0, 2} and np.array_equal(
        dropped[~words], ids[~words]
    )
    changed = dropped[words] != ids[words]
    assert np.all(dropped[words][changed] == 1)
    assert 0.27 < changed.mean() < 0.33, changed.mean()  # 2,800 words at 0.3

    spec = registry.get("captioner")
    inputs = spec.example_inputs(spec.config("tiny"), np.random.default_rng(1))
    plain = spec.build("tiny", target_vocab_size=40, dropout=0.0)
    dropping = spec.build("tiny", target_vocab_size=40, dropout=0.0, word_dropout=0.5)
    assert plain.input_word_dropout is None
    assert [w.path for w in plain.weights] == [w.path for w in dropping.weights]
    dropping.set_weights(plain.get_weights())
    np.testing.assert_allclose(dropping(inputs), plain(inputs), atol=1e-6)
    assert not np.allclose(dropping(inputs, training=True), plain(inputs, training=True))


def test_train_encoder_from_a_block_freezes_the_layers_below_it():
    """`train_encoder="inception_4d"`: blocks 4d and 4e train, every layer below them is
    frozen, and batch norm stays in inference (its moving statistics do not move); True
    trains the whole backbone, and a name that is no block is a clear error."""
    spec = registry.get("captioner")
    inputs = spec.example_inputs(spec.config("tiny"), np.random.default_rng(1))
    top = spec.build("tiny", target_vocab_size=40, train_encoder="inception_4d")
    trainable = {layer.name for layer in top.backbone.layers if layer.trainable and layer.weights}
    assert trainable and all(n.startswith(("inception_4d_", "inception_4e_")) for n in trainable)
    assert "inception_4d_1x1" in trainable and "inception_4c_1x1" not in trainable
    frozen_weights = len(top.backbone.non_trainable_weights)
    whole = spec.build("tiny", target_vocab_size=40, train_encoder=True)
    assert len(whole.backbone.non_trainable_weights) < frozen_weights
    bn = top.backbone.get_layer("inception_4e_1x1_bn")
    before = ops.convert_to_numpy(bn.moving_mean).copy()
    top(inputs, training=True)
    np.testing.assert_array_equal(ops.convert_to_numpy(bn.moving_mean), before)
    with pytest.raises(ValueError, match="names no block of the encoder: .*inception_4e"):
        spec.build("tiny", target_vocab_size=40, train_encoder="inception_9z")
