"""Global soft attention of a query over a set of annotation vectors (keras.ops only).

Two scores, as in the encoder-decoder literature:

- "additive" (Bahdanau, Cho & Bengio 2015, "Neural Machine Translation by Jointly Learning
  to Align and Translate"): score(q, k) = v^T tanh(W_q q + W_k k). Show, Attend and Tell's
  soft attention (Xu et al. 2015) is this score with the annotation vectors a_i of an image
  as keys and the LSTM state h_{t-1} as the query.
- "multiplicative" (Luong, Pham & Manning 2015, "Effective Approaches to Attention-based
  Neural Machine Translation", the "general" score): score(q, k) = q^T W_k k.

The weights are softmax(scores) over the positions the mask allows, and the context is the
weighted sum of the values. The key projection W_k k depends on the annotations only, so a
decoder computes it once per sequence (`project_keys`) and passes it to every step.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

ATTENTION_KINDS = ("additive", "multiplicative")
_NEG = -1e9


@keras.saving.register_keras_serializable(package="zoo")
class Attention(layers.Layer):
    """Soft attention: queries and values (annotations) -> (context, weights).

    Args:
        kind: "additive" (Bahdanau) or "multiplicative" (Luong "general").
        units: for "additive", the width of the hidden layer (W_q, W_k project into it);
            for "multiplicative", the width of the queries (W_k projects the keys into
            the query space).

    Call arguments:
        queries: [B, D] (one query per row, e.g. a decoder state) or [B, T, D].
        values: the annotations [B, S, E] (encoder states, or the L = H * W feature vectors
            of an image grid).
        keys: `project_keys(values)` computed beforehand, or None to compute it here.
        mask: bool [B, S], True where a value may be attended to (None: all).

    Returns:
        (context [B, E] or [B, T, E], weights [B, S] or [B, T, S]); each row of weights sums
        to 1 over the allowed positions.

    Example:
        >>> attention = Attention("additive", units=8)
        >>> values = keras.ops.ones((2, 5, 6))
        >>> keys = attention.project_keys(values)  # once per sequence
        >>> context, weights = attention(keras.ops.ones((2, 4)), values, keys=keys)
        >>> tuple(context.shape), tuple(weights.shape)
        ((2, 6), (2, 5))
    """

    def __init__(self, kind: str = "additive", units: int = 256, **kwargs):
        super().__init__(**kwargs)
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {kind!r}")
        self.kind = kind
        self.units = int(units)
        self.supports_masking = True  # the mask of the values is consumed here (see below)
        self.key_proj = layers.Dense(self.units, use_bias=False, name="attention_keys")
        if kind == "additive":
            self.query_proj = layers.Dense(self.units, name="attention_query")
            self.score_proj = layers.Dense(1, use_bias=False, name="attention_score")

    def build(self, queries_shape, values_shape, keys_shape=None):
        if not self.key_proj.built:  # a decoder may have projected the keys already
            self.key_proj.build(values_shape)
        if self.kind == "additive":
            self.query_proj.build(queries_shape)
            self.score_proj.build((*queries_shape[:-1], self.units))
        self.built = True

    def project_keys(self, values):
        """W_k values: [B, S, E] -> [B, S, units], the part of the score shared by all steps."""
        with keras.name_scope(self.name, caller=self):  # as inside `call`
            return self.key_proj(values)

    def call(self, queries, values, keys=None, mask=None):
        if keys is None:
            keys = self.project_keys(values)
        single = len(queries.shape) == 2
        if single:
            queries = ops.expand_dims(queries, 1)  # [B, 1, D]
        if self.kind == "additive":
            q = self.query_proj(queries)  # [B, T, A]
            hidden = ops.tanh(ops.expand_dims(q, 2) + ops.expand_dims(keys, 1))  # [B, T, S, A]
            scores = ops.squeeze(self.score_proj(hidden), -1)
        else:
            scores = ops.matmul(queries, ops.transpose(keys, (0, 2, 1)))  # [B, T, S]
        if mask is not None:
            scores = ops.where(ops.expand_dims(mask, 1), scores, _NEG)
        weights = ops.softmax(scores, axis=-1)
        context = ops.matmul(weights, values)
        if single:
            return ops.squeeze(context, 1), ops.squeeze(weights, 1)
        return context, weights

    def compute_mask(self, inputs, previous_mask=None):
        # `mask` marks the attended positions; the context and weights carry no mask
        return None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "kind": self.kind, "units": self.units}
