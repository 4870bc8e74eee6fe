"""Visual questions about the shapes scenes, in the VQA v2 file format.

Usage::

    python -m data.builders.shapes_vqa --out data/corpora/shapes_vqa [--source data/corpora/shapes] [--seed 0]

Reads the recorded scenes of a shapes set (``data.builders.shapes``: ``dataset_shapes.json`` and its images)
and writes, per split (train, val, test), ``<split>_questions.json`` and ``<split>_annotations.json``
in the layout of VQA v2 (``v2_OpenEnded_mscoco_*_questions.json``, ``v2_mscoco_*_annotations.json``):

- questions: ``{"info", "task_type": "Open-Ended", "data_type": "shapes", "data_subtype": split,
  "questions": [{"image_id", "question", "question_id"}]}``;
- annotations: ``{"info", "data_type", "data_subtype", "annotations": [{"question_id", "image_id",
  "question_type", "answer_type", "multiple_choice_answer", "answers": [ten {"answer",
  "answer_confidence", "answer_id"}]}]}``; a synthetic answer is given by all ten "annotators".

``image_id`` is the shapes ``imgid``; the image file is ``<source>/images/<split>_<index>.png``,
written into ``images.json`` beside the questions (``{image_id: path}``), so that the loader maps ids
to files the same way for this set and for real VQA v2 (COCO file names by pattern).

Question types (``question_type``), every answer computed from the scene:

- ``colour``: "what colour is the star?" (only when one object has that shape);
- ``shape``: "what shape is the red object?" (only when one object has that colour);
- ``count``: "how many shapes are there?" (answers ``1``, ``2``, ``3``, digits as in VQA);
- ``exists``: "is there a blue circle?" (``yes``: one of the scene's objects; ``no``: a colour and
  shape that no object has);
- ``relation``: "what is left of the star?", "what is above the red object?" (only when exactly one
  object stands in that relation, by ``data.builders.shapes_scenes.relation``; the answer is its shape);
- ``size``: "what size is the star?" (``small`` or ``large``).

Balanced answers: within each type and split, every answer keeps as many questions as the rarest
one has (drawn with ``--seed``), so a model that ignores the image can do no better than chance on a
type. Deterministic for the same source and seed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path

from data.builders.shapes import JSON_NAME
from data.builders.shapes_scenes import COLOURS, SHAPES, relation
from data.core.corpus_io import CorpusError

TYPES = ("colour", "shape", "count", "exists", "relation", "size")
ANSWER_TYPES = {"colour": "other", "shape": "other", "count": "number", "exists": "yes/no",
                "relation": "other", "size": "other"}  # fmt: skip
RELATIONS = ("above", "below", "left of", "right of")


def _phrase(obj: dict, objects: list[dict]) -> str | None:
    """The shortest phrase naming `obj` alone among `objects`: "the star", "the red object",
    "the red star"; None never happens (no two objects share colour and shape)."""
    if sum(o["shape"] == obj["shape"] for o in objects) == 1:
        return f"the {obj['shape']}"
    if sum(o["colour"] == obj["colour"] for o in objects) == 1:
        return f"the {obj['colour']} object"
    return f"the {obj['colour']} {obj['shape']}"


def candidates(scene: dict, rng: random.Random) -> list[tuple[str, str, str]]:
    """(question type, question, answer) for one scene, every one true of it."""
    objects = scene["objects"]
    out = [("count", "how many shapes are there?", str(len(objects)))]
    for obj in objects:
        if sum(o["shape"] == obj["shape"] for o in objects) == 1:
            out.append(("colour", f"what colour is the {obj['shape']}?", obj["colour"]))
        if sum(o["colour"] == obj["colour"] for o in objects) == 1:
            out.append(("shape", f"what shape is the {obj['colour']} object?", obj["shape"]))
        name = _phrase(obj, objects)
        out.append(("size", f"what size is {name}?", obj["size"]))
        for rel in RELATIONS:
            others = [o for o in objects if o is not obj and relation(o, obj) == rel]
            if len(others) == 1:
                out.append(("relation", f"what is {rel} {name}?", others[0]["shape"]))
    present = {(o["colour"], o["shape"]) for o in objects}
    absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
    for answer, (colour, shape) in (("yes", rng.choice(sorted(present))), ("no", rng.choice(absent))):
        article = "an" if colour[0] in "aeiou" else "a"
        out.append(("exists", f"is there {article} {colour} {shape}?", answer))
    return out


def balanced(questions: list[dict], rng: random.Random) -> list[dict]:
    """Within each question type, as many questions per answer as the rarest answer has."""
    kept = []
    for qtype in TYPES:
        by_answer = defaultdict(list)
        for q in questions:
            if q["question_type"] == qtype:
                by_answer[q["answer"]].append(q)
        if not by_answer:
            continue
        n = min(len(v) for v in by_answer.values())
        for answer in sorted(by_answer):
            kept.extend(rng.sample(by_answer[answer], n))
    return sorted(kept, key=lambda q: (q["image_id"], TYPES.index(q["question_type"]), q["question"]))


def build(source: Path, seed: int = 0) -> dict[str, tuple[dict, dict, dict]]:
    """{split: (questions JSON, annotations JSON, {image_id: image path})} from a shapes set."""
    path = source / JSON_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CorpusError(
            f"{path}: cannot be read ({error}); draw the set with python -m data.builders.shapes"
        ) from None
    by_split = defaultdict(list)
    for image in data.get("images", []):
        if "scene" not in image:
            raise CorpusError(f"{path}: image {image.get('imgid')} has no recorded scene (not a shapes set?)")
        by_split[image["split"]].append(image)
    out = {}
    next_id = 0
    for split in ("train", "val", "test"):
        rng = random.Random(f"{seed}-{split}")
        questions = []
        for image in by_split.get(split, []):
            for qtype, question, answer in candidates(image["scene"], rng):
                questions.append({"image_id": image["imgid"], "question_type": qtype,
                                  "question": question, "answer": answer})  # fmt: skip
        questions = balanced(questions, rng)
        qs, anns = [], []
        for q in questions:
            qid = next_id
            next_id += 1
            qs.append({"image_id": q["image_id"], "question": q["question"], "question_id": qid})
            anns.append({
                "question_id": qid, "image_id": q["image_id"], "question_type": q["question_type"],
                "answer_type": ANSWER_TYPES[q["question_type"]], "multiple_choice_answer": q["answer"],
                "answers": [{"answer": q["answer"], "answer_confidence": "yes", "answer_id": k}
                            for k in range(1, 11)],
            })  # fmt: skip
        info = {"description": f"shapes VQA from {path}, seed {seed}"}
        images = {
            str(im["imgid"]): str(source / im["filepath"] / im["filename"]) for im in by_split.get(split, [])
        }
        out[split] = (
            {
                "info": info,
                "task_type": "Open-Ended",
                "data_type": "shapes",
                "data_subtype": split,
                "questions": qs,
            },
            {"info": info, "data_type": "shapes", "data_subtype": split, "annotations": anns},
            images,
        )
    return out


def write(out: Path, built: dict[str, tuple[dict, dict, dict]], force: bool = False) -> None:
    if out.exists() and any(out.iterdir()) and not force:
        raise CorpusError(
            f"output folder {out} already exists and is not empty; choose another --out or pass --force"
        )
    out.mkdir(parents=True, exist_ok=True)
    for split, files in built.items():
        for name, value in zip(("questions", "annotations", "images"), files):
            tmp = out / f".{split}_{name}.json.tmp"
            tmp.write_text(json.dumps(value))
            os.replace(tmp, out / f"{split}_{name}.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data.builders.shapes_vqa", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--source", default="data/corpora/shapes", help="a shapes set (python -m data.builders.shapes)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="write into a non-empty --out")
    args = parser.parse_args(argv)
    try:
        built = build(Path(args.source), args.seed)
        write(Path(args.out), built, args.force)
    except CorpusError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for split, (questions, answers, _) in built.items():
        counts = Counter(a["question_type"] for a in answers["annotations"])
        by_type = ", ".join(f"{t} {counts[t]}" for t in TYPES)
        print(f"{split}: {len(questions['questions'])} questions ({by_type})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
