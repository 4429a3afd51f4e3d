"""zoo.layers.attention: both scores against NumPy, masking, precomputed keys, one query or
several, serialization."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from zoo.layers.attention import Attention

RNG = np.random.default_rng(0)
QUERIES = RNG.normal(size=(2, 3, 4)).astype("float32")  # [B, T, D]
VALUES = RNG.normal(size=(2, 5, 6)).astype("float32")  # [B, S, E]
MASK = np.array([[True] * 5, [True, True, False, False, False]])


def _np(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _expected(layer, queries, values, mask):
    """The paper formulas with the layer's own weights, in NumPy."""
    w_k = _np(layer.key_proj.kernel)
    keys = values @ w_k  # [B, S, A]
    if layer.kind == "additive":  # v^T tanh(W_q q + b + W_k k)
        q = queries @ _np(layer.query_proj.kernel) + _np(layer.query_proj.bias)
        hidden = np.tanh(q[:, :, None, :] + keys[:, None, :, :])
        scores = (hidden @ _np(layer.score_proj.kernel))[..., 0]
    else:  # q^T W_k k
        scores = np.einsum("btd,bsd->bts", queries, keys)
    scores = np.where(mask[:, None, :], scores, -np.inf)
    weights = _softmax(scores)
    return weights @ values, weights


@pytest.mark.parametrize(("kind", "units"), [("additive", 7), ("multiplicative", 4)])
def test_scores_match_the_formulas_and_mask(kind, units):
    layer = Attention(kind, units)
    context, weights = layer(QUERIES, VALUES, mask=MASK)
    assert context.shape == (2, 3, 6) and weights.shape == (2, 3, 5)
    want_context, want_weights = _expected(layer, QUERIES, VALUES, MASK)
    np.testing.assert_allclose(_np(weights), want_weights, atol=1e-5)
    np.testing.assert_allclose(_np(context), want_context, atol=1e-5)
    assert np.all(_np(weights)[1, :, 2:] == 0)  # masked positions get no weight
    np.testing.assert_allclose(_np(weights).sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("kind", ["additive", "multiplicative"])
def test_precomputed_keys_and_single_queries_give_the_same_answer(kind):
    layer = Attention(kind, 4)
    context, weights = layer(QUERIES, VALUES, mask=MASK)
    keys = layer.project_keys(VALUES)  # once per sequence, as a decoder does
    for t in range(3):  # one query [B, D] per step
        c, w = layer(QUERIES[:, t], VALUES, keys=keys, mask=MASK)
        assert c.shape == (2, 6) and w.shape == (2, 5)
        np.testing.assert_allclose(_np(c), _np(context)[:, t], atol=1e-6)
        np.testing.assert_allclose(_np(w), _np(weights)[:, t], atol=1e-6)


def test_no_mask_attends_everywhere_and_config_round_trips():
    layer = Attention("additive", 8, name="soft")
    _, weights = layer(QUERIES, VALUES)
    assert np.all(_np(weights) > 0)
    clone = Attention.from_config(layer.get_config())
    assert (clone.kind, clone.units, clone.name) == ("additive", 8, "soft")
    clone(QUERIES, VALUES)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(_np(clone(QUERIES, VALUES)[1]), _np(weights), atol=1e-6)
    with pytest.raises(ValueError, match="attention must be one of"):
        Attention("dot-product")
