"""The GPT's SavedModel: the model plus its character tokenizer, with every serving
function (`serving_default`, `generate`, `score`, `logits`) as a signature method; see
`training.recipes.gpt` for the signatures. TensorFlow: the export side of the recipe.
"""

from __future__ import annotations

import json

import numpy as np
import tensorflow as tf

from training.data.char_text import CharTokenizer
from training.data.char_vocab import CharVocab
from training.export_module import ExportModule, signature

#: the most tokens one request may ask for (a bound on request cost, not on the model)
MAX_NEW_TOKENS = 10_000


class GenerationModule(ExportModule):
    """The model plus its tokenizer, with every serving function as a signature method.

    The same object backs the export, `zoo generate` and the Python API
    (`tfzoo.verbs.generate.generate_text`), so all run one traced generation loop. The
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
