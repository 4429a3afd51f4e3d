"""Encoder-decoder LSTM translator with attention (keras.layers / keras.ops only)."""

from __future__ import annotations

import keras
from keras import layers, ops

from zoo.layers import decoding
from zoo.layers.attention import Attention


@keras.saving.register_keras_serializable(package="zoo.seq2seq")
class Seq2SeqTranslator(keras.Model):
    """Bidirectional-LSTM encoder, LSTM decoder, global attention over the encoder states.

    The architecture follows Sutskever et al. 2014 ("Sequence to Sequence Learning with
    Neural Networks") with the attention of Luong et al. 2015 ("Effective Approaches to
    Attention-based Neural Machine Translation"): the decoder LSTM reads the previous target
    word; its state h_t attends over the encoder states s_j; the attentional vector
    tanh(W [c_t; h_t]) predicts the next word. The score is either additive
    (Bahdanau et al. 2015: v^T tanh(W1 h_t + W2 s_j)) or multiplicative (Luong "general":
    h_t^T W s_j), computed by `zoo.layers.attention.Attention`. Since attention comes after
    the decoder LSTM (no input feeding), teacher forcing runs the decoder LSTM over the whole
    target in one call. Greedy and beam search are `zoo.layers.decoding`'s: the model is a
    `SequenceDecoder` (`initial_state`, `attention_size`, `step` below).

    Args:
        source_vocab_size: source vocabulary size (id 0 is padding).
        target_vocab_size: target vocabulary size (id 0 is padding).
        embedding_dim: word embedding width (both languages).
        encoder_units: LSTM units per direction of the encoder.
        decoder_units: LSTM units of the decoder.
        attention: "additive" or "multiplicative".
        attention_units: width of the additive attention's hidden layer.
        dropout: dropout on embeddings and the attentional vector.
        bos_id: target id that starts decoding ("<s>").
        eos_id: target id that ends a translation ("</s>").

    Inputs of `call`: {"source_ids": int [B, S], "target_in": int [B, T]} (0 = padding);
    output: next-word logits [B, T, target_vocab_size].

    Example:
        >>> model = Seq2SeqTranslator(100, 120, embedding_dim=16, encoder_units=16,
        ...                           decoder_units=16)
        >>> ids, attention, scores = model.translate_ids([[5, 6, 2]], beam_size=2, max_length=4)
    """

    def __init__(
        self,
        source_vocab_size: int,
        target_vocab_size: int,
        embedding_dim: int = 256,
        encoder_units: int = 256,
        decoder_units: int = 256,
        attention: str = "multiplicative",
        attention_units: int = 256,
        dropout: float = 0.3,
        bos_id: int = 2,
        eos_id: int = 3,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (
            ("source_vocab_size", source_vocab_size),
            ("target_vocab_size", target_vocab_size),
        ):
            if not isinstance(value, int) or value < 4:
                raise ValueError(f"{name} must be an int >= 4, got {value!r}")
        self.source_vocab_size = source_vocab_size
        self.target_vocab_size = target_vocab_size
        self.embedding_dim = embedding_dim
        self.encoder_units = encoder_units
        self.decoder_units = decoder_units
        self.attention = attention
        self.attention_units = attention_units
        self.dropout = dropout
        self.bos_id = bos_id
        self.eos_id = eos_id

        self.source_embedding = layers.Embedding(
            source_vocab_size, embedding_dim, mask_zero=True, name="source_embedding"
        )
        self.target_embedding = layers.Embedding(
            target_vocab_size, embedding_dim, name="target_embedding"
        )
        self.embedding_dropout = layers.Dropout(dropout)
        self.encoder = layers.Bidirectional(
            layers.LSTM(encoder_units, return_sequences=True, return_state=True),
            name="encoder",
        )
        self.init_h = layers.Dense(decoder_units, activation="tanh", name="init_h")
        self.init_c = layers.Dense(decoder_units, name="init_c")
        self.decoder_lstm = layers.LSTM(decoder_units, return_sequences=True, name="decoder")
        self.attention_layer = Attention(
            attention,
            attention_units if attention == "additive" else decoder_units,
            name="attention",
        )
        self.combine = layers.Dense(decoder_units, activation="tanh", name="attentional")
        self.output_dropout = layers.Dropout(dropout)
        self.output_proj = layers.Dense(target_vocab_size, name="logits")
        # Every variable exists after the constructor, without a call (an eager call compiled
        # each op apart under JAX: 3.5 s): weights load and the optimizer builds at once.
        states = (None, None, 2 * encoder_units)
        for embedding in (self.source_embedding, self.target_embedding):
            embedding.build((None, None))
        self.encoder.build((None, None, embedding_dim))
        for dense in (self.init_h, self.init_c):
            dense.build((None, 2 * encoder_units))
        self.decoder_lstm.build((None, None, embedding_dim))
        self.attention_layer.build((None, None, decoder_units), states)
        self.combine.build((None, None, 2 * encoder_units + decoder_units))
        self.output_proj.build((None, None, decoder_units))
        self.built = True

    # -- building blocks ------------------------------------------------------------------

    def encode(self, source_ids, training: bool = False):
        """Source ids [B, S] -> (context, state) of decoding (see `initial_state`)."""
        source_ids = ops.cast(source_ids, "int32")
        mask = ops.not_equal(source_ids, 0)
        x = self.source_embedding(source_ids)
        x = self.embedding_dropout(x, training=training)
        states, fh, fc, bh, bc = self.encoder(x, mask=mask, training=training)
        h0 = self.init_h(ops.concatenate([fh, bh], axis=-1))
        c0 = self.init_c(ops.concatenate([fc, bc], axis=-1))
        keys = self.attention_layer.project_keys(states)
        return (states, keys, mask), (h0, c0)

    def logits_from(self, decoder_out, context, training: bool = False):
        """Decoder outputs and attention contexts -> next-word logits."""
        attentional = self.combine(ops.concatenate([context, decoder_out], axis=-1))
        attentional = self.output_dropout(attentional, training=training)
        return self.output_proj(attentional)

    def call(self, inputs, training: bool = False):
        (states, keys, mask), initial = self.encode(inputs["source_ids"], training=training)
        y = self.target_embedding(ops.cast(inputs["target_in"], "int32"))
        y = self.embedding_dropout(y, training=training)
        # Padding only trails the target, so real steps are unaffected without a mask.
        decoder_out = self.decoder_lstm(y, initial_state=list(initial), training=training)
        context, _ = self.attention_layer(decoder_out, states, keys=keys, mask=mask)
        return self.logits_from(decoder_out, context, training=training)

    # -- the decoding interface of zoo.layers.decoding ------------------------------------

    def initial_state(self, source_ids):
        """Source ids [B, S] -> (context (states [B, S, 2E], keys, mask [B, S] bool),
        state (h [B, D], c [B, D]))."""
        return self.encode(source_ids)

    def attention_size(self, context):
        """S, the source length."""
        return ops.shape(context[2])[1]

    def step(self, tokens, state, context):
        """One decoder step: tokens [B] -> (log-probs [B, V], (h, c), attention [B, S])."""
        states, keys, mask = context
        x = self.target_embedding(ops.cast(tokens, "int32"))
        out, (h, c) = self.decoder_lstm.cell(x, list(state), training=False)
        attended, weights = self.attention_layer(out, states, keys=keys, mask=mask)
        logits = self.logits_from(out, attended)
        return ops.log_softmax(logits, axis=-1), (h, c), weights

    # -- inference ----------------------------------------------------------------------

    def translate_ids(
        self,
        source_ids,
        beam_size=1,
        max_length=None,
        length_penalty=0.0,
        *,
        unk_id=None,
        no_repeat_ngram_size=0,
    ):
        """Decode source ids [B, S]: greedy when beam_size == 1, else beam search.

        Returns (target ids [B, L] int32 (0 after "</s>"), attention [B, L, S], log-prob
        scores [B]). `max_length` None means 2 * S + 10. `length_penalty` (Wu et al.'s
        alpha), `unk_id` (never emitted; the target vocabulary's "[UNK]") and
        `no_repeat_ngram_size` are `zoo.layers.decoding`'s.
        """
        if max_length is None:
            max_length = 2 * ops.shape(source_ids)[1] + 10
        hygiene = {"unk_id": unk_id, "no_repeat_ngram_size": no_repeat_ngram_size}
        if isinstance(beam_size, int) and beam_size == 1:
            return decoding.greedy_decode(self, source_ids, max_length, **hygiene)
        return decoding.beam_search(
            self, source_ids, beam_size, max_length, length_penalty, **hygiene
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            source_vocab_size=self.source_vocab_size,
            target_vocab_size=self.target_vocab_size,
            embedding_dim=self.embedding_dim,
            encoder_units=self.encoder_units,
            decoder_units=self.decoder_units,
            attention=self.attention,
            attention_units=self.attention_units,
            dropout=self.dropout,
            bos_id=self.bos_id,
            eos_id=self.eos_id,
        )
        return config
