"""`zoo translate`: translate sentences with an exported seq2seq model, optionally drawing
the attention alignment (`--attention-plot`), from its `translate_with_attention` signature."""

from __future__ import annotations

import tensorflow as tf

from tfzoo.verbs import plots
from tfzoo.verbs.caption import load_signature, numbered

SIGNATURE = "translate_with_attention"


def translate(model, sentences: list[str], beam_size: int = 0, max_length: int = 0) -> list[dict]:
    """Per sentence: translation, source and target tokens ("</s>" included: the end is
    aligned too) and attention [T, S]."""
    out = load_signature(model, SIGNATURE)(
        source=tf.constant(sentences, tf.string),
        beam_size=tf.constant(beam_size, tf.int32),
        max_length=tf.constant(max_length, tf.int32),
    )
    results = []
    for i in range(len(sentences)):
        source = [t.decode("utf-8") for t in out["source_tokens"][i].numpy() if t]
        target = [t.decode("utf-8") for t in out["target_tokens"][i].numpy() if t]
        results.append(
            {
                "translation": out["translation"][i].numpy().decode("utf-8"),
                "source_tokens": source,
                "target_tokens": target,
                "attention": out["attention"][i].numpy()[: len(target), : len(source)],
            }
        )
    return results


def run(
    model: str,
    sentences: list[str],
    beam_size: int = 0,
    max_length: int = 0,
    attention_plot: str | None = None,
) -> list[str]:
    """Printed lines: each translation, and where each alignment figure was written."""
    lines = []
    results = translate(model, sentences, beam_size, max_length)
    for i, result in enumerate(results):
        lines.append(result["translation"])
        if attention_plot:
            figure = plots.alignment_figure(
                result["source_tokens"], result["target_tokens"], result["attention"]
            )
            path = plots.save_png(figure, numbered(attention_plot, i, len(results)))
            lines.append(f"  attention: {path}")
    return lines
