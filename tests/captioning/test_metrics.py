"""captioning.captioner.metrics: the COCO caption metrics through pycocoevalcap, nltk BLEU beside them, and
CIDEr-D with fixed document frequencies (SCST's reward) and its cache."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from captioning.captioner import metrics
from captioning.captioner.metrics import CiderD, caption_metrics, cider_d_for, format_metrics, java_available
from seq2seq.training.metrics import nltk_bleu


def words(text: str) -> list[str]:
    return text.split()


# A small fixed set in the COCO style: 4 images, 2-3 references each, no empty hypothesis.
REFS = [
    ["a red circle above a blue square", "a circle over a square", "a red circle and a blue square"],
    ["a small green star", "one green star in the centre"],
    ["two shapes a big cross and a yellow triangle", "a big cross left of a yellow triangle"],
    ["a purple heart", "there is a purple heart", "a heart"],
]
HYPS = ["a red circle above a square", "a green star in the centre", "a big cross and a triangle", "a heart"]
REFERENCES = [[words(r) for r in refs] for refs in REFS]
HYPOTHESES = [words(h) for h in HYPS]


def coco_inputs():
    gts = {i: refs for i, refs in enumerate(REFS)}
    res = {i: [h] for i, h in enumerate(HYPS)}
    return gts, res


def test_caption_metrics_are_pycocoevalcaps_own_scores_on_the_0_100_scale():
    gts, res = coco_inputs()
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    scores = caption_metrics(HYPOTHESES, REFERENCES, meteor=False)
    for n in range(1, 5):
        assert scores[f"bleu{n}"] == pytest.approx(100 * bleu[n - 1], abs=1e-9)
    assert scores["rouge_l"] == pytest.approx(100 * rouge, abs=1e-9)
    assert scores["cider"] == pytest.approx(100 * cider, abs=1e-9)
    assert scores["meteor"] is None
    # the values themselves, so a change of the library or of our inputs shows
    assert scores["bleu1"] == pytest.approx(95.12, abs=0.01)
    assert scores["bleu4"] == pytest.approx(77.36, abs=0.01)
    assert scores["rouge_l"] == pytest.approx(87.90, abs=0.01)
    assert scores["cider"] == pytest.approx(390.76, abs=0.01)


def test_nltk_bleu_is_kept_beside_and_differs_from_cocos_only_for_captions_shorter_than_n():
    scores = caption_metrics(HYPOTHESES, REFERENCES, meteor=False)
    expected = nltk_bleu(HYPOTHESES, REFERENCES)
    for n in range(1, 5):
        assert scores[f"nltk_bleu{n}"] == pytest.approx(expected[f"bleu{n}"], abs=1e-9)
    # the same corpus BLEU (clipped counts, closest reference length) up to n = 2: "a heart" has
    # 2 words; for n = 3, 4 nltk counts it as one n-gram guessed (and missed), COCO as none
    for n in (1, 2):
        assert scores[f"nltk_bleu{n}"] == pytest.approx(scores[f"bleu{n}"], abs=1e-4)
    for n in (3, 4):
        assert scores[f"nltk_bleu{n}"] < scores[f"bleu{n}"] - 0.5
    longer = [h if len(h) >= 4 else words("there is a purple heart") for h in HYPOTHESES]
    both = caption_metrics(longer, REFERENCES, meteor=False)
    for n in range(1, 5):
        assert both[f"nltk_bleu{n}"] == pytest.approx(both[f"bleu{n}"], abs=1e-4)


@pytest.mark.skipif(not java_available(), reason="METEOR runs a Java jar")
def test_meteor_with_java_is_the_libraries_value():
    from pycocoevalcap.meteor.meteor import Meteor

    gts, res = coco_inputs()
    expected, _ = Meteor().compute_score(gts, res)
    scores = caption_metrics(HYPOTHESES, REFERENCES)
    assert scores["meteor"] == pytest.approx(100 * expected, abs=1e-6)
    assert scores["meteor"] == pytest.approx(43.89, abs=0.01)


def test_without_java_meteor_is_skipped_and_says_so(monkeypatch):
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    assert not java_available()
    scores = caption_metrics(HYPOTHESES, REFERENCES)  # nothing fails
    assert scores["meteor"] is None
    line = format_metrics(scores)
    assert "METEOR: needs java" in line and "CIDEr-D" in line and "BLEU-4" in line


def test_cider_d_is_zero_for_an_empty_caption_and_highest_for_a_reference():
    scorer = CiderD.from_references(REFERENCES)
    empty = scorer.scores([[]] * 4, REFERENCES)
    assert np.all(empty == 0.0)
    copy = scorer.scores([refs[0] for refs in REFERENCES], REFERENCES)
    model = scorer.scores(HYPOTHESES, REFERENCES)
    assert np.all(copy >= model) and copy.mean() > model.mean()
    # and the corpus metric on the same footing
    assert caption_metrics([[]] * 4, REFERENCES, meteor=False)["cider"] == 0.0


def test_cider_d_on_the_scored_sets_own_frequencies_is_pycocoevalcaps_cider():
    gts, res = coco_inputs()
    _, expected = Cider().compute_score(gts, res)
    got = CiderD.from_references(REFERENCES).scores(HYPOTHESES, REFERENCES)
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_cider_d_with_training_frequencies_weighs_rare_ngrams_more_and_leaves_them_unchanged():
    train = REFERENCES * 3 + [[words("a red circle")]] * 20  # "red circle" common in training
    scorer = CiderD.from_references(train)
    other = CiderD.from_references(REFERENCES * 3 + [[words("a dull cube")]] * 20)
    size = len(scorer.frequencies)
    hyp_red = [words("a red circle above a square")]
    refs = [[words("a red circle above a blue square")]]
    # what it gets right ("red circle") is common under `scorer`, so it counts less there than
    # what it misses ("blue square"): a lower score than under `other`, where it is rare
    assert scorer.scores(hyp_red, refs)[0] < other.scores(hyp_red, refs)[0] - 0.1
    scorer.scores([words("never seen words here")], refs)
    assert len(scorer.frequencies) == size  # scoring unseen n-grams does not grow the table
    assert scorer.images == len(train)
    # ref_len stays log(training images), whatever the number of captions scored
    one = scorer.scores(hyp_red, refs)[0]
    many = scorer.scores(hyp_red * 5, refs * 5)
    np.testing.assert_allclose(many, one)
    assert math.log(scorer.images) > 0


def test_document_frequencies_are_cached_by_a_digest_of_the_references(tmp_path):
    scorer, hit = cider_d_for(REFERENCES, tmp_path)
    assert not hit
    (path,) = tmp_path.glob("cider_df-*.json")
    data = json.loads(path.read_text())
    assert data["images"] == 4 and data["df"]["a"] == 4.0 and data["df"]["purple heart"] == 1.0
    again, hit = cider_d_for(REFERENCES, tmp_path)
    assert hit and again.frequencies == scorer.frequencies
    np.testing.assert_allclose(again.scores(HYPOTHESES, REFERENCES), scorer.scores(HYPOTHESES, REFERENCES))
    other, hit = cider_d_for(REFERENCES[:3], tmp_path)  # other data: another file
    assert not hit and len(list(tmp_path.glob("cider_df-*.json"))) == 2 and other.images == 3
    path.write_text("{not json")  # a damaged cache is recomputed, not trusted
    fixed, hit = cider_d_for(REFERENCES, tmp_path)
    assert not hit and fixed.frequencies == scorer.frequencies
    assert not list(tmp_path.glob(".*.tmp"))


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="3 hypotheses but 4"):
        caption_metrics(HYPOTHESES[:3], REFERENCES)
    with pytest.raises(ValueError, match="caption 1 has no reference"):
        caption_metrics(HYPOTHESES[:2], [REFERENCES[0], []])


def test_a_failing_meteor_process_is_left_out_with_a_warning_and_not_started_again(monkeypatch):
    import subprocess
    import threading

    from captioning.captioner import metrics

    class Broken:  # what pycocoevalcap's Meteor does when java prints no number back
        def __init__(self):
            self.lock, self.meteor_p = threading.Lock(), subprocess.Popen(["sleep", "30"])
            self.calls = 0

        def compute_score(self, gts, res):
            self.calls += 1
            self.lock.acquire()
            raise ValueError("could not convert string to float: b''")

    broken = Broken()
    monkeypatch.setattr(metrics, "_meteor", broken)
    monkeypatch.setattr(metrics, "_meteor_failed", None)
    hyps, refs = [["a", "red", "circle"]], [[["a", "red", "circle"], ["a", "circle"]]]
    with pytest.warns(UserWarning, match="METEOR failed .ValueError"):
        first = metrics.caption_metrics(hyps, refs, meteor=True)
    second = metrics.caption_metrics(hyps, refs, meteor=True)
    assert first["meteor"] is None and second["meteor"] is None and broken.calls == 1
    assert first["bleu1"] == pytest.approx(100.0) and first["cider"] is not None
    assert broken.meteor_p.poll() is not None and not broken.lock.locked()  # killed, lock free
