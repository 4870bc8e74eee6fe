"""VQADataModule: vocabularies from the training questions, batches, one feature row per image,
and the real VQA v2 layout (COCO file names, split names) through the same options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from data.builders import shapes_vqa
from data.builders.shapes import build_shapes_dataset
from data.core.parallel import DataError
from data.core.vocab import PAD, SPECIALS
from data.core.vqa import normalize_answer
from data.datamodules.vqa import IGNORE, VQADataModule, tokenize_question


@pytest.fixture(scope="module")
def vqa_root(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("vqa")
    build_shapes_dataset(base / "shapes", n_train=40, n_val=10, n_test=10, size=64, progress=False)
    shapes_vqa.write(base / "questions", shapes_vqa.build(base / "shapes"))
    return base / "questions"


def test_tokenize_question():
    assert tokenize_question("What colour is the STAR?") == ["what", "colour", "is", "the", "star"]
    assert tokenize_question("what's left of the red object?") == [
        "what's",
        "left",
        "of",
        "the",
        "red",
        "object",
    ]


def test_vocabularies_come_from_the_training_questions(vqa_root):
    dm = VQADataModule(str(vqa_root))
    dm.build()
    train = json.loads((vqa_root / "train_questions.json").read_text())["questions"]
    words = {w for q in train for w in tokenize_question(q["question"])}
    assert set(dm.vocab.itos) == set(SPECIALS) | words
    answers = [
        a["multiple_choice_answer"]
        for a in json.loads((vqa_root / "train_annotations.json").read_text())["annotations"]
    ]
    counts = {a: answers.count(a) for a in set(answers)}
    assert dm.answers == sorted(counts, key=lambda a: (-counts[a], a))  # most frequent first
    assert dm.num_answers == len(counts) and dm.vocab_size == len(dm.vocab)
    state = dm.vocab_state()
    assert state["answers"] == dm.answers and state["vocab"] == dm.vocab.itos and state["image_size"] == 224
    # every question's target is its answer's index
    for item, target in zip(dm.items["val"], dm.targets["val"]):
        assert target == IGNORE or dm.answers[target] == normalize_answer(item.answer)


def test_max_answers_leaves_rare_answers_out_of_training_only(vqa_root):
    dm = VQADataModule(str(vqa_root), max_answers=3)
    dm.build()
    n_train = len(json.loads((vqa_root / "train_questions.json").read_text())["questions"])
    assert dm.num_answers == 3 and dm.dropped > 0
    assert len(dm.items["train"]) == n_train - dm.dropped
    assert all(0 <= t < 3 for t in dm.targets["train"])
    n_val = len(json.loads((vqa_root / "val_questions.json").read_text())["questions"])
    assert len(dm.items["val"]) == n_val and IGNORE in dm.targets["val"]  # scored, not trained on


def test_batches_pad_questions_and_carry_the_ten_answers(vqa_root):
    dm = VQADataModule(str(vqa_root), batch_size=8, eval_batch_size=8, image_size=32)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    B = batch["question"].shape[0]
    assert B == 8 and batch["images"].shape == (8, 3, 32, 32)
    for b in range(B):
        n = int(batch["lengths"][b])
        ids = batch["question"][b]
        assert bool((ids[:n] != PAD).all()) and bool((ids[n:] == PAD).all())
        assert dm.vocab.decode(ids[:n].tolist()) == tokenize_question(batch["questions"][b])
        assert len(batch["answers"][b]) == 10
    assert batch["question_ids"] == [it.question_id for it in dm.items["val"][:8]]


def test_features_are_one_row_per_image_shared_by_its_questions(vqa_root, tmp_path):
    calls = []

    def extract(loader, split):  # (N, R=2, F=3): row n holds the image's index n
        n = sum(images.shape[0] for images in loader)
        calls.append((split, n))
        return torch.arange(n, dtype=torch.float32)[:, None, None].expand(n, 2, 3).clone()

    dm = VQADataModule(str(vqa_root), image_size=32, cache_dir=str(tmp_path), eval_batch_size=4)
    assert dm.use_features(extract, "fake", ["train", "val"]) == {"train": False, "val": False}
    assert calls == [("train", len(dm.paths["train"])), ("val", len(dm.paths["val"]))]
    assert len(dm.paths["train"]) < len(dm.items["train"])  # several questions an image, one row
    batch = next(iter(dm.val_dataloader()))
    rows = [dm.image_index["val"][i] for i in range(batch["features"].shape[0])]
    assert torch.equal(batch["features"][:, 0, 0], torch.tensor(rows, dtype=torch.float32))
    assert [dm.paths["val"][r] for r in rows] == batch["paths"] and "images" not in batch
    again = VQADataModule(str(vqa_root), image_size=32, cache_dir=str(tmp_path))
    assert again.use_features(extract, "fake", ["val"]) == {"val": True} and len(calls) == 2


def _coco_fixture(root: Path) -> None:
    """Two VQA v2 splits (train2014, val2014) with COCO-named images, as downloaded."""
    for split, ids in (("train2014", [9, 25]), ("val2014", [42])):
        (root / split).mkdir(parents=True)
        questions, annotations = [], []
        for k, image_id in enumerate(ids):
            Image.new("RGB", (20, 20), (200, 10 * k, 0)).save(
                root / split / f"COCO_{split}_{image_id:012d}.jpg"
            )
            qid = image_id * 1000 + k
            questions.append({"image_id": image_id, "question": "What color is the bus?", "question_id": qid})
            given = ["Red"] * 7 + ["red bus", "orange", "red."]  # as annotators type them
            annotations.append({
                "question_id": qid, "image_id": image_id, "question_type": "what color is the",
                "answer_type": "other", "multiple_choice_answer": "Red.",
                "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1}
                            for j, a in enumerate(given)],
            })  # fmt: skip
        (root / f"v2_OpenEnded_mscoco_{split}_questions.json").write_text(
            json.dumps({"questions": questions})
        )
        (root / f"v2_mscoco_{split}_annotations.json").write_text(json.dumps({"annotations": annotations}))


def test_real_vqa_v2_files_load_through_patterns_and_split_names(tmp_path):
    _coco_fixture(tmp_path)
    dm = VQADataModule(
        str(tmp_path), questions="v2_OpenEnded_mscoco_{split}_questions.json",
        annotations="v2_mscoco_{split}_annotations.json", images=None,
        image_dir=str(tmp_path / "{split}"), image_pattern="COCO_{split}_{image_id:012d}.jpg",
        split_names={"train": "train2014", "val": "val2014", "test": "val2014"}, image_size=32,
    )  # fmt: skip
    dm.setup("fit")
    assert [it.image_path for it in dm.items["train"]] == [
        str(tmp_path / "train2014" / "COCO_train2014_000000000009.jpg"),
        str(tmp_path / "train2014" / "COCO_train2014_000000000025.jpg"),
    ]
    assert dm.answers == ["red"] and len(dm.items["test"]) == 1  # normalised; test read from val2014
    assert dm.items["val"][0].answers[7] == "red bus"
    batch = next(iter(dm.val_dataloader()))
    assert batch["images"].shape == (1, 3, 32, 32) and batch["answer"].tolist() == [0]


def test_missing_splits_and_images_are_named(vqa_root, tmp_path):
    with pytest.raises(DataError, match="train_questions.json: no training questions"):
        VQADataModule(str(tmp_path)).build()
    _coco_fixture(tmp_path / "coco")
    (tmp_path / "coco" / "val2014" / "COCO_val2014_000000000042.jpg").unlink()
    dm = VQADataModule(
        str(tmp_path / "coco"), questions="v2_OpenEnded_mscoco_{split}_questions.json",
        annotations="v2_mscoco_{split}_annotations.json", images=None,
        image_dir=str(tmp_path / "coco" / "{split}"), image_pattern="COCO_{split}_{image_id:012d}.jpg",
        split_names={"train": "train2014", "val": "val2014"},
    )  # fmt: skip
    with pytest.raises(
        DataError,
        match=r"val2014_questions.json, question_id 42000: its image .*COCO_val2014_000000000042.jpg",
    ):
        dm.build()
    with pytest.raises(ValueError, match="max_answers must be an int >= 1"):
        VQADataModule(str(vqa_root), max_answers=0)


def test_bad_image_options_are_named(vqa_root, tmp_path):
    with pytest.raises(DataError, match="images=None, image_pattern=None: give one"):
        VQADataModule(str(vqa_root), images=None)
    with pytest.raises(DataError, match="image_dir='x' is read with image_pattern only"):
        VQADataModule(str(vqa_root), image_dir="x")
    with pytest.raises(DataError, match="split_names has tets; its keys are train, val, test"):
        VQADataModule(str(vqa_root), split_names={"tets": "val2014"})
    _coco_fixture(tmp_path)
    dm = VQADataModule(
        str(tmp_path), questions="v2_OpenEnded_mscoco_{split}_questions.json",
        annotations="v2_mscoco_{split}_annotations.json", images=None,
        image_pattern="COCO_{split}_{id:012d}.jpg", split_names={"train": "train2014"},
    )  # fmt: skip
    with pytest.raises(DataError, match=r"image_pattern 'COCO_\{split\}_\{id:012d\}.jpg': KeyError 'id'"):
        dm.build()
