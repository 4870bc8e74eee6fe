"""VQA accuracy: the 3-of-10 rule averaged over the ten leave-one-out subsets, by hand."""

from __future__ import annotations

import pytest

from captioning.vqa.metrics import normalize_answer, vqa_accuracy, vqa_scores


@pytest.mark.parametrize(
    "given, expected",
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_an_answer_given_by_k_of_ten_annotators(given, expected):
    # k matching: leaving out one of them (k subsets) leaves k-1, leaving out another leaves k
    answers = ["red"] * given + ["blue"] * (10 - given)
    assert vqa_accuracy("red", answers) == pytest.approx(expected)


def test_by_hand_for_three_matches():
    # 3 of 10 say "2": 3 subsets keep two of them (2/3 each), 7 keep all three (1 each) -> 0.9
    assert vqa_accuracy("2", ["2", "2", "2", "3", "3", "3", "3", "4", "4", "1"]) == pytest.approx(
        (3 * 2 / 3 + 7) / 10
    )


def test_answers_are_normalised_as_the_official_script_does():
    assert normalize_answer("  The Two dogs. ") == "2 dogs"
    assert normalize_answer("yes!") == "yes" and normalize_answer("2.5") == "2.5"
    assert (
        vqa_accuracy("two", ["2"] * 10) == 1.0
        and vqa_accuracy("an umbrella", ["umbrella"] * 3 + ["x"] * 7) == 0.9
    )


def test_scores_overall_and_per_question_type():
    scores = vqa_scores(
        [("red", ["red"] * 10, "colour"), ("blue", ["red"] * 10, "colour"), ("3", ["3"] * 10, "count")]
    )
    assert scores == pytest.approx({"overall": 100 * 2 / 3, "colour": 50.0, "count": 100.0})
