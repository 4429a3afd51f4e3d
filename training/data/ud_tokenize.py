"""A raw-text word tokenizer following UD English EWT conventions, in Python and in-graph.

The tokenizer is a list of regular-expression rewrites that insert spaces (never change
or drop characters other than whitespace), then a split on spaces. It runs in two passes:
a few context rules on the whole sentence (they look at the next word), then the sentence
is cut at whitespace into chunks, and each chunk is rewritten on its own, except that a
chunk holding a URL or an e-mail address keeps that address whole and only what wraps it
(brackets, quotes, trailing punctuation) goes through the rules. RE2 has no lookaround,
so this is how addresses are protected from the splitting rules.

The patterns use only syntax that Python's `re` and RE2 (`tf.strings.regex_replace`) read
the same way: no lookaround, no `\\b` / `\\w` / `\\s` (their Unicode meaning differs),
explicit character classes instead, `\\1`-style group references, and no rewrite pattern
that can match the empty string. `tokenize` (Python) and `tokenize_graph` (core TF ops,
for SavedModel signatures) therefore give the same tokens; tests check it on the EWT dev
set and on random text.

Conventions followed (UD EWT): punctuation split off words (but kept inside numbers,
abbreviations, URLs, e-mail addresses, times and dates); clitics split: `don't` ->
`do n't`, `can't` -> `ca n't`, `I'm` -> `I 'm`, `John's` -> `John 's`, `cannot` ->
`can not`, `gonna` -> `gon na`; misspelled contractions split where unambiguous: `dont`
-> `do nt`, `im` -> `i m`, `thats` -> `that s`, `alot` -> `a lot`, and `its` -> `it s`
before words that never follow the possessive; hyphens, slashes and similar symbols
between words split (not in short forms like `b/c`, `w/o`).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # `tokenize_graph` only: `tokenize` needs no TensorFlow
    import tensorflow as tf

# Whitespace of all kinds becomes an ASCII space; the patterns below then only ever see " ".
_SPACES = (
    "\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
)
_APOS = "'\u2019`"  # ' ’ `
_L = "A-Za-z\u00c0-\u024f"  # letters (ASCII and Latin-1/Extended)
_LN = _L + "0-9"
_TRAIL = ".,;:!?)\\]}\"\u201d\u2019'>*"
_PREFIXES = (
    "e|co|non|pre|post|pro|ex|multi|mid|re|anti|semi|neo|over|sub|cross|intra|inter|counter|"
    "socio|psycho|vice|arch|self|un|bi|tri|uni|mis|out|under|super|ultra|micro|macro"
)
_ABBREVIATIONS = (
    "Mr|Mrs|Ms|Dr|St|Jr|Sr|Prof|Gen|Gov|Sen|Rep|Rev|Lt|Col|Sgt|Capt|Ft|Mt|No|Nos|Vol|vs|etc|"
    "Inc|Ltd|Co|Corp|Bros|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec|Mon|Tue|Wed|Thu|"
    "Fri|Sat|Sun|approx|dept|est|fig|min|max|misc|al|cf|ca|Ave|Blvd|Rd"
)

WHITESPACE = (f"[{_SPACES}]+", " ")

# Rules that need the next word, applied to the whole sentence before it is cut into
# chunks: "its" is split as "it s" (EWT's reading of a misspelled "it's") only before words
# that cannot follow the possessive "its" (train: 74 split, 177 possessive).
CONTEXT_RULES: tuple[tuple[str, str], ...] = (
    (
        "(?i) (it)(s) (not|a|an|the|really|simply|very|definitely|also|just|still|been|"
        "getting|going|gonna|nothing|all|in|for|from|between|like|now|too|ok|okay|about|"
        "always|never|actually|probably|pretty|quite) ",
        " \\1 \\2 \\3 ",
    ),
    # a sentence-final "etc." gives its period to the sentence
    ("(?i) (etc)(\\.) $", " \\1 \\2 "),
)

# A chunk (text between spaces) that is a URL or an e-mail address, possibly wrapped in
# brackets or quotes or followed by punctuation: it stays one token, only the wrapping
# is split off (EWT keeps http://www.x.com/a-b?c=1 and john...@x.com whole).
_URL_BODY = (
    "(?:(?:[hH][tT][tT][pP][sS]?|[fF][tT][pP])://|[wW][wW][wW]\\.)[^ ]*[^ >)\\]\"'.,;:!?]"
    "|[^ @<>()\\[\\]\"']+@[A-Za-z0-9-]+(?:\\.[A-Za-z0-9-]+)+"
)
URL_CHUNK = f"((?:[^ <]*<)?[(\\[\"'\u201c\u2018]*)({_URL_BODY})([>)\\]\"'\u201d\u2019.,;:!?]*)"

RULES: tuple[tuple[str, str], ...] = (
    # Punctuation that is always its own token (runs of ! and ? stay together, also with
    # periods: ?! .? !!! ...?!).
    (
        '(\\.*[!?][.!?]*|;|"|\u201c|\u201d|\\(|\\)|\\[|\\]|\\{|\\}|\u2014|\u2013|<<|>>|\u2026)',
        " \\1 ",
    ),
    # Opening quotes / brackets at the start of a word.
    (f"( )([{_APOS}\u2018]+)([{_LN}])", "\\1\\2 \\3"),
    # Commas, colons not inside numbers or times (1,000 5:30).
    ("([^0-9 ])([,:])", "\\1 \\2"),
    ("([,:])([^0-9 ])", "\\1 \\2"),
    ("([,:])( )", " \\1\\2"),
    # Runs of periods (...) and a final period at the end of a word: split off.
    ("(\\.\\.+)", " \\1 "),
    (f"([^ .])(\\.)([{_TRAIL}]* )", "\\1 \\2\\3"),
    # Re-attach the period of abbreviations and initials (Mr. U.S. p.m. J.).
    (f" ({_ABBREVIATIONS}) \\. ", " \\1. "),
    (f" ([{_L}](\\.[{_L}])+) \\. ", " \\1. "),
    (f" ([{_L}]) \\. ", " \\1. "),
    # Closing quotes after a word.
    (f"([{_LN}.])([{_APOS}\u2019]+ )", "\\1 \\2"),
    # Clitics: n't and 's 're 've 'll 'd 'm (with ' ’ or `).
    (f"([{_L}])([nN][{_APOS}][tT]) ", "\\1 \\2 "),
    (f"([{_LN}])([{_APOS}](s|S|re|RE|ve|VE|ll|LL|d|D|m|M)) ", "\\1 \\2 "),
    ("(?i) (can)(not) ", " \\1 \\2 "),
    ("(?i) (gon|wan)(na) ", " \\1 \\2 "),
    ("(?i) (got)(ta) ", " \\1 \\2 "),
    # Apostrophe-less negations (dont didnt cant isnt ...).
    (
        "(?i) (do|does|did|is|are|ar|was|were|have|has|had|ca|wo|could|would|should|ai)(nt) ",
        " \\1 \\2 ",
    ),
    # Other apostrophe-less contractions EWT splits (only whole words that are never
    # correct spellings of something else: "its", "lets", "your" are left alone).
    ("(?i) (i)(m|ve) ", " \\1 \\2 "),
    ("(?i) (that|what|there|he|else)(s) ", " \\1 \\2 "),
    ("(?i) (you)(re) ", " \\1 \\2 "),
    ("(?i) (out)(ta) ", " \\1 \\2 "),
    ("(?i) (a)(lot) ", " \\1 \\2 "),
    # Symbols between or around words: - / & + = % $ # @ (not inside e-mail addresses).
    # A hyphen is split when a letter is on either side (15-year, al-Qaeda), twice for
    # a-b-c; not between digits (713-853-3989) nor after a prefix (e-mail, non-stop).
    (f"([{_L}])(-)([{_LN}])", "\\1 \\2 \\3"),
    (f"([{_L}])(-)([{_LN}])", "\\1 \\2 \\3"),
    (f"([0-9])(-)([{_L}])", "\\1 \\2 \\3"),
    (f"( (?i:{_PREFIXES})) - ", "\\1-"),
    ("( --+ |--+)", " \\1 "),
    ("([$#])([0-9])", "\\1 \\2"),
    ("([0-9])(%)", "\\1 \\2"),
    ("( [<>~])([0-9])", "\\1 \\2"),
    ("([0-9])([aApP][mM]) ", "\\1 \\2 "),  # 5pm 7:30PM
    (f"([{_L}])(/)([{_L}])", "\\1 \\2 \\3"),
    # ... but not in short forms: b/c w/o I/C w/out, and w/ before a word
    ("( [A-Za-z]) / ([A-Za-z]|[oO][uU][tT]) ", "\\1/\\2 "),
    ("( [wW]) / ", "\\1/ "),
    # Emoticons split above are put back together: :) :( ;-) =)
    ("( [:;=]) (-) ([()]) ", "\\1\\2\\3 "),
    ("( [:;=]) ([()]) ", "\\1\\2 "),
)

_COMPILED = tuple((re.compile(pattern), rewrite) for pattern, rewrite in RULES)
_WHITESPACE = re.compile(WHITESPACE[0])
_CONTEXT = tuple((re.compile(pattern), rewrite) for pattern, rewrite in CONTEXT_RULES)
_URL_CHUNK = re.compile(URL_CHUNK)


def _apply_rules(text: str) -> str:
    text = f" {text} "
    for pattern, rewrite in _COMPILED:
        text = pattern.sub(rewrite, text)
    return text


def tokenize(text: str) -> list[str]:
    """Split one raw sentence into UD-style words (Python; same rules as `tokenize_graph`)."""
    if not isinstance(text, str):
        raise TypeError(f"tokenize expects a str, not {type(text).__name__}")
    text = f" {_WHITESPACE.sub(' ', text)} "
    for pattern, rewrite in _CONTEXT:
        text = pattern.sub(rewrite, text)
    tokens = []
    for chunk in text.split(" "):
        if not chunk:
            continue
        url = _URL_CHUNK.fullmatch(chunk)
        lead, body, trail = url.groups() if url else (chunk, "", "")
        pieces = " ".join([_apply_rules(lead), body, _apply_rules(trail)])
        tokens.extend(token for token in pieces.split(" ") if token)
    return tokens


def _apply_rules_graph(text: tf.Tensor) -> tf.Tensor:
    import tensorflow as tf

    text = tf.strings.join([" ", text, " "])
    for pattern, rewrite in RULES:
        text = tf.strings.regex_replace(text, pattern, rewrite)
    return text


def tokenize_graph(sentences: tf.Tensor) -> tf.RaggedTensor:
    """Tokenize a string tensor [N] into a ragged [N, None] string tensor (core TF ops only).

    Invalid UTF-8 bytes are replaced by U+FFFD first so the regular expressions never fail.
    Like `tokenize`: split on whitespace into chunks; a URL / e-mail chunk keeps its body
    whole (the rules only see what wraps it), every other chunk goes through the rules.
    """
    import tensorflow as tf

    text = tf.strings.unicode_transcode(
        sentences, "UTF-8", "UTF-8", errors="replace", replacement_char=0xFFFD
    )
    text = tf.strings.regex_replace(text, WHITESPACE[0], WHITESPACE[1])
    text = tf.strings.join([" ", text, " "])
    for pattern, rewrite in CONTEXT_RULES:
        text = tf.strings.regex_replace(text, pattern, rewrite)
    chunks = tf.strings.split(text, sep=" ")
    chunks = tf.ragged.boolean_mask(chunks, tf.not_equal(chunks, ""))
    flat = chunks.flat_values
    is_url = tf.strings.regex_full_match(flat, URL_CHUNK)
    whole = f"^(?:{URL_CHUNK})$"  # the groups of the full match, as `re.fullmatch` gives
    empty = tf.zeros_like(flat)
    lead = tf.where(is_url, tf.strings.regex_replace(flat, whole, "\\1"), flat)
    body = tf.where(is_url, tf.strings.regex_replace(flat, whole, "\\2"), empty)
    trail = tf.where(is_url, tf.strings.regex_replace(flat, whole, "\\3"), empty)
    pieces = tf.strings.join([_apply_rules_graph(lead), body, _apply_rules_graph(trail)], " ")
    tokens = chunks.with_flat_values(tf.strings.split(pieces, sep=" ")).merge_dims(1, 2)
    return tf.ragged.boolean_mask(tokens, tf.not_equal(tokens, ""))


def token_spans(text: str, tokens: list[str]) -> list[tuple[int, int]]:
    """Character span (start, end) of each token in `text`, searched in order."""
    spans = []
    pos = 0
    for token in tokens:
        start = text.find(token, pos)
        if start < 0:
            raise ValueError(f"token {token!r} not found in {text!r} after position {pos}")
        pos = start + len(token)
        spans.append((start, pos))
    return spans
