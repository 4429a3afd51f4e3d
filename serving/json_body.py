"""JSON request bodies, shared by TF Serving's REST API (json_tensor) and the Open Inference
Protocol's (v2): the nesting-depth check done before parsing, the conversion of parsed JSON
numbers to a tensor's dtype with range checks, and TF Serving's `NaN` / `Infinity` tokens in
responses.

The depth check reads the raw bytes in linear time without recursion, so no parser (orjson,
the stdlib fallback) and no numpy conversion ever sees a body nested deeper than
--max_json_depth. It also notes the body's longest string, which bounds what `np.asarray`
can allocate when a numeric input holds a string (numpy pads every element to the longest
one): a numeric input is converted directly only when that bound is small; otherwise its
leaves are type-checked first, which refuses strings before numpy pads anything.

Arrays are compared with np.equal and the like, never `==`: atheris 2.3 (fuzz/) leaks the
array an instrumented `==` returns, which grows a fuzzing process by gigabytes.
"""

from __future__ import annotations

import functools
import itertools
import re
import secrets

import numpy as np
import orjson

from serving import limits

# brackets and quotes, and the letters of `true` / `false` that no number has
_NOT_STRUCTURAL = bytes(c for c in range(256) if c not in b'[]{}"tf')
_BRACKET_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 / -1 as int8
_CHUNK = 1 << 20

#: the widest `str()` numpy gives a number when a list mixes numbers and strings ('<U32')
_NUMBER_CHARS = 32
#: bytes np.asarray may allocate per body byte before the leaf types must be checked first
_PAD_FACTOR = 64
#: up to this many quotes, strings are found with bytes.split / bytes.find rather than numpy
_FEW_QUOTES = 64


class BodyScan:
    """What the pre-parse scan learnt about a JSON body: its size and nesting depth, and
    (computed when first asked) its longest string."""

    def __init__(self, body: bytes, depth: int, quotes: int, escapes: bool, literals: bool):
        self._body = body
        self._quotes = quotes
        self._escapes = escapes
        self.size = len(body)
        self.depth = depth
        #: whether `true` or `false` (or `Infinity`) may stand outside its strings
        self.may_hold_booleans = literals

    def __repr__(self) -> str:
        return f"BodyScan(size={self.size}, depth={self.depth})"

    @functools.cached_property
    def longest_string(self) -> int:
        """Bytes of the longest string token, escapes included (so at least its characters)."""
        if not self._escapes and self._quotes <= _FEW_QUOTES:
            # a few keys around numbers, the common case: a memchr per quote
            longest, find, pos = 0, self._body.find, -1
            for _ in range(self._quotes // 2):
                start = find(b'"', pos + 1)
                pos = find(b'"', start + 1)
                longest = max(longest, pos - start - 1)
            return longest
        arr = np.frombuffer(self._body, np.uint8)
        quotes = np.flatnonzero(np.equal(arr, 0x22))
        if len(quotes) and self._escapes:
            quotes = _unescaped(arr, quotes)
        pairs = len(quotes) // 2
        return int((quotes[1 : 2 * pairs : 2] - quotes[0 : 2 * pairs : 2]).max(initial=1)) - 1

    def numpy_may_judge(self, count: int, family: str) -> bool:
        """Whether np.asarray may discover the JSON types of `count` numbers of this body
        (the fast path) rather than their types being checked first: when it cannot pad
        strings to a huge size, and, for numbers, when no boolean can hide among them (numpy
        makes [1, true] an int array)."""
        if family != "b" and self.may_hold_booleans:
            return False
        return self.padding_safe(count)

    def padding_safe(self, count: int) -> bool:
        """Whether `np.asarray` on `count` elements of this body stays within a small
        multiple of its size even if one element is a string (numpy's fixed-width strings
        cost 4 bytes a character for every element)."""
        budget = _PAD_FACTOR * max(self.size, 1)
        if count * 4 * max(self.size, _NUMBER_CHARS) <= budget:
            return True
        return count * 4 * max(self.longest_string, _NUMBER_CHARS) <= budget


def _unescaped(arr: np.ndarray, quotes: np.ndarray) -> np.ndarray:
    """The positions in `quotes` not escaped by an odd run of backslashes just before them."""
    backslashes = np.flatnonzero(np.equal(arr, 0x5C))
    starts = np.flatnonzero(np.not_equal(np.diff(backslashes, prepend=-2), 1))
    ends = np.append(starts[1:], len(backslashes)) - 1
    run_end, run_len = backslashes[ends], ends - starts + 1
    i = np.minimum(np.searchsorted(run_end, quotes - 1), len(run_end) - 1)
    escaped = np.equal(run_end[i], quotes - 1) & np.equal(run_len[i] % 2, 1)
    return quotes[~escaped]


def scan(body: bytes) -> BodyScan:
    """The nesting depth of `body` (arrays and objects), in linear time, without parsing.

    Exact for valid JSON; for anything else it is only what the parser is then shown, and
    the parser refuses it. Escaped backslashes and quotes are dropped first (left to right,
    as a JSON parser pairs them), so every quote left opens or closes a string; then only
    the brackets and quotes are kept (one C pass), and the brackets inside strings dropped.
    The same pass notes whether `true` or `false` may appear outside strings.
    """
    if not isinstance(body, bytes):
        body = bytes(body)
    plain = body
    if b"\\" in body:
        plain = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = plain.translate(None, _NOT_STRUCTURAL)
    quotes = structure.count(b'"')
    if 0 < quotes <= _FEW_QUOTES:  # drop what lies between quotes
        structure = b"".join(structure.split(b'"')[::2])
    elif quotes:  # the same without a piece per string: inside one, the quotes' parity is odd
        kept = np.frombuffer(structure, np.uint8)
        is_quote = np.equal(kept, 0x22)
        structure = kept[~(np.logical_xor.accumulate(is_quote) | is_quote)].tobytes()
    literals = b"t" in structure or b"f" in structure
    steps = structure.translate(_BRACKET_STEP, b"tf")
    opened = len(steps) - steps.count(b"\xff")
    depth = _max_depth(steps) if opened > 1 else opened
    return BodyScan(body, depth, quotes, plain is not body, literals)


def _max_depth(steps: bytes) -> int:
    """The highest running sum of `steps` (int8 +1 / -1), a chunk at a time so that the
    int32 sums cost a few MB whatever the body's size."""
    values = np.frombuffer(steps, np.int8)
    depth = deepest = 0
    for start in range(0, len(values), _CHUNK):
        sums = np.cumsum(values[start : start + _CHUNK], dtype=np.int32)
        deepest = max(deepest, depth + int(sums.max()))
        depth += int(sums[-1])
    return deepest


def check_depth(body: bytes) -> BodyScan:
    """`scan(body)`, refused with INVALID_ARGUMENT when nested deeper than --max_json_depth."""
    result = scan(body)
    lim = limits.current()
    if result.depth > lim.max_json_depth:
        raise lim.exceeded("max_json_depth", "the nesting depth of the JSON body", result.depth)
    return result


def nested_shape(value, max_rank: int) -> list[int]:
    """The dims of a nested list, read along its first elements (O(rank)); a list is only
    rectangular if np.asarray agrees. Stops after `max_rank + 1` dims."""
    shape = []
    while isinstance(value, list) and len(shape) <= max_rank:
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


class Mismatch(ValueError):
    """A JSON value that does not fit a tensor's dtype.

    kind: "type" (the message completes "got ..."), "ragged" or "range" (the message says
    what is out of which range).
    """

    def __init__(self, message: str, kind: str = "type"):
        super().__init__(message)
        self.kind = kind


_RAGGED = "a ragged list: every row must have the same shape"


_TYPE_WORDS = {
    str: "strings",
    dict: "objects",
    type(None): "null",
    bool: "booleans",
    float: "non-integer numbers",
    int: "numbers",
}
_ALLOWED = {"f": {int, float}, "i": {int}, "b": {bool}}
_KIND_WORDS = {
    "U": "strings",
    "O": "mixed values, null, or integers beyond 64 bits",
    "f": "non-integer numbers",
    "i": "numbers",
    "u": "numbers",
    "b": "booleans",
}


def _check_leaf_types(value, rank: int, family: str) -> None:
    """Refuse (Mismatch) leaves of the wrong JSON type, level by level, before numpy sees them."""
    level = [value]
    for _ in range(rank):
        types = set(map(type, level))
        if types != {list}:
            raise Mismatch(_RAGGED, "ragged")
        level = list(itertools.chain.from_iterable(level))
    bad = set(map(type, level)) - _ALLOWED[family]
    if bad:
        raise Mismatch(_TYPE_WORDS.get(min(bad, key=str), "values of another type"))


def numeric_array(value, target: np.dtype, family: str, types_checked: bool) -> np.ndarray:
    """Parsed JSON (a number, a bool, or nested lists of them) as an array of `target`.

    family: "f" (any number, into a float dtype), "i" (integers, into an integer dtype) or "b"
    (booleans). Raises Mismatch when the values are of the wrong JSON type, ragged, or out of
    the range of `target` (an integer outside its min..max, or a finite number too large
    for a float dtype). types_checked: the caller has established that np.asarray cannot
    pad strings to a huge size (BodyScan.padding_safe); when False the leaves are
    type-checked first.
    """
    if not types_checked:
        _check_leaf_types(value, len(nested_shape(value, 64)), family)
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        raise Mismatch(_RAGGED, "ragged") from None
    except OverflowError:  # integers beyond uint64 / int64 (numpy 2)
        raise Mismatch(f"integers out of range for {target}", "range") from None
    if array.size == 0:
        return array.astype(target)
    kind = array.dtype.kind
    ok = {"f": "fiu", "i": "iu", "b": "b"}[family]
    if kind not in ok:
        raise Mismatch(_KIND_WORDS.get(kind, array.dtype.name))
    if array.dtype == target:
        return array
    if family == "i":
        info = np.iinfo(target)
        if int(array.min()) < info.min or int(array.max()) > info.max:
            raise Mismatch(f"integers out of range for {target} ({info.min}..{info.max})", "range")
        return array.astype(target)
    if family == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            out = array.astype(target)
        if not np.isfinite(out).all() and (np.isfinite(array) & ~np.isfinite(out)).any():
            raise Mismatch(f"numbers out of range for {target}", "range")
        return out
    return array.astype(target)


# ---- responses --------------------------------------------------------------------------------
def has_nonfinite(array: np.ndarray) -> bool:
    """Whether a float array (or numpy scalar) holds NaN or +-Infinity; False for other dtypes."""
    return (
        getattr(array, "dtype", None) is not None
        and array.dtype.kind == "f"
        and not bool(np.isfinite(array).all())
    )


def nonfinite_json(value, flat: np.ndarray, option: int = 0) -> bytes:
    """orjson's text for `value` (numbers only) with each `null` orjson writes for a NaN or
    +-Infinity written as TF Serving's RapidJSON does: `NaN`, `Infinity`, `-Infinity`.

    flat: the same numbers in the order orjson writes them (row-major).
    """
    text = orjson.dumps(value, option=option)
    bad = flat[~np.isfinite(flat)]
    tokens = np.where(
        np.isnan(bad), b"NaN", np.where(np.greater(bad, 0), b"Infinity", b"-Infinity")
    )
    pieces = text.split(b"null")
    if len(pieces) != len(bad) + 1:  # not numbers only: never for the arrays we are given
        raise ValueError("nonfinite_json needs a value of numbers only")
    out: list[bytes] = [b""] * (2 * len(bad) + 1)
    out[0::2] = pieces
    out[1::2] = tokens.tolist()
    return b"".join(out)


class Splicer:
    """Pre-serialised JSON fragments, each standing in a payload as a placeholder string and
    spliced into orjson's output in its place (orjson can write neither NaN nor Infinity).

    The placeholders carry a random nonce, so no string a model outputs can forge one.
    """

    def __init__(self):
        self._nonce = secrets.token_hex(8)
        self._fragments: list[bytes] = []

    def add(self, raw: bytes) -> str:
        """The placeholder to put in the payload where `raw` belongs."""
        self._fragments.append(raw)
        return f"@@zoo-raw-{self._nonce}-{len(self._fragments) - 1}@@"

    def dumps(self, payload, option: int = 0) -> bytes:
        """orjson.dumps(payload) with the placeholders replaced by their fragments."""
        text = orjson.dumps(payload, option=option)
        if not self._fragments:
            return text
        pattern = re.compile(rb'"@@zoo-raw-' + self._nonce.encode() + rb'-(\d+)@@"')
        return pattern.sub(lambda m: self._fragments[int(m[1])], text)
