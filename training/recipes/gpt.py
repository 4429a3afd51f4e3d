"""Training recipe of the GPT character language model: data, optimizer, metrics, export.

Iteration-based training as nanoGPT: endless random windows of the training text,
`max_iters // epochs` steps between evaluations, AdamW with weight decay on matrices only,
linear warmup then cosine decay, global gradient-norm clipping, bf16 mixed precision where a
GPU is present. The reported metric is the validation loss in nats per character over every
character of the validation split (consecutive windows), and its perplexity.

Export signatures (core TF ops only):
    serving_default  prompt [N] string -> completion [N] string, with the preset's
                     generation defaults (max_new_tokens, temperature, top_k, top_p, seed 0).
    generate         prompt, max_new_tokens, temperature, top_k, top_p, seed, stop: all [N]
                     (one value per prompt: batchable by the server, usable in the REST row
                     format) -> completion [N]. TF signatures cannot have optional inputs,
                     hence two signatures.
    score            text [N] string -> log_likelihood [N] (mean log-probability per
                     character, after a newline), num_tokens [N].
    logits           token_ids [N, T] int32 (T <= context) -> logits [N, T, V].
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from training.data.char_text import (
    CharTokenizer,
    CharVocab,
    consecutive_windows,
    random_windows,
    read_text,
    split_text,
)
from training.export_module import ExportModule, signature
from training.recipe import Data, Recipe

#: the most tokens one request may ask for (a bound on request cost, not on the model)
MAX_NEW_TOKENS = 10_000


def _load_texts(config: dict, data_dir: str | None) -> tuple[str, str]:
    """(train text, validation text) from a file, a folder holding `text_file`, or TFDS."""
    if data_dir is None:
        import tensorflow_datasets as tfds

        splits = tfds.load("tiny_shakespeare", split=["train", "validation"])
        train, val = (next(iter(s))["text"].numpy().decode("utf-8") for s in splits)
        return train, val
    path = Path(data_dir)
    if path.is_dir():
        path = path / config["text_file"]
    return split_text(read_text(path), config["val_fraction"])


def resolve_dtype_policy(config: dict) -> str:
    """ "auto" -> mixed_bfloat16 when a GPU is visible, float32 otherwise."""
    policy = config.get("dtype_policy", "auto")
    if policy == "auto":
        return "mixed_bfloat16" if tf.config.list_physical_devices("GPU") else "float32"
    return policy


class GenerationModule(ExportModule):
    """The model plus its tokenizer, with every serving function as a signature method.

    The same object backs the export, `zoo generate` and the Python API
    (`training.generate.generate_text`), so all run one traced generation loop. The
    signatures are traced without AutoGraph: the loop is an explicit while_loop, and
    converting Keras internals only slows tracing down.
    """

    def __init__(self, model, vocab: CharVocab, config: dict, use_cache: bool = True):
        super().__init__("gpt_generation", model=model)
        self.tokenizer = CharTokenizer(vocab)
        self.use_cache = use_cache
        self.defaults = {
            "max_new_tokens": int(config.get("max_new_tokens", 200)),
            "temperature": float(config.get("temperature", 0.8)),
            "top_k": int(config.get("top_k", 0)),
            "top_p": float(config.get("top_p", 1.0)),
        }
        self.vocab_json = json.dumps(
            {
                "chars": list(vocab.chars),
                "unknown_id": vocab.unknown_id,
                "tokens": list(vocab.table),
            },
            ensure_ascii=False,
        )

    @signature(tf.TensorSpec([None], tf.string, "prompt"), autograph=False)
    def serving_default(self, prompt):
        n = tf.shape(prompt)[0]
        d = self.defaults
        return self.generate(
            prompt,
            tf.fill([n], d["max_new_tokens"]),
            tf.fill([n], d["temperature"]),
            tf.fill([n], d["top_k"]),
            tf.fill([n], d["top_p"]),
            tf.zeros([n], tf.int32),
            tf.fill([n], ""),
        )

    @signature(
        tf.TensorSpec([None], tf.string, "prompt"),
        tf.TensorSpec([None], tf.int32, "max_new_tokens"),
        tf.TensorSpec([None], tf.float32, "temperature"),
        tf.TensorSpec([None], tf.int32, "top_k"),
        tf.TensorSpec([None], tf.float32, "top_p"),
        tf.TensorSpec([None], tf.int32, "seed"),
        tf.TensorSpec([None], tf.string, "stop"),
        autograph=False,
    )
    def generate(self, prompt, max_new_tokens, temperature, top_k, top_p, seed, stop):
        from zoo.gpt.generation import STOP_MAX, generate

        n = tf.shape(prompt)[0]
        params = (max_new_tokens, temperature, top_k, top_p, seed, stop)
        checks = [
            tf.debugging.assert_equal(
                tf.stack([tf.shape(t)[0] for t in params]),
                n,
                message="every input needs one value per prompt",
            ),
            tf.debugging.assert_non_negative(max_new_tokens, message="max_new_tokens must be >= 0"),
            tf.debugging.assert_less_equal(
                max_new_tokens,
                MAX_NEW_TOKENS,
                message=f"max_new_tokens must be <= {MAX_NEW_TOKENS}",
            ),
            tf.debugging.assert_greater_equal(
                temperature, 0.0, message="temperature must be >= 0 (0 = greedy)"
            ),
            tf.debugging.assert_non_negative(top_k, message="top_k must be >= 0 (0 = all)"),
            tf.debugging.assert_greater(top_p, 0.0, message="top_p must be in (0, 1]"),
            tf.debugging.assert_less_equal(top_p, 1.0, message="top_p must be in (0, 1]"),
        ]
        stop_ids = self.tokenizer.encode(stop)
        stop_lengths = tf.cast(stop_ids.row_lengths(), tf.int32)
        checks.append(
            tf.debugging.assert_less_equal(
                stop_lengths, STOP_MAX, message=f"stop must be at most {STOP_MAX} characters"
            )
        )
        with tf.control_dependencies(checks):
            ids = self.tokenizer.encode(prompt)
            tokens, starts, ends = generate(
                self.model,
                ids.to_tensor(0),
                tf.cast(ids.row_lengths(), tf.int32),
                max_new_tokens,
                temperature,
                top_k,
                top_p,
                seed,
                stop_ids.to_tensor(0, shape=[None, STOP_MAX]),
                stop_lengths,
                start_id=self.tokenizer.start_id,
                use_cache=self.use_cache,
            )
        return {"completion": self.tokenizer.decode(tokens, starts, ends)}

    @signature(tf.TensorSpec([None], tf.string, "text"), autograph=False)
    def score(self, text):
        from zoo.gpt.generation import score

        ids = self.tokenizer.encode(text)
        mean, count = score(
            self.model,
            ids.to_tensor(0),
            tf.cast(ids.row_lengths(), tf.int32),
            start_id=self.tokenizer.start_id,
        )
        return {"log_likelihood": mean, "num_tokens": count}

    @signature(tf.TensorSpec([None, None], tf.int32, "token_ids"), autograph=False)
    def logits(self, token_ids):
        checks = [
            tf.debugging.assert_less_equal(
                tf.shape(token_ids)[1],
                self.model.block_size,
                message=f"at most {self.model.block_size} tokens (the context length)",
            ),
            tf.debugging.assert_non_negative(token_ids, message="token ids must be >= 0"),
            tf.debugging.assert_less(
                token_ids, self.model.vocab_size, message="token id beyond the vocabulary"
            ),
        ]
        with tf.control_dependencies(checks):
            return {"logits": self.model(token_ids, training=False)}

    def request_costs(self):
        prompt = {"prompt": {"kind": "text"}}
        return {
            "serving_default": {"inputs": prompt, "new_tokens": self.defaults["max_new_tokens"]},
            "generate": {
                "inputs": {
                    **prompt,
                    "max_new_tokens": {"kind": "new_tokens"},
                    "stop": {"kind": "text"},
                }
            },
            "score": {"inputs": {"text": {"kind": "text"}}},
            "logits": {"inputs": {"token_ids": {"kind": "tokens"}}},
        }

    def warmup(self):
        prompt = np.array([b"ROMEO:", b""])
        return [
            ("serving_default", {"prompt": prompt}),
            (
                "generate",
                {
                    "prompt": prompt,
                    "max_new_tokens": np.array([8, 8], np.int32),
                    "temperature": np.array([0.8, 0.0], np.float32),
                    "top_k": np.array([40, 0], np.int32),
                    "top_p": np.array([0.9, 1.0], np.float32),
                    "seed": np.array([1, 2], np.int32),
                    "stop": np.array([b"\n", b""]),
                },
            ),
            ("score", {"text": np.array([b"To be, or not to be", b""])}),
        ]

    def extra_assets(self) -> dict[str, str]:
        return {"vocab.json": self.vocab_json}


class GPTRecipe(Recipe):
    """nanoGPT's shakespeare_char training, as a zoo recipe."""

    name = "gpt"

    def load_data(self, config, data_dir, global_batch_size, *, training=True, assets=None) -> Data:
        train_text, val_text = _load_texts(config, data_dir)
        # a resumed run (and evaluation) keeps the characters it was started with
        vocab = (
            CharVocab.from_assets(assets) if assets else CharVocab.from_text(train_text + val_text)
        )
        train_ids, val_ids = vocab.encode(train_text), vocab.encode(val_text)
        block, seed = int(config["block_size"]), int(config.get("seed", 0))
        epochs = max(int(config.get("epochs", 1)), 1)
        return Data(
            train=random_windows(train_ids, block, global_batch_size, seed) if training else None,
            val=random_windows(val_ids, block, global_batch_size, seed + 1),
            test=consecutive_windows(val_ids, block, max(global_batch_size, 64)),
            steps_per_epoch=max(int(config["max_iters"]) // epochs, 1),
            validation_steps=int(config.get("eval_iters", 20)),
            examples_per_step=global_batch_size * block,  # tokens per step
            assets=vocab.to_assets(),
        )

    def extend_assets(self, parent_assets: dict, data_assets: dict, config: dict) -> dict:
        """The parent's characters keep their ids; the new text's other characters get new
        ids after them (and new rows of the tied embedding, `wte`)."""
        parent = CharVocab.from_assets(parent_assets)
        return parent.extended(data_assets["chars"]).to_assets()

    def grown_layers(self, model) -> list[str]:
        return ["wte"]

    def model_config(self, config: dict, assets: dict) -> dict:
        """The vocabulary size of the data, and the dtype policy "auto" resolved."""
        config = dict(config)
        if not config.get("vocab_size"):  # DATA_DECIDED (0 in runs of older versions)
            config["vocab_size"] = int(assets["vocab_size"])
        config["dtype_policy"] = resolve_dtype_policy(config)
        return config

    def compile(self, model, config: dict, data: Data | None, *, jit_compile: bool | str) -> None:
        if jit_compile == "auto":
            # Keras' "auto" turns XLA off on CPU-only machines; for this model XLA's fused
            # attention/LayerNorm/GELU steps are faster on CPU too (benchmarks/train_gpt.py).
            jit_compile = True
        lr, warmup = float(config["learning_rate"]), int(config["warmup_iters"])
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=lr / (warmup + 1),
            decay_steps=max(int(config["max_iters"]) - warmup, 1),
            alpha=float(config["min_lr"]) / lr if lr else 0.0,  # lr 0: a frozen fine-tune
            warmup_target=lr,
            warmup_steps=warmup,
        )
        optimizer = keras.optimizers.AdamW(
            learning_rate=schedule,
            weight_decay=float(config["weight_decay"]),
            beta_1=float(config["beta1"]),
            beta_2=float(config["beta2"]),
            global_clipnorm=float(config["grad_clip"]) or None,
        )
        # nanoGPT decays matrices and embeddings, not biases and LayerNorm scales/offsets.
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit_compile,
        )

    def evaluate(self, model, config: dict, data: Data) -> dict[str, float]:
        """Validation loss (nats per character) over the whole validation split."""
        split = data.test if data.test is not None else data.val
        loss = float(model.evaluate(split, return_dict=True, verbose=0)["loss"])
        return {
            "val_loss": loss,
            "val_perplexity": math.exp(loss),
            "val_bits_per_char": loss / math.log(2.0),
        }

    def export(
        self, model, config: dict, assets: dict, *, use_cache: bool = True
    ) -> GenerationModule:
        """The generation module; `use_cache=False` recomputes the window at every step."""
        model = float32_copy(model, config, assets)
        return GenerationModule(model, CharVocab.from_assets(assets), config, use_cache)


def float32_copy(model, config: dict, assets: dict):
    """The model itself when it computes in float32, else a float32 copy of its weights
    (bf16 on a CPU server would be slow and lose precision for nothing)."""
    if model.dtype_policy.name == "float32":
        return model
    copy = RECIPE.build_model({**config, "dtype_policy": "float32"}, assets)
    copy.set_weights(model.get_weights())
    return copy


RECIPE = GPTRecipe()
