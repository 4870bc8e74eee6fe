"""One loader for every task: `Predictor.from_checkpoint` on checkpoints written by the code before
the layout change (tests/fixtures/legacy, made by make_legacy.py there at commit 58ba4dc) gives the
task's predictor and exactly the outputs the old inference classes gave."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from captioning.captioner.predictor import Captioner
from captioning.vqa.predictor import Answerer
from seq2seq.lm.predictor import LanguageModelPredictor
from seq2seq.predictor import Predictor, checkpoint_task
from seq2seq.training.checkpoint import CheckpointError
from seq2seq.translation.predictor import Translator

LEGACY = Path(__file__).parent / "fixtures" / "legacy"
EXPECTED = json.loads((LEGACY / "expected.json").read_text())
pytestmark = pytest.mark.usefixtures("one_thread_per_module")


def load(name: str) -> Predictor:
    return Predictor.from_checkpoint(LEGACY / f"{name}.ckpt", device="cpu")


@pytest.mark.parametrize(
    "name, task, cls",
    [
        ("translation", "translation", Translator),
        ("lm", "lm", LanguageModelPredictor),
        ("caption_showtell", "captioning", Captioner),
        ("caption_attention", "captioning", Captioner),
        ("vqa", "vqa", Answerer),
    ],
)
def test_an_old_checkpoint_gets_its_tasks_predictor(name, task, cls):
    ckpt = torch.load(LEGACY / f"{name}.ckpt", map_location="cpu", weights_only=True)
    assert "task" not in ckpt["seqcap"]  # written before checkpoints recorded their task
    assert checkpoint_task(ckpt, name) == task
    predictor = load(name)
    assert type(predictor) is cls and predictor.checkpoint == str(LEGACY / f"{name}.ckpt")


def test_old_translation_checkpoint_translates_as_before():
    want = EXPECTED["translation"]
    got = load("translation").translate(
        want["sources"], beam_size=want["beam_size"], alpha=want["alpha"], n_best=want["n_best"]
    )
    assert [[h.text for h in hs] for hs in got] == [[h["text"] for h in hs] for hs in want["outputs"]]
    assert got[0][0].text == "w3 w2 w1"  # it learnt to reverse
    scores = [h.score for hs in got for h in hs]
    assert scores == pytest.approx([h["score"] for hs in want["outputs"] for h in hs], abs=1e-5)


def test_old_language_model_checkpoint_scores_and_samples_as_before():
    want = EXPECTED["lm"]
    lm = load("lm")
    got = lm.score(want["sentences"])
    assert [n for _, n in got] == [n for _, n in want["scores"]]
    assert [lp for lp, _ in got] == pytest.approx([lp for lp, _ in want["scores"]], abs=1e-4)
    s = want["samples"]
    assert lm.generate(num=s["num"], prompt=s["prompt"], max_len=s["max_len"], seed=s["seed"]) == s["texts"]


@pytest.mark.parametrize("kind", ["showtell", "attention"])
def test_old_captioning_checkpoint_captions_as_before(kind):
    want = EXPECTED["captioning"]
    images = [LEGACY / name for name in want["images"]]
    captioner = load(f"caption_{kind}")
    assert captioner.model_kind == kind
    for key, options in (("greedy", {"method": "greedy"}), ("beam3", {"method": "beam", "beam_size": 3})):
        got = captioner.caption(images, **options)
        assert [c.text for c in got] == [t for t, _ in want[kind][key]]
        assert [c.score for c in got] == pytest.approx([s for _, s in want[kind][key]], abs=1e-4)


def test_old_vqa_checkpoint_answers_as_before():
    want = EXPECTED["vqa"]
    got = load("vqa").answer(LEGACY / want["image"], want["questions"], top=3)
    assert [[t for t, _ in a.top] for a in got] == [[t for t, _ in top] for top in want["top3"]]
    probs = [p for a in got for _, p in a.top]
    assert probs == pytest.approx([p for top in want["top3"] for _, p in top], abs=1e-5)
    assert got[2].unknown == ["blorp"]


@pytest.mark.parametrize(
    "cls, name, command",
    [
        (Captioner, "translation", "seqcap translate"),
        (Translator, "vqa", "seqcap answer"),
        (Answerer, "caption_showtell", "seqcap caption"),
        (LanguageModelPredictor, "translation", "seqcap translate"),
        (Translator, "lm", "seqcap generate"),
    ],
)
def test_a_task_predictor_refuses_another_tasks_checkpoint_naming_the_command(cls, name, command):
    path = LEGACY / f"{name}.ckpt"
    with pytest.raises(CheckpointError) as error:
        cls.from_checkpoint(path, device="cpu")
    assert str(path) in str(error.value) and command in str(error.value)


def test_files_that_are_no_seqcap_checkpoint_are_named(tmp_path):
    weights = tmp_path / "weights.pt"
    torch.save({"layer.weight": torch.zeros(2)}, weights)
    text = tmp_path / "notes.ckpt"
    text.write_text("hello\n")
    for path, why in ((weights, "not a seqcap checkpoint"), (text, "not a loadable seqcap checkpoint"),
                      (tmp_path / "absent.ckpt", "no such checkpoint file")):  # fmt: skip
        with pytest.raises(CheckpointError, match=why) as error:
            Predictor.from_checkpoint(path, device="cpu")
        assert str(path) in str(error.value)
