"""Parallel text without TensorFlow: line-aligned files, the length buckets of the training
batches, and the word tokenizer in pure Python, for `zoo prepare` on any machine.

`tokenize_text` gives the tokens `training.data.parallel_text.tokenize` (core `tf.strings`
ops, the SavedModel's) gives, character for character (tests/training/test_parallel_text.py
compares them on Multi30k and on random text), by the same steps:

- normalization (`normalize_text`): runs of RE2's whitespace (tab, newline, form feed,
  carriage return, space; not the vertical tab) and of Unicode separators (Zs, Zl, Zp)
  become one space; optional lowercasing as ICU's `toLower` (Python's `str.lower`, which
  also maps a final sigma to "ς"), which like TensorFlow's `tf.strings.lower` reads the
  text up to its first NUL only; ASCII whitespace stripped at both ends;
- every character that is not a letter (L*), a number (N*), RE2 whitespace or "-" is a
  token of its own, except "." and "," between two numbers ("3.5", "1,000");
- tokens are split at ASCII whitespace (the vertical tab included).

Letters and numbers are Python's `unicodedata` categories: characters newer than its
Unicode version (e.g. Unicode 15's CJK extension H when Python's is 14) may split
differently from TensorFlow's RE2.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

from training.data.bucketing import bucket_batch_count

#: Length buckets of the training batches (the longer of source and decoder input, in ids):
#: `parallel_text.make_dataset` and the prepared arrays' `BucketedBatches`.
BUCKETS = [8, 11, 14, 17, 20, 25, 32, 48]

_RE2_SPACE = frozenset("\t\n\f\r ")  # RE2's \s: ASCII, without the vertical tab
_ASCII_SPACE = " \t\n\v\f\r"  # what tf.strings.strip strips and tf.strings.split splits at
_SEPARATORS = ("Zs", "Zl", "Zp")
_SPLIT = re.compile("[ \t\n\v\f\r]+")
_LETTER, _NUMBER, _SPACE, _OTHER = "L", "N", " ", "-"


@lru_cache(maxsize=65536)
def char_class(char: str) -> str:
    """ "L" for a letter, "N" for a number, " " for whitespace `normalize_text` collapses,
    "-" for anything else (punctuation, symbols, marks, controls)."""
    category = unicodedata.category(char)
    if category[0] in (_LETTER, _NUMBER):
        return category[0]
    if char in _RE2_SPACE or category in _SEPARATORS:
        return _SPACE
    return _OTHER


def normalize_text(text: str, lowercase: bool) -> str:
    """`parallel_text.normalize` of one Python string (see the module's docstring)."""
    out: list[str] = []
    for char in text:
        if char_class(char) == _SPACE:
            if not out or out[-1] != " ":  # only whitespace leaves a " ": a run is one
                out.append(" ")
        else:
            out.append(char)
    text = "".join(out)
    if lowercase:  # ICU reads a C string: nothing after a NUL is lowercased, or kept
        text = text.partition("\x00")[0].lower()
    return text.strip(_ASCII_SPACE)


def tokenize_text(text: str, lowercase: bool) -> list[str]:
    """The tokens of one sentence, as `parallel_text.tokenize` gives them."""
    text = normalize_text(text, lowercase)
    spaced = "".join(
        f" {c} " if c != "-" and char_class(c) not in (_LETTER, _NUMBER, _SPACE) else c
        for c in text
    )
    # "3 . 5" back to "3.5": leftmost, non-overlapping, as RE2's global replace
    out, i, n = [], 0, len(spaced)
    while i < n:
        if (
            i + 4 < n
            and spaced[i + 1] == " "
            and spaced[i + 2] in ".,"
            and spaced[i + 3] == " "
            and char_class(spaced[i]) == _NUMBER
            and char_class(spaced[i + 4]) == _NUMBER
        ):
            out.append(spaced[i] + spaced[i + 2] + spaced[i + 4])
            i += 5
        else:
            out.append(spaced[i])
            i += 1
    return [token for token in _SPLIT.split("".join(out)) if token]


def tokenize_texts(texts: Iterable[str], lowercase: bool) -> list[list[str]]:
    """`tokenize_text` of each sentence (what `parallel_text.tokenize_py` gives)."""
    return [tokenize_text(text, lowercase) for text in texts]


def read_lines(path: str | Path, limit: int | None = None) -> list[str]:
    """The lines of a UTF-8 text file without their line endings."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = handle.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line.rstrip("\r") for line in lines]
    return lines if limit is None else lines[:limit]


def read_parallel(
    source_path: str | Path, target_path: str | Path, limit: int | None = None
) -> tuple[list[str], list[str]]:
    """Two line-aligned files -> (sources, targets); a length mismatch is an error."""
    sources = read_lines(source_path)
    targets = read_lines(target_path)
    if len(sources) != len(targets):
        raise ValueError(
            f"{source_path} has {len(sources)} lines but {target_path} has {len(targets)}: "
            "parallel files must be line-aligned"
        )
    if limit is not None:
        sources, targets = sources[:limit], targets[:limit]
    return sources, targets


def find_split(
    data_dir: str | Path, split: str, source_lang: str, target_lang: str
) -> tuple[Path, Path] | None:
    """Paths of `<split>.<lang>` for both languages, in `data_dir` or `data_dir/multi30k`.

    Returns None when the split is absent (e.g. no test split), so callers can skip it.
    """
    base = Path(data_dir)
    for folder in (base, base / "multi30k"):
        src, tgt = folder / f"{split}.{source_lang}", folder / f"{split}.{target_lang}"
        if src.is_file() and tgt.is_file():
            return src, tgt
    return None


def pair_length(source_ids: Sequence[int], target_ids: Sequence[int]) -> int:
    """The bucketing length of a pair: the longer of the source (with its end id) and the
    decoder input ("<s>" and the target)."""
    return max(len(source_ids), len(target_ids) + 1)


def batch_count(source_ids: Sequence[Sequence[int]], target_ids, batch_size: int) -> int:
    """Batches per pass of `make_dataset` over these pairs (its buckets' partial batches too)."""
    lengths = (pair_length(s, t) for s, t in zip(source_ids, target_ids, strict=True))
    return bucket_batch_count(lengths, BUCKETS, batch_size)
