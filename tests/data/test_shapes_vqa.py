"""data.builders.shapes_vqa (questions from the recorded scenes, VQA v2 layout) and data.core.vqa (the
loader)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from data.builders.shapes import build_shapes_dataset
from data.builders.shapes_scenes import relation
from data.builders.shapes_vqa import TYPES, build
from data.core.parallel import DataError
from data.core.vqa import read_vqa

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shapes_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    build_shapes_dataset(out, n_train=120, n_val=30, n_test=30, size=64, progress=False)
    return out


@pytest.fixture(scope="module")
def vqa_set(shapes_set, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vqa") / "vqa"
    done = subprocess.run(
        [sys.executable, "-m", "data.builders.shapes_vqa", "--out", str(out), "--source", str(shapes_set)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("train: ") and "relation" in done.stdout
    return out


def load(vqa_set: Path, split: str):
    return read_vqa(vqa_set / f"{split}_questions.json", vqa_set / f"{split}_annotations.json",
                    images=vqa_set / f"{split}_images.json")  # fmt: skip


def test_every_type_is_there_with_balanced_answers(vqa_set):
    items = load(vqa_set, "train")
    assert {it.question_type for it in items} == set(TYPES)
    for qtype in TYPES:
        counts = Counter(it.answer for it in items if it.question_type == qtype)
        assert len(set(counts.values())) == 1, (qtype, counts)  # every answer equally often
        assert (
            len(counts) == {"colour": 6, "shape": 5, "count": 3, "exists": 2, "relation": 5, "size": 2}[qtype]
        )


def test_answers_are_true_of_the_recorded_scene(shapes_set, vqa_set):
    scenes = {
        im["imgid"]: im["scene"]["objects"]
        for im in json.loads((shapes_set / "dataset_shapes.json").read_text())["images"]
    }
    for it in load(vqa_set, "val"):
        objects = scenes[it.image_id]
        q = it.question
        if it.question_type == "count":
            assert it.answer == str(len(objects))
        elif it.question_type == "colour":
            shape = q.removeprefix("what colour is the ").removesuffix("?")
            assert [o["colour"] for o in objects if o["shape"] == shape] == [it.answer]
        elif it.question_type == "exists":
            words = q.removesuffix("?").split()
            colour, shape = words[-2], words[-1]
            assert it.answer == (
                "yes" if any(o["colour"] == colour and o["shape"] == shape for o in objects) else "no"
            )
        elif it.question_type == "relation" and q.endswith(" the star?") and q.count(" ") == 4:
            rel = q.removeprefix("what is ").removesuffix(" the star?")
            star = next(o for o in objects if o["shape"] == "star")
            assert [o["shape"] for o in objects if o is not star and relation(o, star) == rel] == [it.answer]
        assert it.answers == [it.answer] * 10 and Path(it.image_path).is_file()


def test_the_same_source_and_seed_give_the_same_files(shapes_set):
    assert build(shapes_set, seed=0) == build(shapes_set, seed=0)
    assert build(shapes_set, seed=0) != build(shapes_set, seed=1)


def test_real_vqa_v2_layout_loads_with_a_coco_file_pattern(tmp_path):
    (tmp_path / "val2014").mkdir()
    (tmp_path / "val2014" / "COCO_val2014_000000000042.jpg").write_bytes(b"")
    question = {"image_id": 42, "question": "What is the man holding?", "question_id": 420}
    (tmp_path / "q.json").write_text(json.dumps({"task_type": "Open-Ended", "questions": [question]}))
    answers = ["umbrella"] * 3 + ["an umbrella", "stick"] + ["umbrella"] * 5
    (tmp_path / "a.json").write_text(json.dumps({"annotations": [{
        "question_id": 420, "image_id": 42, "question_type": "what is the man", "answer_type": "other",
        "multiple_choice_answer": "umbrella",
        "answers": [{"answer": a, "answer_id": i} for i, a in enumerate(answers, 1)],
    }]}))  # fmt: skip
    (item,) = read_vqa(tmp_path / "q.json", tmp_path / "a.json", image_dir=tmp_path / "val2014",
                       image_pattern="COCO_val2014_{image_id:012d}.jpg")  # fmt: skip
    assert item.answers == answers and item.question_type == "what is the man"
    assert item.image_path.endswith("COCO_val2014_000000000042.jpg")


def test_malformed_files_name_the_file_and_the_entry(tmp_path):
    q, a, images = tmp_path / "q.json", tmp_path / "a.json", tmp_path / "images.json"
    (tmp_path / "x.png").write_bytes(b"")
    images.write_text(json.dumps({"1": str(tmp_path / "x.png")}))
    good_q = {"questions": [{"image_id": 1, "question": "what?", "question_id": 7}]}
    good_a = {
        "annotations": [
            {"question_id": 7, "image_id": 1, "multiple_choice_answer": "x", "answers": ["x"] * 10}
        ]
    }

    def attempt(questions, annotations):
        q.write_text(questions if isinstance(questions, str) else json.dumps(questions))
        a.write_text(json.dumps(annotations))
        return read_vqa(q, a, images=images)

    assert len(attempt(good_q, good_a)) == 1
    with pytest.raises(DataError, match=r"q.json: not valid JSON"):
        attempt("{not json", good_a)
    with pytest.raises(DataError, match=r"q.json, question_id 7: missing image_id"):
        attempt({"questions": [{"question": "what?", "question_id": 7}]}, good_a)
    with pytest.raises(DataError, match=r"a.json, question_id 7: missing answers"):
        attempt(good_q, {"annotations": [{"question_id": 7, "image_id": 1, "multiple_choice_answer": "x"}]})
    with pytest.raises(DataError, match=r"q.json, question_id 8: no annotation in .*a.json"):
        attempt({"questions": [{"image_id": 1, "question": "what?", "question_id": 8}]}, good_a)
    with pytest.raises(DataError, match=r"q.json, question_id 7: image_id 2 is not in .*images.json"):
        attempt({"questions": [{"image_id": 2, "question": "what?", "question_id": 7}]}, good_a)
    images.write_text(json.dumps({"1": str(tmp_path / "gone.png")}))
    with pytest.raises(DataError, match=r"question_id 7: its image .*gone.png \(image_id 1\) does not exist"):
        attempt(good_q, good_a)
