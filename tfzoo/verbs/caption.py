"""`zoo caption`: caption images with an exported captioner, optionally drawing where it
looked for each word (`--attention-plot`, Show, Attend and Tell's Figure 2).

The Python API: `caption_images(model, images)` -> one `Caption` per image (text, words,
attention maps) from a SavedModel's `caption_with_attention` signature (a loaded one, or
its base path / version directory), and `plot_caption` to draw one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfzoo.verbs import plots
from tfzoo.verbs.predict import resolve_version_dir

SIGNATURE = "caption_with_attention"
_SPECIAL = {"", "<s>", "</s>"}


@dataclass
class Caption:
    """One image's caption: its text, words, and each word's attention [words, h, w]."""

    image: str
    text: str
    words: list[str]
    attention: np.ndarray
    score: float


def load_signature(model, signature: str):
    """The named signature of a loaded SavedModel, or of the one at a base path / version."""
    loaded = (
        model
        if hasattr(model, "signatures")
        else tf.saved_model.load(str(resolve_version_dir(model)))
    )
    if signature not in loaded.signatures:
        raise KeyError(f"the model has no {signature!r} signature: {sorted(loaded.signatures)}")
    return loaded.signatures[signature]


def words_of(tokens) -> list[str]:
    """Decoded tokens up to "</s>", specials and padding left out."""
    words = []
    for token in tokens:
        token = token.decode("utf-8") if isinstance(token, bytes) else str(token)
        if token == "</s>":
            break
        if token not in _SPECIAL:
            words.append(token)
    return words


def caption_images(
    model, images: list[str], beam_size: int = 0, max_length: int = 0
) -> list[Caption]:
    """Caption image files (0 = the export's default beam and length)."""
    function = load_signature(model, SIGNATURE)
    out = function(
        image_bytes=tf.constant([Path(p).read_bytes() for p in images], tf.string),
        beam_size=tf.constant(beam_size, tf.int32),
        max_length=tf.constant(max_length, tf.int32),
    )
    results = []
    for i, image in enumerate(images):
        words = words_of(out["tokens"][i].numpy())
        results.append(
            Caption(
                image=str(image),
                text=out["caption"][i].numpy().decode("utf-8"),
                words=words,
                attention=out["attention"][i].numpy()[: len(words)],
                score=float(out["scores"][i]),
            )
        )
    return results


def plot_caption(caption: Caption, path: str | Path, columns: int = 5) -> Path:
    """Draw one caption's attention figure (the image as it is, one panel per word)."""
    image = tf.io.decode_image(
        tf.io.read_file(caption.image), channels=3, expand_animations=False
    ).numpy()
    return plots.save_png(plots.caption_figure(image, caption.words, caption.attention, columns),
                          path)  # fmt: skip


def numbered(path: str | Path, index: int, count: int) -> Path:
    """`path` itself for a single item, else `<stem>-<index + 1><suffix>`."""
    path = Path(path)
    return path if count == 1 else path.with_name(f"{path.stem}-{index + 1}{path.suffix}")


def run(
    model: str,
    images: list[str],
    beam_size: int = 0,
    max_length: int = 0,
    attention_plot: str | None = None,
) -> list[str]:
    """Printed lines: `image: caption`, and where each attention figure was written."""
    lines = []
    results = caption_images(model, images, beam_size, max_length)
    for i, caption in enumerate(results):
        lines.append(f"{caption.image}: {caption.text}")
        if attention_plot and caption.words:
            path = plot_caption(caption, numbered(attention_plot, i, len(results)))
            lines.append(f"  attention: {path}")
    return lines
