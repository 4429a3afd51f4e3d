"""A GPT-style decoder-only language model (GPT-2 architecture, after nanoGPT's model.py).

Token + learned position embeddings, pre-LayerNorm transformer blocks with causal multi-head
self-attention and a GELU MLP, a final LayerNorm, and an output projection tied to the token
embedding. Besides the plain forward pass (`call`, used for training), the model exposes the
two halves of incremental decoding with a key/value cache: `prefill` (a whole window, which
also fills the cache) and `decode_step` (one new token per row, attending to the cache).

Cache layout (one tensor, as in keras-hub): [batch, n_layer, 2 (key, value), context, n_head,
head_dim]. keras.ops only, so the model runs on TensorFlow, JAX and PyTorch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import keras
from keras import ops

_INIT_STD = 0.02


def _dense(units: int, use_bias: bool, std: float, dtype: Any, name: str) -> keras.layers.Dense:
    return keras.layers.Dense(
        units,
        use_bias=use_bias,
        kernel_initializer=keras.initializers.RandomNormal(stddev=std),
        bias_initializer="zeros",
        dtype=dtype,
        name=name,
    )


def _layer_norm(use_bias: bool, dtype: Any, name: str) -> keras.layers.LayerNormalization:
    # nanoGPT's LayerNorm(bias=False) keeps the scale and drops the offset with the biases
    return keras.layers.LayerNormalization(epsilon=1e-5, center=use_bias, dtype=dtype, name=name)


@dataclass(frozen=True)
class BlockConfig:
    """What every transformer block of a GPT shares (its layers read the same config).

    Attributes:
        n_embd: model width.
        n_head: attention heads (must divide `n_embd`).
        dropout: dropout on the attention weights and the residual branches.
        use_bias: biases in the Dense projections and LayerNorm offsets.
        proj_std: init std of the projections into the residual stream (GPT-2 scales it
            by 1/sqrt(2 n_layer)).
    """

    n_embd: int
    n_head: int
    dropout: float = 0.0
    use_bias: bool = True
    proj_std: float = _INIT_STD

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


class _BlockLayer(keras.layers.Layer):
    """A layer built from a `BlockConfig` (given as one, or as its dict from `get_config`)."""

    def __init__(self, config: BlockConfig | dict, **kwargs):
        super().__init__(**kwargs)
        self.config = config if isinstance(config, BlockConfig) else BlockConfig(**config)

    def get_config(self):
        return {**super().get_config(), "config": asdict(self.config)}


class CausalSelfAttention(_BlockLayer):
    """Multi-head causal self-attention: softmax(Q K^T / sqrt(d) + causal mask) V.

    Args:
        config: the block's `BlockConfig`.
    """

    def __init__(self, config: BlockConfig | dict, **kwargs):
        super().__init__(config, **kwargs)
        c, policy = self.config, self.dtype_policy
        self.qkv = _dense(3 * c.n_embd, c.use_bias, _INIT_STD, policy, "qkv")
        self.proj = _dense(c.n_embd, c.use_bias, c.proj_std, policy, "proj")
        # every sublayer gets the policy: a float32 Dropout would cast bf16 activations back
        self.attn_dropout = keras.layers.Dropout(c.dropout, dtype=policy)
        self.resid_dropout = keras.layers.Dropout(c.dropout, dtype=policy)

    def build(self, input_shape):
        self.qkv.build(input_shape)
        self.proj.build(input_shape[:-1] + (self.config.n_embd,))
        self.built = True

    def _split_heads(self, x):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        c = self.config
        qkv = ops.reshape(self.qkv(x), (batch, length, 3, c.n_head, c.head_dim))
        return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each [B, T, H, D]

    def _attend(self, q, k, v, mask, training):
        # q [B, Tq, H, D], k/v [B, Tk, H, D], mask [Tq, Tk] (True = may attend)
        scores = ops.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(self.config.head_dim)
        scores = ops.cast(scores, "float32")  # softmax in float32 under mixed precision
        scores = ops.where(mask[None, None], scores, ops.full_like(scores, -1e9))
        weights = ops.cast(ops.softmax(scores, axis=-1), self.compute_dtype)
        weights = self.attn_dropout(weights, training=training)
        out = ops.einsum("bhqk,bkhd->bqhd", weights, v)
        batch, length = ops.shape(out)[0], ops.shape(out)[1]
        out = ops.reshape(out, (batch, length, self.config.n_embd))
        return self.resid_dropout(self.proj(out), training=training)

    def call(self, x, training=None):
        """Full causal attention over `x` [B, T, C]; returns (output, key, value)."""
        q, k, v = self._split_heads(x)
        length = ops.shape(x)[1]
        mask = ops.tril(ops.ones((length, length), dtype="bool"))
        return self._attend(q, k, v, mask, training), k, v

    def call_cached(self, x, key_cache, value_cache, index):
        """One token per row: `x` [B, 1, C] at position `index`; caches [B, Tmax, H, D].

        Returns (output, key_cache, value_cache) with the new key/value written at `index`.
        """
        q, k, v = self._split_heads(x)
        zero = ops.zeros((), dtype="int32")
        start = [zero, ops.cast(index, "int32"), zero, zero]
        key_cache = ops.slice_update(key_cache, start, ops.cast(k, key_cache.dtype))
        value_cache = ops.slice_update(value_cache, start, ops.cast(v, value_cache.dtype))
        positions = ops.arange(ops.shape(key_cache)[1], dtype="int32")
        mask = ops.expand_dims(positions <= ops.cast(index, "int32"), 0)  # [1, Tmax]
        return self._attend(q, key_cache, value_cache, mask, False), key_cache, value_cache


class TransformerBlock(_BlockLayer):
    """Pre-LayerNorm block: x + attn(ln1(x)), then x + mlp(ln2(x)) with a 4x GELU MLP.

    Args:
        config: the block's `BlockConfig`.
    """

    def __init__(self, config: BlockConfig | dict, **kwargs):
        super().__init__(config, **kwargs)
        c, policy = self.config, self.dtype_policy
        self.ln1 = _layer_norm(c.use_bias, policy, "ln1")
        self.attn = CausalSelfAttention(c, dtype=policy, name="attn")
        self.ln2 = _layer_norm(c.use_bias, policy, "ln2")
        self.fc = _dense(4 * c.n_embd, c.use_bias, _INIT_STD, policy, "fc")
        self.fc_proj = _dense(c.n_embd, c.use_bias, c.proj_std, policy, "fc_proj")
        self.mlp_dropout = keras.layers.Dropout(c.dropout, dtype=policy)

    def build(self, input_shape):
        self.ln1.build(input_shape)
        self.attn.build(input_shape)
        self.ln2.build(input_shape)
        self.fc.build(input_shape)
        self.fc_proj.build(input_shape[:-1] + (4 * self.config.n_embd,))
        self.built = True

    def _mlp(self, x, training):
        hidden = ops.gelu(self.fc(self.ln2(x)), approximate=True)
        return self.mlp_dropout(self.fc_proj(hidden), training=training)

    def call(self, x, training=None):
        """Returns (output, key, value); key/value are this block's attention keys/values."""
        attn, k, v = self.attn(self.ln1(x), training=training)
        x = x + attn
        return x + self._mlp(x, training), k, v

    def call_cached(self, x, key_cache, value_cache, index):
        attn, key_cache, value_cache = self.attn.call_cached(
            self.ln1(x), key_cache, value_cache, index
        )
        x = x + attn
        return x + self._mlp(x, False), key_cache, value_cache


@keras.saving.register_keras_serializable(package="zoo.gpt")
class GPT(keras.Model):
    """GPT-2 style causal language model (Radford et al. 2019; Karpathy's nanoGPT).

    Args:
        vocab_size: number of token ids.
        block_size: context length (number of learned positions).
        n_layer: transformer blocks.
        n_head: attention heads per block.
        n_embd: model width.
        dropout: dropout rate (embeddings, attention weights, residual branches).
        use_bias: biases in the Dense projections and LayerNorm offsets (GPT-2 has them;
            nanoGPT's training script turns them off).
        dtype: a Keras dtype policy name, e.g. "float32" or "mixed_bfloat16".

    `model(token_ids)` maps int token ids [B, T] (T <= block_size) to float32 logits [B, T, V].

    Example:
        >>> model = GPT(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32)
        >>> model(keras.ops.zeros((1, 8), "int32")).shape
        (1, 8, 65)
    """

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layer: int,
        n_head: int,
        n_embd: int,
        dropout: float = 0.0,
        use_bias: bool = True,
        dtype: Any = None,
        **kwargs,
    ):
        super().__init__(dtype=dtype, **kwargs)
        self.vocab_size, self.block_size = int(vocab_size), int(block_size)
        self.n_layer, self.n_head, self.n_embd = int(n_layer), int(n_head), int(n_embd)
        self.dropout, self.use_bias = float(dropout), bool(use_bias)
        policy = self.dtype_policy
        init = keras.initializers.RandomNormal(stddev=_INIT_STD)
        self.wte = keras.layers.Embedding(
            vocab_size, n_embd, embeddings_initializer=init, dtype=policy, name="wte"
        )
        self.wpe = keras.layers.Embedding(
            block_size, n_embd, embeddings_initializer=init, dtype=policy, name="wpe"
        )
        self.drop = keras.layers.Dropout(dropout, dtype=policy)
        block = BlockConfig(n_embd, n_head, dropout, use_bias, _INIT_STD / math.sqrt(2 * n_layer))
        self.blocks = [TransformerBlock(block, dtype=policy, name=f"h{i}") for i in range(n_layer)]
        self.ln_f = _layer_norm(use_bias, policy, "ln_f")
        self.build((None, None))

    def build(self, input_shape):
        self.wte.build(input_shape)
        self.wpe.build(input_shape)
        for block in self.blocks:
            block.build((None, None, self.n_embd))
        self.ln_f.build((None, None, self.n_embd))
        self.built = True

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def _embed(self, token_ids, positions, training):
        x = self.wte(token_ids) + self.wpe(positions)
        return self.drop(x, training=training)

    def _logits(self, x):
        x = self.ln_f(x)
        logits = ops.matmul(x, ops.transpose(ops.cast(self.wte.embeddings, x.dtype)))
        return ops.cast(logits, "float32")

    def _forward(self, token_ids, training):
        length = ops.shape(token_ids)[1]
        x = self._embed(token_ids, ops.arange(length)[None, :], training)
        keys, values = [], []
        for block in self.blocks:
            x, k, v = block(x, training=training)
            keys.append(k)
            values.append(v)
        return self._logits(x), keys, values

    def call(self, token_ids, training=None):
        logits, _, _ = self._forward(token_ids, training)
        return logits

    def empty_cache(self, batch_size):
        """A zero key/value cache for `batch_size` rows and the full context."""
        shape = (batch_size, self.n_layer, 2, self.block_size, self.n_head, self.head_dim)
        return ops.zeros(shape, dtype=self.compute_dtype)

    def prefill(self, token_ids):
        """Forward a whole window [B, block_size]; returns (logits [B, T, V], filled cache)."""
        logits, keys, values = self._forward(token_ids, False)
        cache = ops.stack([ops.stack(keys, axis=1), ops.stack(values, axis=1)], axis=2)
        return logits, ops.cast(cache, self.compute_dtype)

    def decode_step(self, token_ids, cache, index):
        """Logits for one new token per row.

        Args:
            token_ids: [B, 1] the token at position `index` of the window.
            cache: keys/values of positions < `index` (later positions are ignored).
            index: scalar position of `token_ids` in the window (< block_size).

        Returns:
            (logits [B, 1, V], cache with position `index` written).
        """
        x = self._embed(token_ids, ops.reshape(index, (1, 1)), False)
        layers = []
        for i, block in enumerate(self.blocks):
            x, k, v = block.call_cached(x, cache[:, i, 0], cache[:, i, 1], index)
            layers.append(ops.stack([k, v], axis=1))
        return self._logits(x), ops.stack(layers, axis=1)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
            block_size=self.block_size,
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
            dropout=self.dropout,
            use_bias=self.use_bias,
        )
        return config
