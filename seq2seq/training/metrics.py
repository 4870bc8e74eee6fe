"""BLEU: sacreBLEU on detokenized text (the number to report, with its signature) and nltk's
corpus BLEU on tokens (BLEU-1..4, as the captioning literature reports it)."""

from __future__ import annotations

import sacrebleu

BLEU_WEIGHTS = {
    1: (1.0,),
    2: (0.5, 0.5),
    3: (1 / 3, 1 / 3, 1 / 3),
    4: (0.25, 0.25, 0.25, 0.25),
}


def sacre_bleu(hypotheses: list[str], references: list[str] | list[list[str]]) -> tuple[float, str]:
    """Corpus BLEU (0-100) of detokenized hypotheses against one reference each, or several
    (references[i] a list); returns the score and sacreBLEU's signature string."""
    if references and isinstance(references[0], list):
        n = max(len(r) for r in references)
        streams = [[r[k] if k < len(r) else "" for r in references] for k in range(n)]
    else:
        streams = [references]
    metric = sacrebleu.metrics.BLEU()
    result = metric.corpus_score(hypotheses, streams)
    return result.score, str(metric.get_signature())


def nltk_bleu(
    hypotheses: list[list[str]], references: list[list[list[str]]], max_n: int = 4
) -> dict[str, float]:
    """BLEU-1..max_n (0-100) with nltk's corpus_bleu over tokens; references[i] is the list of
    tokenized references of hypothesis i. Standard uniform weights; smoothing method1 only
    changes a score when some n-gram order has no match in the whole corpus."""
    # NLTK (about a second and 80 MB) only here: translation training scores sacreBLEU alone
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

    smooth = SmoothingFunction().method1
    return {
        f"bleu{n}": 100.0
        * corpus_bleu(references, hypotheses, weights=BLEU_WEIGHTS[n], smoothing_function=smooth)
        for n in range(1, max_n + 1)
    }
