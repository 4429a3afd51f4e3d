"""A CoNLL-U reader (Universal Dependencies) for tagging: words, UPOS / XPOS, raw text.

Only the syntactic words (integer ids) are tagged. A multiword-token line (`1-2  don't`)
gives the surface form of the words that follow it and is not a word itself; an empty
node (`8.1`, enhanced dependencies) is skipped. Each sentence also keeps its `# text`
and the character span of every word in that text, so raw-text tokenization can be
scored against the gold words.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

TAG_COLUMNS = {"upos": 3, "xpos": 4}


@dataclass
class Sentence:
    """One CoNLL-U sentence.

    Attributes:
        words: syntactic word forms (what is tagged).
        upos: universal POS tag per word.
        xpos: language-specific POS tag per word ("_" when absent).
        text: the `# text =` comment, or the surface tokens joined by SpaceAfter.
        tokens: surface tokens (a multiword token counts once, e.g. "don't").
        token_words: for each surface token, the (start, end) indices of its words.
        sent_id: the `# sent_id =` comment, or "".
    """

    words: list[str] = field(default_factory=list)
    upos: list[str] = field(default_factory=list)
    xpos: list[str] = field(default_factory=list)
    text: str = ""
    tokens: list[str] = field(default_factory=list)
    token_words: list[tuple[int, int]] = field(default_factory=list)
    sent_id: str = ""

    def tags(self, tagset: str = "upos") -> list[str]:
        """The tags of the words, "upos" or "xpos"."""
        if tagset not in TAG_COLUMNS:
            raise ValueError(f"tagset must be one of {sorted(TAG_COLUMNS)}, not {tagset!r}")
        return self.upos if tagset == "upos" else self.xpos

    def word_spans(self) -> list[tuple[int, int]]:
        """Character span (start, end) of each word in `text`.

        Tokens are found in order in the text. The words of a multiword token share its
        span when their forms do not spell it; otherwise each gets its own slice.
        """
        spans: list[tuple[int, int]] = []
        pos = 0
        for token, (first, last) in zip(self.tokens, self.token_words, strict=True):
            start = self.text.find(token, pos)
            if start < 0:
                raise ValueError(f"token {token!r} not found in text of sentence {self.sent_id!r}")
            end = start + len(token)
            pos = end
            forms = self.words[first:last]
            if len(forms) == 1:
                spans.append((start, end))
            elif "".join(forms).lower() == token.lower():
                offset = start
                for form in forms:
                    spans.append((offset, offset + len(form)))
                    offset += len(form)
            else:
                spans.extend([(start, end)] * len(forms))
        return spans


def _parse_block(lines: list[str], source: str, first_line: int) -> Sentence:
    sentence = Sentence()
    text: str | None = None
    surface: list[tuple[str, bool]] = []  # (token, space_after)
    mwt_end = 0  # last word id covered by the current multiword token
    for offset, line in enumerate(lines):
        lineno = first_line + offset
        if line.startswith("#"):
            key, _, value = line[1:].partition("=")
            if key.strip() == "text":
                text = value.strip()
            elif key.strip() == "sent_id":
                sentence.sent_id = value.strip()
            continue
        cols = line.split("\t")
        if len(cols) != 10:
            raise ValueError(
                f"{source}:{lineno}: expected 10 tab-separated columns, got {len(cols)}"
            )
        wid, form = cols[0], cols[1]
        space_after = "SpaceAfter=No" not in cols[9].split("|")
        if "." in wid:  # empty node: not a word of the surface sentence
            continue
        if "-" in wid:
            start, _, end = wid.partition("-")
            if not (start.isdigit() and end.isdigit()) or int(end) < int(start):
                raise ValueError(f"{source}:{lineno}: bad multiword token id {wid!r}")
            mwt_end = int(end)
            n = len(sentence.words)
            sentence.tokens.append(form)
            sentence.token_words.append((n, n + mwt_end - int(start) + 1))
            surface.append((form, space_after))
            continue
        if not wid.isdigit():
            raise ValueError(f"{source}:{lineno}: bad word id {wid!r}")
        if int(wid) != len(sentence.words) + 1:
            raise ValueError(f"{source}:{lineno}: word id {wid} out of sequence")
        sentence.words.append(form)
        sentence.upos.append(cols[TAG_COLUMNS["upos"]])
        sentence.xpos.append(cols[TAG_COLUMNS["xpos"]])
        if int(wid) == mwt_end and not space_after:  # SpaceAfter put on the last word
            surface[-1] = (surface[-1][0], False)
        if int(wid) > mwt_end:  # a plain word is its own surface token
            n = len(sentence.words)
            sentence.tokens.append(form)
            sentence.token_words.append((n - 1, n))
            surface.append((form, space_after))
    if sentence.token_words and sentence.token_words[-1][1] != len(sentence.words):
        raise ValueError(f"{source}:{first_line}: multiword token runs past the sentence end")
    if text is None:
        text = "".join(tok + (" " if space else "") for tok, space in surface).strip()
    sentence.text = text
    return sentence


def iter_conllu(path: str | os.PathLike) -> Iterator[Sentence]:
    """Yield the sentences of a CoNLL-U file (blank-line separated blocks)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CoNLL-U file not found: {path}")
    block: list[str] = []
    block_start = 1
    with path.open(encoding="utf-8") as handle:
        for lineno, raw in enumerate(handle, start=1):
            line = raw.rstrip("\n").rstrip("\r")
            if line.strip():
                if not block:
                    block_start = lineno
                block.append(line)
                continue
            if block:
                sentence = _parse_block(block, str(path), block_start)
                if sentence.words:
                    yield sentence
                block = []
    if block:
        sentence = _parse_block(block, str(path), block_start)
        if sentence.words:
            yield sentence


def read_conllu(path: str | os.PathLike, limit: int | None = None) -> list[Sentence]:
    """All sentences of a CoNLL-U file (the first `limit` when given)."""
    sentences = []
    for sentence in iter_conllu(path):
        if limit is not None and len(sentences) >= limit:
            break
        sentences.append(sentence)
    return sentences
