"""Show, Attend and Tell: an image captioner with soft attention (keras.layers / keras.ops only).

Xu, Ba, Kiros, Cho, Courville, Salakhutdinov, Zemel & Bengio, "Show, Attend and Tell: Neural
Image Caption Generation with Visual Attention" (ICML 2015), the soft ("deterministic")
attention model, section 3 and 4.2:

- encoder: a convolutional backbone's feature map [h, w, D], flattened into L = h * w
  annotation vectors a_i (the paper: VGG's 14x14x512 conv5_4; here any zoo backbone's named
  feature map, GoogLeNet's inception_4e by default);
- decoder: an LSTM whose initial h_0, c_0 are MLPs (tanh) of the mean annotation; at step t
  the additive attention MLP scores every a_i against h_{t-1}, the weights alpha_t are their
  softmax, the context z_t = beta_t * sum_i alpha_ti a_i is gated by beta_t = sigmoid(f_beta
  (h_{t-1})), and the LSTM reads [E y_{t-1}; z_t];
- deep output: p(y_t) = softmax(L_o tanh(E y_{t-1} + L_h h_t + L_z z_t)), with dropout on h_t
  and on the tanh layer (as the authors' code, arctic-captions, applies it);
- loss: the word cross-entropy (the recipe's) plus the doubly stochastic penalty
  lambda * sum_i (1 - sum_t alpha_ti)^2 of every caption, added with `add_loss` in training
  and divided like the cross-entropy by the number of target words.

The recurrence is `ops.scan` over the words (teacher forcing), and its step is the same
function greedy and beam search call (`step`), through `zoo.layers.decoding`.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

from zoo.layers.attention import Attention
from zoo.layers.word_dropout import WordDropout
from zoo.tasks.image_classifier import backbone_of

#: the name of the encoder layer: what `init_from(model, run, ["backbone"])` initialises
BACKBONE = "backbone"


def encoder_backbone(
    family: str, preset: str, image_size: int, feature_map: str, name: str = BACKBONE
) -> keras.Model:
    """A zoo image family's backbone, cut at `feature_map`: pixels [s, s, 3] in [0, 255]
    -> feature map [h, w, D]. Its layers keep the family's names, so a trained run of that
    family initialises them layer by layer."""
    from zoo import registry

    spec = registry.get(family)
    config = spec.config(preset, image_size=int(image_size))
    sizes = {k: v for k, v in spec.example_sizes.items() if config.get(k) is registry.DATA_DECIDED}
    backbone = backbone_of(spec.builder({**config, **sizes}))
    if not isinstance(backbone.output, dict) or feature_map not in backbone.output:
        known = sorted(backbone.output) if isinstance(backbone.output, dict) else []
        raise ValueError(f"{family} has no feature map {feature_map!r}; choose from {known}")
    return keras.Model(backbone.input, backbone.output[feature_map], name=name)


@keras.saving.register_keras_serializable(package="zoo.captioner")
class ShowAttendTell(keras.Model):
    """Soft-attention image captioner (Xu et al. 2015) over a zoo backbone's feature grid.

    Args:
        target_vocab_size: V, the caption vocabulary (id 0 padding, then "[UNK]", "<s>",
            "</s>", words).
        encoder: the zoo family whose backbone encodes the image ("googlenet").
        encoder_preset: that family's preset the backbone is built from (its width and
            normalization must match a run that initialises it).
        image_size: the square input side in pixels.
        feature_map: the backbone output used as annotations ("inception_4e").
        train_encoder: fine-tune the backbone too: True for all of it, a block's name
            ("inception_4d") for that block and those above it, with batch norm kept in
            inference (the Keras transfer-learning recipe); False: frozen, batch norm in
            inference.
        embedding_dim: word embedding width (and of the deep output layer).
        decoder_units: LSTM units.
        attention_units: width of the attention MLP.
        dropout: dropout rate on h_t and on the deep output layer.
        attention_penalty: lambda of the doubly stochastic penalty (the paper: 1).
        bos_id: the id that starts decoding ("<s>").
        eos_id: the id that ends a caption ("</s>").
        word_dropout: the chance that a teacher-forced input word is "[UNK]" (id 1) in
            training (0: no `WordDropout` layer at all).

    Inputs of `call`: {"pixels": float [B, s, s, 3] in [0, 255] or "features": float
    [B, h, w, D] (the backbone's output, e.g. cached), "target_in": int [B, T] ("<s>" then
    the words, 0-padded)}; output: next-word logits [B, T, V].

    Example:
        >>> model = ShowAttendTell(50, encoder_preset="tiny", image_size=64,
        ...                        embedding_dim=16, decoder_units=16, attention_units=8)
        >>> model.grid
        (4, 4)
        >>> logits = model({"pixels": keras.ops.zeros((1, 64, 64, 3)),
        ...                 "target_in": keras.ops.ones((1, 3), "int32")})
    """

    def __init__(
        self,
        target_vocab_size: int,
        encoder: str = "googlenet",
        encoder_preset: str = "imagenette",
        image_size: int = 160,
        feature_map: str = "inception_4e",
        train_encoder: bool | str = False,
        embedding_dim: int = 256,
        decoder_units: int = 512,
        attention_units: int = 256,
        dropout: float = 0.5,
        attention_penalty: float = 1.0,
        bos_id: int = 2,
        eos_id: int = 3,
        word_dropout: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(target_vocab_size, int) or target_vocab_size < 4:
            raise ValueError(f"target_vocab_size must be an int >= 4, got {target_vocab_size!r}")
        self.target_vocab_size = target_vocab_size
        self.encoder = encoder
        self.encoder_preset = encoder_preset
        self.image_size = int(image_size)
        self.feature_map = feature_map
        self.train_encoder = (
            train_encoder if isinstance(train_encoder, str) else bool(train_encoder)
        )
        self.embedding_dim = embedding_dim
        self.decoder_units = decoder_units
        self.attention_units = attention_units
        self.dropout = dropout
        self.attention_penalty = float(attention_penalty)
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.word_dropout = float(word_dropout)
        # only when asked for: older runs' models keep exactly their layers
        self.input_word_dropout = (
            WordDropout(self.word_dropout, unk_id=1, kept_ids=(0, bos_id), name="word_dropout")
            if self.word_dropout
            else None
        )

        self.backbone = encoder_backbone(encoder, encoder_preset, self.image_size, feature_map)
        self._set_encoder_trainable()
        h, w, d = (int(s) for s in self.backbone.output.shape[1:])
        self.grid, self.feature_dim = (h, w), d

        self.embedding = layers.Embedding(target_vocab_size, embedding_dim, name="embedding")
        self.init_h = layers.Dense(decoder_units, activation="tanh", name="init_h")
        self.init_c = layers.Dense(decoder_units, activation="tanh", name="init_c")
        self.attention_layer = Attention("additive", attention_units, name="attention")
        self.gate = layers.Dense(1, activation="sigmoid", name="gate")
        self.lstm = layers.LSTMCell(decoder_units, name="decoder")
        self.out_h = layers.Dense(embedding_dim, name="out_h")
        self.out_z = layers.Dense(embedding_dim, use_bias=False, name="out_z")
        self.dropout_h = layers.Dropout(dropout)
        self.dropout_out = layers.Dropout(dropout)
        self.logits = layers.Dense(target_vocab_size, name="logits")
        # Every variable exists before the first call: none may be created inside `ops.scan`.
        self.embedding.build((None,))
        for dense in (self.init_h, self.init_c, self.out_z):
            dense.build((None, d))
        self.attention_layer.build((None, decoder_units), (None, h * w, d))
        self.gate.build((None, decoder_units))
        self.lstm.build((None, embedding_dim + d))
        self.out_h.build((None, decoder_units))
        self.logits.build((None, embedding_dim))
        self.built = True

    def _set_encoder_trainable(self) -> None:
        """Freeze the backbone, or train it whole, or from the block `train_encoder` names."""
        self.backbone.trainable = bool(self.train_encoder)
        if not isinstance(self.train_encoder, str) or not self.train_encoder:
            return
        block = self.train_encoder
        names = [layer.name for layer in self.backbone.layers]
        first = next((i for i, n in enumerate(names) if n.startswith(f"{block}_")), None)
        if first is None:
            blocks = [n for n in names if n.startswith("inception_") and n.count("_") == 1]
            raise ValueError(f"train_encoder {block!r} names no block of the encoder: {blocks}")
        for layer in self.backbone.layers[:first]:
            layer.trainable = False

    # -- building blocks ------------------------------------------------------------------

    def annotations(self, inputs, training: bool = False):
        """{"pixels"} or {"features"} -> the annotation vectors a_i [B, L, D] (float32)."""
        if "features" in inputs:
            features = inputs["features"]
        else:
            # batch norm learns its statistics only when the whole backbone trains
            whole = self.train_encoder is True
            features = self.backbone(inputs["pixels"], training=training and whole)
        h, w = self.grid
        return ops.reshape(ops.cast(features, "float32"), (-1, h * w, self.feature_dim))

    def recurrent_step(self, embedded, state, context):
        """Attend with h_{t-1}, gate, and advance the LSTM: (state, z_t, alpha_t)."""
        h, c = state
        annotations, keys = context
        z, alpha = self.attention_layer(h, annotations, keys=keys)
        z = self.gate(h) * z
        _, (h, c) = self.lstm(ops.concatenate([embedded, z], axis=-1), [h, c])
        return (h, c), z, alpha

    def deep_output(self, embedded, h, z, training: bool = False):
        """Word logits L_o tanh(E y_{t-1} + L_h h_t + L_z z_t) (any leading shape)."""
        h = self.dropout_h(h, training=training)
        hidden = ops.tanh(embedded + self.out_h(h) + self.out_z(z))
        return self.logits(self.dropout_out(hidden, training=training))

    def doubly_stochastic_penalty(self, alphas, mask):
        """sum over captions of sum_i (1 - sum_t alpha_ti)^2 over their real steps, divided
        by the number of those steps (as the token cross-entropy is averaged)."""
        weights = ops.cast(mask, "float32")
        coverage = ops.sum(alphas * weights[:, :, None], axis=1)  # [B, L]
        total = ops.sum(ops.square(1.0 - coverage))
        return total / ops.maximum(ops.sum(weights), 1.0)

    def call(self, inputs, training: bool = False):
        annotations = self.annotations(inputs, training=training)
        context, state = self.start(annotations)
        target_in = ops.cast(inputs["target_in"], "int32")
        words_in = target_in
        if self.input_word_dropout is not None:
            words_in = self.input_word_dropout(target_in, training=training)
        embedded = self.embedding(words_in)  # [B, T, E]
        batch = ops.shape(embedded)[0]
        h, w = self.grid

        def scan_step(carry, embedded_t):
            state, z, alpha = self.recurrent_step(embedded_t, carry[:2], context)
            out = (*state, z, alpha)
            return out, out  # TensorFlow's scan wants outputs shaped like the carry

        init = (*state, ops.zeros((batch, self.feature_dim)), ops.zeros((batch, h * w)))
        _, (hs, _, zs, alphas) = ops.scan(scan_step, init, ops.transpose(embedded, (1, 0, 2)))
        hs, zs, alphas = (ops.transpose(x, (1, 0, 2)) for x in (hs, zs, alphas))
        if training and self.attention_penalty:
            penalty = self.doubly_stochastic_penalty(alphas, ops.not_equal(target_in, 0))
            self.add_loss(self.attention_penalty * penalty)
        return self.deep_output(embedded, hs, zs, training=training)

    def start(self, annotations):
        """(context (annotations, attention keys), state (h_0, c_0)) of one image batch."""
        mean = ops.mean(annotations, axis=1)
        keys = self.attention_layer.project_keys(annotations)
        return (annotations, keys), (self.init_h(mean), self.init_c(mean))

    # -- the decoding interface of zoo.layers.decoding ------------------------------------

    def initial_state(self, inputs):
        """{"pixels"} or {"features"} -> (context, state) (see `start`)."""
        return self.start(self.annotations(inputs))

    def attention_size(self, context):
        """L, the cells of the feature grid."""
        return self.grid[0] * self.grid[1]

    def step(self, tokens, state, context):
        """One word: tokens [B] -> (log-probs [B, V], (h, c), attention [B, L])."""
        embedded = self.embedding(ops.cast(tokens, "int32"))
        state, z, alpha = self.recurrent_step(embedded, state, context)
        logits = self.deep_output(embedded, state[0], z)
        return ops.log_softmax(logits, axis=-1), state, alpha

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            target_vocab_size=self.target_vocab_size,
            encoder=self.encoder,
            encoder_preset=self.encoder_preset,
            image_size=self.image_size,
            feature_map=self.feature_map,
            train_encoder=self.train_encoder,
            embedding_dim=self.embedding_dim,
            decoder_units=self.decoder_units,
            attention_units=self.attention_units,
            dropout=self.dropout,
            attention_penalty=self.attention_penalty,
            bos_id=self.bos_id,
            eos_id=self.eos_id,
            word_dropout=self.word_dropout,
        )
        return config
