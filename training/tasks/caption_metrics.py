"""The captioning task's scorer: coco-caption's BLEU-1..4 and CIDEr, as captioning papers
report them."""

from __future__ import annotations


def coco_scores(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """coco-caption's BLEU-1..4 and CIDEr (x 100) of one caption per image against all of
    that image's references, both normalized by `caption_tokens`."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    from training.data import captions

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} captions for {len(references)} reference lists")
    words = captions.caption_tokens_py([*hypotheses, *(r for refs in references for r in refs)])
    hyps = {i: [" ".join(words[i])] for i in range(len(hypotheses))}
    refs, at = {}, len(hypotheses)
    for i, image_refs in enumerate(references):
        refs[i] = [" ".join(w) for w in words[at : at + len(image_refs)]]
        at += len(image_refs)
    bleu, _ = Bleu(4).compute_score(refs, hyps, verbose=0)
    cider, _ = Cider().compute_score(refs, hyps)
    scores = {f"bleu_{n + 1}": 100.0 * float(b) for n, b in enumerate(bleu)}
    return {**scores, "cider": 100.0 * float(cider)}
