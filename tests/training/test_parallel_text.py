"""Parallel text: tokenization (in-graph), detokenization for BLEU, readers and batches."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest
import sacrebleu
import tensorflow as tf

from training.data import parallel_corpus as pc
from training.data import parallel_text as pt


def test_tokenize_splits_punctuation_keeps_numbers_hyphens_and_lowercases_unicode():
    (tokens,) = pt.tokenize_py(['ÜBER d\'Hommes, 3.5 km T-Shirt (x) "Hi"!'], lowercase=True)
    assert tokens == ["über", "d", "'", "hommes", ",", "3.5", "km", "t-shirt", "(", "x", ")",
                      '"', "hi", '"', "!"]  # fmt: skip
    (cased,) = pt.tokenize_py(["Ein Mann fährt."], lowercase=False)
    assert cased == ["Ein", "Mann", "fährt", "."]


def test_tokenize_defined_on_empty_whitespace_and_invalid_utf8():
    assert pt.tokenize_py(["", "   ", "\u202f\t"], lowercase=True) == [[], [], []]
    ragged = pt.tokenize(tf.constant([b"caf\xff ok"]), lowercase=True)
    assert ragged.to_list() == [[b"caf", "\ufffd".encode(), b"ok"]]


@pytest.mark.parametrize("lang", ["en", "de", "fr"])
def test_pure_python_tokens_are_tensorflows_on_multi30k(shared_data, lang):
    """`parallel_corpus.tokenize_text` (`zoo prepare`, no TensorFlow) gives the tokens of
    the SavedModel's `tokenize` on every Multi30k line, cased and lowercased."""
    lines = [
        line
        for split in ("train", "val")
        for line in pc.read_lines(shared_data / "multi30k" / f"{split}.{lang}")
    ]
    assert len(lines) == 30014
    for lowercase in (True, False):
        assert pc.tokenize_texts(lines, lowercase) == pt.tokenize_py(lines, lowercase)


def test_pure_python_tokens_are_tensorflows_on_random_text():
    """Random strings of awkward characters (Unicode spaces and separators, the vertical
    tab, controls, NUL, combining marks, case mappings that change length, final sigma,
    numbers of every kind, astral characters) and of random assigned code points."""
    awkward = list("aZ09 .,-'\"!?()") + [
        "\t", "\n", "\v", "\f", "\r", "\x1c", "\x1f", "\x85", "\xa0", "\u2028", "\u2029",
        "\u3000", "\u200b", "\u202f", "\u0301", "\u0345", "\x00", "\ufffd", "İ", "Σ", "ς",
        "ß", "ẞ", "ﬁ", "Ǆ", "ŉ", "ı", "Å", "Ω", "K", "٣", "²", "Ⅻ", "😀", "東", "‐", "’",
    ]  # fmt: skip
    rng = np.random.default_rng(0)
    assigned = [
        chr(c)
        for c in rng.integers(1, 0x3FFFF, size=20000)
        if not 0xD800 <= c <= 0xDFFF and unicodedata.category(chr(c)) != "Cn"
    ]
    texts = ["".join(rng.choice(awkward, size=rng.integers(0, 25))) for _ in range(3000)]
    texts += ["".join(rng.choice(assigned + awkward[:8], size=12)) for _ in range(3000)]
    texts += ["1.2.3", "1 . 2", "3,5,7", "a.1", "1..2", "ΣΟΦΟΣ ΟΣ Σ", "x1,2y", "A\x00B C"]
    for lowercase in (True, False):
        want = pt.tokenize_py(texts, lowercase)
        got = pc.tokenize_texts(texts, lowercase)
        assert [(t, a, b) for t, a, b in zip(texts, got, want, strict=True) if a != b] == []


def test_tokenize_in_graph_equals_eager():
    fn = tf.function(
        lambda s: pt.tokenize(s, True).to_tensor(""),
        input_signature=[tf.TensorSpec([None], tf.string)],
    )
    texts = ["A Man's hat.", "Zwei Männer, 1,000 Büsche"]
    graph = [[t.decode() for t in row if t] for row in fn(tf.constant(texts)).numpy()]
    assert graph == pt.tokenize_py(texts, True)


@pytest.mark.parametrize("lang", ["en", "de", "fr"])
def test_detokenize_inverts_tokenize_on_multi30k_val(shared_data, lang):
    lines = pt.read_lines(shared_data / "multi30k" / f"val.{lang}")
    assert len(lines) == 1014
    back = pt.detokenize_py(pt.tokenize_py(lines, lowercase=False))
    exact = np.mean([a.strip() == b for a, b in zip(lines, back, strict=True)])
    assert exact > 0.98, exact
    assert sacrebleu.corpus_bleu(back, [lines]).score > 99.5


def test_detokenize_joins_apostrophes_and_punctuation():
    assert pt.detokenize_py([["A", "woman", "'", "s", "hat", "(", "red", ")", "."], []]) == [
        "A woman's hat (red).",
        "",
    ]


def test_read_parallel_checks_alignment(tmp_path):
    (tmp_path / "train.en").write_text("a\nb\n", encoding="utf-8")
    (tmp_path / "train.de").write_text("x\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line-aligned"):
        pt.read_parallel(tmp_path / "train.en", tmp_path / "train.de")
    (tmp_path / "train.de").write_text("x\ny\n", encoding="utf-8")
    assert pt.read_parallel(tmp_path / "train.en", tmp_path / "train.de") == (
        ["a", "b"],
        ["x", "y"],
    )
    assert pt.find_split(tmp_path, "train", "en", "de") == (
        tmp_path / "train.en",
        tmp_path / "train.de",
    )
    assert pt.find_split(tmp_path, "val", "en", "de") is None


def test_find_split_in_shared_multi30k(shared_data):
    src, tgt = pt.find_split(shared_data, "train", "en", "fr")
    assert src.name == "train.en" and tgt.name == "train.fr"


def test_make_dataset_teacher_forcing_layout():
    ds = pt.make_dataset([[5, 6, 2], [7, 2]], [[10, 11, 12], [13]], 4, bos_id=2, eos_id=3,
                         shuffle=False)  # fmt: skip
    batches = list(ds)
    rows = {}
    for x, y, w in batches:
        for s, ti, to, wt in zip(x["source_ids"].numpy(), x["target_in"].numpy(), y.numpy(),
                                 w.numpy(), strict=True):  # fmt: skip
            rows[tuple(s[s > 0])] = (ti, to, wt)
    ti, to, wt = rows[(5, 6, 2)]
    assert ti.tolist()[:4] == [2, 10, 11, 12] and to.tolist()[:4] == [10, 11, 12, 3]
    ti, to, wt = rows[(7, 2)]
    assert ti.tolist()[:2] == [2, 13] and to.tolist()[:2] == [13, 3]
    assert wt.tolist() == [1.0, 1.0] + [0.0] * (len(wt) - 2)
    with pytest.raises(ValueError):
        pt.make_dataset([], [], 4, 2, 3, shuffle=False)


def test_batch_count_matches_the_bucketed_dataset():
    rng = np.random.default_rng(0)
    sources = [list(range(1, n + 1)) for n in rng.integers(1, 60, size=300)]
    targets = [list(range(1, n + 1)) for n in rng.integers(1, 60, size=300)]
    ds = pt.make_dataset(sources, targets, 16, bos_id=2, eos_id=3, shuffle=True)
    batches = sum(1 for _ in ds)
    assert batches == pt.batch_count(sources, targets, 16)
    assert batches > 300 // 16  # each bucket ends with its own partial batch
