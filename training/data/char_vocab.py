"""A character vocabulary and plain-text reading (NumPy only, no TensorFlow).

`CharVocab` is learned from the training text (sorted distinct characters, as nanoGPT's
shakespeare_char/prepare.py) plus one id for characters it has never seen, which decodes to
U+FFFD; fine-tuning appends new characters after that id. `training.data.char_text` holds
the same mapping in TensorFlow ops, for the SavedModel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

UNKNOWN_CHAR = "\ufffd"
START_CHAR = "\n"


@dataclass(frozen=True)
class CharVocab:
    """Characters of a text, and one id (`unknown_id`) for characters it has never seen.

    Learned from a text, the characters are sorted and the unknown id comes last. A
    fine-tuning run appends the characters its new text adds *after* the unknown id
    (`extended`), so every id the trained model knows keeps its meaning.
    """

    chars: tuple[str, ...]
    unknown_id: int = -1  # -1: after the last character

    def __post_init__(self) -> None:
        if self.unknown_id < 0:
            object.__setattr__(self, "unknown_id", len(self.chars))
        if self.unknown_id > len(self.chars):
            raise ValueError(f"unknown_id {self.unknown_id} is beyond {len(self.chars)} chars")

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        if not text:
            raise ValueError("cannot build a character vocabulary from an empty text")
        return cls(tuple(sorted(set(text))))

    @classmethod
    def from_assets(cls, assets: dict) -> CharVocab:
        return cls(tuple(assets["chars"]), int(assets.get("unknown_id", -1)))

    def to_assets(self) -> dict:
        return {
            "chars": list(self.chars),
            "unknown_id": self.unknown_id,
            "vocab_size": self.size,
            "start_id": self.start_id,
        }

    def extended(self, chars) -> CharVocab:
        """This vocabulary plus the characters of `chars` it lacks, with new ids at the end."""
        known = set(self.chars)
        new = sorted({c for c in chars if c not in known})
        return CharVocab(self.chars + tuple(new), self.unknown_id)

    @property
    def size(self) -> int:
        return len(self.chars) + 1

    @property
    def table(self) -> tuple[str, ...]:
        """The character of every id (U+FFFD for the unknown id)."""
        u = self.unknown_id
        return self.chars[:u] + (UNKNOWN_CHAR,) + self.chars[u:]

    @property
    def ids(self) -> list[int]:
        """The id of each of `chars`."""
        return [i if i < self.unknown_id else i + 1 for i in range(len(self.chars))]

    @property
    def start_id(self) -> int:
        """The token an empty prompt stands for: a newline when the text has one."""
        if START_CHAR not in self.chars:
            return 0
        return self.ids[self.chars.index(START_CHAR)]

    def encode(self, text: str) -> np.ndarray:
        """int32 ids of the characters of `text` (unknown characters -> `unknown_id`)."""
        index = dict(zip(self.chars, self.ids, strict=True))
        return np.fromiter((index.get(c, self.unknown_id) for c in text), np.int32, len(text))

    def decode(self, ids) -> str:
        table = self.table
        return "".join(table[i] if 0 <= i < len(table) else UNKNOWN_CHAR for i in ids)


def read_text(path: str | Path) -> str:
    """The text of a UTF-8 file, with a clear error when it is missing or empty."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if not text:
        raise ValueError(f"text file is empty: {path}")
    return text


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """First (1 - val_fraction) of the characters for training, the rest for validation."""
    cut = int(len(text) * (1.0 - val_fraction))
    return text[:cut], text[cut:]
