"""VQA accuracy (Antol et al. 2015, as the official VQA v2 evaluation script computes it).

An answer counts as right when at least 3 of the 10 annotators gave it: for each of the ten
leave-one-annotator-out subsets of nine, ``min(#annotators in the subset who gave it / 3, 1)``,
averaged over the ten subsets::

    acc(a) = 1/10 * sum_i min(#{j != i : a_j = a} / 3, 1)

So an answer given by 3 annotators scores 0.9 (7 subsets keep all three, 3 keep two: 7 * 1 + 3 *
2/3 = 9), by 2 scores 0.6, by 1 scores 0.3, and by 4 or more 1.0. Answers are compared after the
script's normalisation (data.core.vqa.normalize_answer, shared with the answer vocabulary): lower case,
punctuation removed (a period only outside a decimal number), number words zero..ten as digits, the
articles a, an, the dropped, whitespace collapsed. Where this differs from the official script
(on real VQA v2 answers, scores can differ in such cases): its table of contractions ("dont" ->
"don't") is left out, since no shapes answer has one; punctuation is always deleted, where the
script puts a space for some marks between words ("yes/no" -> "yes no"); and both the prediction
and the ten answers get the whole normalisation, where the script gives the annotators' answers
only the punctuation step.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from data.core.vqa import normalize_answer

__all__ = ["normalize_answer", "vqa_accuracy", "vqa_scores"]


def vqa_accuracy(predicted: str, answers: Sequence[str]) -> float:
    """One question: `predicted` against its (ten) annotators' `answers`, in [0, 1]."""
    if not answers:
        raise ValueError("a question needs its annotators' answers")
    guess = normalize_answer(predicted)
    given = [normalize_answer(a) for a in answers]
    matches = sum(g == guess for g in given)
    # leaving annotator i out leaves `matches` or `matches - 1` matching answers
    return sum(min((matches - (g == guess)) / 3.0, 1.0) for g in given) / len(given)


def vqa_scores(predictions: Iterable[tuple[str, Sequence[str], str]]) -> dict[str, float]:
    """(predicted answer, annotators' answers, question type) triples -> accuracy in percent,
    ``overall`` and one entry per question type."""
    total, by_type = [], defaultdict(list)
    for predicted, answers, qtype in predictions:
        acc = vqa_accuracy(predicted, answers)
        total.append(acc)
        by_type[qtype].append(acc)
    scores = {"overall": 100.0 * sum(total) / max(len(total), 1)}
    scores.update({t: 100.0 * sum(v) / len(v) for t, v in sorted(by_type.items())})
    return scores
