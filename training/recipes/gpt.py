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

import math
from pathlib import Path

import keras

from training.array_datasets import ConsecutiveWindows, RandomWindows
from training.data.char_vocab import CharVocab, read_text, split_text
from training.distribution import accelerator_present
from training.recipe import Data, Headline, Recipe


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
        return "mixed_bfloat16" if accelerator_present() else "float32"
    return policy


class GPTRecipe(Recipe):
    """nanoGPT's shakespeare_char training, as a zoo recipe."""

    name = "gpt"
    headline = Headline("val_loss", higher_is_better=False)
    intended_use = (
        "Generating text character by character in the style of its training text: "
        "demonstrations, teaching and a starting point for fine-tuning on another text. Its "
        "output is not factual."
    )

    def prepare(self, config, data_dir, assets=None):
        """The training and validation text as character ids, and the vocabulary."""
        train_text, val_text = _load_texts(config, data_dir)
        # a resumed run (and evaluation) keeps the characters it was started with
        vocab = (
            CharVocab.from_assets(assets) if assets else CharVocab.from_text(train_text + val_text)
        )
        splits = {
            "train": {"ids": vocab.encode(train_text)},
            "val": {"ids": vocab.encode(val_text)},
        }
        return splits, vocab.to_assets()

    def load_data(
        self, config, data_dir, global_batch_size, *, training=True, assets=None, load_source=None
    ) -> Data:
        from training.data.char_text import consecutive_windows, random_windows

        splits, assets = self.prepare(config, data_dir, assets)
        train_ids, val_ids = splits["train"]["ids"], splits["val"]["ids"]
        block, seed = int(config["block_size"]), int(config.get("seed", 0))
        return self._data(
            config,
            global_batch_size,
            assets,
            train=random_windows(train_ids, block, global_batch_size, seed) if training else None,
            val=random_windows(val_ids, block, global_batch_size, seed + 1),
            test=consecutive_windows(val_ids, block, max(global_batch_size, 64)),
        )

    def array_data(self, config, data, global_batch_size, *, training=True, seed=0) -> Data:
        """nanoGPT's `get_batch` over the prepared ids (the config's data seed, as
        `load_data`; each epoch draws new windows)."""
        train_ids, val_ids = data.split("train")["ids"], data.split("val")["ids"]
        block, seed = int(config["block_size"]), int(config.get("seed", 0))
        steps = self._steps_per_epoch(config)
        return self._data(
            config,
            global_batch_size,
            data.assets,
            train=(
                RandomWindows(train_ids, block, global_batch_size, steps, seed=seed)
                if training
                else None
            ),
            val=RandomWindows(
                val_ids, block, global_batch_size, int(config.get("eval_iters", 20)), seed=seed + 1
            ),
            test=ConsecutiveWindows(val_ids, block, max(global_batch_size, 64)),
        )

    @staticmethod
    def _steps_per_epoch(config: dict) -> int:
        return max(int(config["max_iters"]) // max(int(config.get("epochs", 1)), 1), 1)

    def _data(self, config: dict, global_batch_size: int, assets: dict, **splits) -> Data:
        return Data(
            **splits,
            steps_per_epoch=self._steps_per_epoch(config),
            validation_steps=int(config.get("eval_iters", 20)),
            examples_per_step=global_batch_size * int(config["block_size"]),  # tokens per step
            assets=assets,
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

    evaluate_arrays = evaluate  # the same figure on either route: Keras alone computes it

    def export(self, model, config: dict, assets: dict, *, use_cache: bool = True):
        """The generation module (`training.exports.gpt`); `use_cache=False` recomputes the
        window at every step."""
        from training.exports.gpt import GenerationModule

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
