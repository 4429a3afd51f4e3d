"""CoNLL-U reader: multiword tokens and empty nodes are not counted twice; spans; errors."""

from __future__ import annotations

import pytest

from training.data.conllu import read_conllu

SAMPLE = """\
# sent_id = s1
# text = I don't know, Bob.
1	I	I	PRON	PRP	_	3	nsubj	_	_
2-3	don't	_	_	_	_	_	_	_	_
2	do	do	AUX	VBP	_	4	aux	_	_
3	n't	not	PART	RB	_	4	advmod	_	_
4	know	know	VERB	VB	_	0	root	_	SpaceAfter=No
4.1	knows	know	VERB	VBZ	_	_	_	4:conj	CopyOf=4
5	,	,	PUNCT	,	_	6	punct	_	_
6	Bob	Bob	PROPN	NNP	_	4	vocative	_	SpaceAfter=No
7	.	.	PUNCT	.	_	4	punct	_	_

# sent_id = s2
1-2	cannot	_	_	_	_	_	_	_	_
1	can	can	AUX	MD	_	0	root	_	_
2	not	not	PART	RB	_	1	advmod	_	SpaceAfter=No
3	!	!	PUNCT	.	_	1	punct	_	_
"""


@pytest.fixture()
def sample(tmp_path):
    path = tmp_path / "sample.conllu"
    path.write_text(SAMPLE, encoding="utf-8")
    return path


def test_multiword_tokens_and_empty_nodes(sample):
    first, second = read_conllu(sample)
    assert first.words == ["I", "do", "n't", "know", ",", "Bob", "."]  # no "don't", no 4.1
    assert first.upos == ["PRON", "AUX", "PART", "VERB", "PUNCT", "PROPN", "PUNCT"]
    assert first.tags("xpos") == ["PRP", "VBP", "RB", "VB", ",", "NNP", "."]
    assert first.tokens == ["I", "don't", "know", ",", "Bob", "."]
    assert first.token_words == [(0, 1), (1, 3), (3, 4), (4, 5), (5, 6), (6, 7)]
    assert first.sent_id == "s1"
    spans = first.word_spans()
    assert [first.text[a:b] for a, b in spans] == ["I", "do", "n't", "know", ",", "Bob", "."]
    # no `# text`: rebuilt from the surface tokens and SpaceAfter=No
    assert second.text == "cannot!"
    assert second.words == ["can", "not", "!"]
    assert second.word_spans() == [(0, 3), (3, 6), (6, 7)]
    with pytest.raises(ValueError, match="tagset"):
        first.tags("lemma")


def test_limit_and_errors(sample, tmp_path):
    assert len(read_conllu(sample, limit=1)) == 1
    with pytest.raises(FileNotFoundError):
        read_conllu(tmp_path / "missing.conllu")
    bad = tmp_path / "bad.conllu"
    bad.write_text("1\tonly\tthree\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.conllu:1: expected 10"):
        read_conllu(bad)
    gap = tmp_path / "gap.conllu"
    gap.write_text(SAMPLE.replace("5\t,\t,", "9\t,\t,"), encoding="utf-8")
    with pytest.raises(ValueError, match="out of sequence"):
        read_conllu(gap)


def test_ewt_counts(shared_data):
    """The published sizes of EWT: 12,544 train sentences, 204,577 words (README)."""
    folder = shared_data / "ud_english_ewt"
    train = read_conllu(folder / "en_ewt-ud-train.conllu")
    assert len(train) == 12544
    assert sum(len(s.words) for s in train) == 204577
    dev = read_conllu(folder / "en_ewt-ud-dev.conllu")
    assert len(dev) == 2001
    assert {t for s in dev for t in s.upos} <= {
        "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART",
        "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X",
    }  # fmt: skip
    for s in dev:  # every word's span spells the word (multiword tokens split exactly)
        assert [s.text[a:b] for a, b in s.word_spans()] == s.words
