"""Captioned images without TensorFlow: Flickr8k-style folders, and caption words in pure
Python, for `zoo prepare captioner` on any machine (`training.data.captions` holds the
TensorFlow side: the in-graph tokens, TFDS, the tf.data batches).

A folder in the Flickr8k layout (`../shared/data/flickr8k`, or a user's own):

    images/<file>.jpg
    captions_train.csv, captions_val.csv    header `image,caption`, one row per caption
                                            (any number of captions per image)

`caption_words` gives the words `captions.caption_tokens` (core `tf.strings` ops) gives:
the text normalized and lowercased as `parallel_corpus.normalize_text`, apostrophes ("'",
"’") dropped ("woman's" -> "womans"), every run of characters that are not a letter, a
number or "-" a separator, and only words holding a letter or a number kept.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from training.data.parallel_corpus import char_class, normalize_text

SPLITS = ("train", "val", "test")
_WORD_CHARS = ("L", "N")


@dataclass
class CaptionedImages:
    """Images (file paths or encoded bytes) and the reference captions of each."""

    images: list
    captions: list[list[str]]

    def __len__(self) -> int:
        return len(self.images)


def caption_words(text: str) -> list[str]:
    """The words of one caption, as `captions.caption_tokens` gives them."""
    text = normalize_text(text, lowercase=True).replace("'", "").replace("\u2019", "")
    text = "".join(c if c == "-" or char_class(c) in _WORD_CHARS else " " for c in text)
    return [w for w in text.split(" ") if any(char_class(c) in _WORD_CHARS for c in w)]


def caption_words_of(texts: Iterable[str]) -> list[list[str]]:
    """`caption_words` of each caption (what `captions.caption_tokens_py` gives)."""
    return [caption_words(text) for text in texts]


def find_root(data_dir: str | Path) -> Path:
    """`data_dir` or `data_dir/flickr8k`, whichever holds `captions_train.csv`."""
    base = Path(data_dir)
    for folder in (base, base / "flickr8k"):
        if (folder / "captions_train.csv").is_file():
            return folder
    raise FileNotFoundError(
        f"no captions_train.csv in {base} or {base / 'flickr8k'} "
        "(expected images/<file> and captions_<split>.csv with header image,caption)"
    )


def read_split(data_dir: str | Path, split: str, limit: int = 0) -> CaptionedImages | None:
    """The first `limit` images (0: all) of `captions_<split>.csv` with their captions, in
    order of first appearance; None when the split has no file. Images that are missing
    from `images/` are an error."""
    root = find_root(data_dir)
    path = root / f"captions_{split}.csv"
    if not path.is_file():
        return None
    captions: dict[str, list[str]] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if not {"image", "caption"} <= set(reader.fieldnames or ()):
            raise ValueError(f"{path} needs the header image,caption; got {reader.fieldnames}")
        for row in reader:
            image, caption = row["image"].strip(), (row["caption"] or "").strip()
            if image and caption:
                captions.setdefault(image, []).append(caption)
    names = list(captions)[: limit or None]
    missing = [n for n in names if not (root / "images" / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} images of {path.name} not in {root / 'images'}: "
                                f"{missing[:3]}")  # fmt: skip
    return CaptionedImages([str(root / "images" / n) for n in names], [captions[n] for n in names])
