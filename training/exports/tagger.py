"""The tagger's SavedModel (`TaggerModule`: raw sentences or tokens in, tags out) and the
scoring that runs it (`score`: gold words and raw text). TensorFlow: the export side of
`training.recipes.tagger`.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from training.data.conllu import Sentence
from training.data.tagging_graph import featurizer_from_assets
from training.data.ud_tokenize import token_spans, tokenize_graph
from training.export_module import ExportModule, signature


class TaggerModule(ExportModule):
    """The exported tagger: raw sentences or tokens in, tag strings out (core TF ops).

    Signatures:
        serving_default  sentences [N] string -> tokens [N, T], tags [N, T] (padded with "")
                         and lengths [N] int32.
        tag_tokens       tokens [N, T] string ("" = padding) -> tags [N, T] ("" at padding).
    """

    def __init__(self, model: keras.Model, assets: dict):
        super().__init__("tagger", model=model)
        self.featurizer = featurizer_from_assets(assets)
        tags = list(assets["tags"])
        self.tags_text = "".join(f"{tag}\n" for tag in tags)
        self.tag_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.range(len(tags), dtype=tf.int64), tf.constant(tags, tf.string)
            ),
            default_value="",
        )

    def _tag(self, tokens: tf.Tensor) -> tf.Tensor:
        tokens = tf.convert_to_tensor(tokens, tf.string)
        # a zero-length batch or sentence still runs the model on one padded column
        n, t = tf.shape(tokens)[0], tf.shape(tokens)[1]
        padded = tf.pad(tokens, [[0, tf.maximum(1 - n, 0)], [0, tf.maximum(1 - t, 0)]])
        probs = self.model(self.featurizer.features(padded), training=False)
        ids = tf.argmax(probs, axis=-1, output_type=tf.int64)[:n, :t]
        tags = self.tag_table.lookup(ids)
        return tf.where(tf.equal(tokens, ""), tf.constant("", tf.string), tags)

    @signature(tf.TensorSpec([None], tf.string, name="sentences"))
    def serving_default(self, sentences):
        """Raw sentences [N] -> tokens [N, T], tags [N, T] (padded with "") and lengths [N]."""
        ragged = tokenize_graph(sentences)
        tokens = ragged.to_tensor(default_value="")
        return {
            "tokens": tokens,
            "tags": self._tag(tokens),
            "lengths": tf.cast(ragged.row_lengths(), tf.int32),
        }

    @signature(tf.TensorSpec([None, None], tf.string, name="tokens"))
    def tag_tokens(self, tokens):
        """Pre-tokenized words [N, T] ("" = padding) -> tags [N, T] ("" at padding)."""
        return {"tags": self._tag(tokens)}

    def warmup(self):
        return [
            ("serving_default", {"sentences": np.array([b"She sells seashells."], dtype=object)}),
            ("tag_tokens", {"tokens": np.array([[b"She", b"sells", b"seashells"]], dtype=object)}),
        ]

    def request_costs(self):
        # measured: 64 sentences of 256 one-letter words (32 KB padded) took 292 MB, of 1,024
        # words 1.1 GB: about 8.6 KB a padded byte, so a byte weighs 8 (a token 16)
        return {
            "serving_default": {"inputs": {"sentences": {"kind": "text", "weight": 8}}},
            "tag_tokens": {"inputs": {"tokens": {"kind": "tokens", "weight": 16}}},
        }

    def extra_assets(self) -> dict[str, str]:
        return {"tags.txt": self.tags_text}


def _decode(rows: np.ndarray, lengths) -> list[list[str]]:
    return [[v.decode() for v in row[:n]] for row, n in zip(rows, lengths, strict=True)]


def score(
    module: TaggerModule, sentences: list[Sentence], tagset: str, batch_size: int = 64
) -> dict[str, float]:
    """Tag accuracy on gold words and on raw text (span-aligned), via the export module.

    Raw-text accuracy: gold words whose character span is exactly a predicted token's span
    and whose tag matches, over all gold words; precision divides by predicted tokens.
    """
    gold_correct = gold_total = raw_correct = raw_predicted = 0
    for start in range(0, len(sentences), batch_size):
        batch = sentences[start : start + batch_size]
        width = max(len(s.words) for s in batch)
        tokens = np.array([s.words + [""] * (width - len(s.words)) for s in batch], dtype=object)
        tags = _decode(
            module.tag_tokens(tf.constant(tokens))["tags"].numpy(), [len(s.words) for s in batch]
        )
        out = module.serving_default(tf.constant([s.text for s in batch]))
        lengths = out["lengths"].numpy()
        raw_tokens, raw_tags = (
            _decode(out["tokens"].numpy(), lengths),
            _decode(out["tags"].numpy(), lengths),
        )
        for s, predicted, toks, ttags in zip(batch, tags, raw_tokens, raw_tags, strict=True):
            gold = s.tags(tagset)
            gold_correct += sum(p == g for p, g in zip(predicted, gold, strict=True))
            gold_total += len(gold)
            by_span = dict(zip(token_spans(s.text, toks), ttags, strict=True))
            raw_correct += sum(
                by_span.get(span) == g for span, g in zip(s.word_spans(), gold, strict=True)
            )
            raw_predicted += len(toks)
    raw_recall = raw_correct / max(gold_total, 1)
    raw_precision = raw_correct / max(raw_predicted, 1)
    return {
        f"{tagset}_accuracy": gold_correct / max(gold_total, 1),
        f"{tagset}_accuracy_raw_text": raw_recall,
        f"{tagset}_f1_raw_text": 2
        * raw_recall
        * raw_precision
        / max(raw_recall + raw_precision, 1e-9),
        "eval_words": gold_total,
        "eval_sentences": len(sentences),
    }
