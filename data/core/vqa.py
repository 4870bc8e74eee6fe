"""Reading visual questions in the VQA v2 file format (the shapes VQA set and real VQA v2 alike).

A split is two JSON files: questions (``{"questions": [{"image_id", "question", "question_id"}]}``)
and annotations (``{"annotations": [{"question_id", "image_id", "question_type", "answer_type",
"multiple_choice_answer", "answers": [{"answer", ...}] * 10}]}``), joined on ``question_id``.
Images are found either through a JSON map ``{image_id: path}`` (``images.json``, written by
``data.builders.shapes_vqa``) or through a file-name pattern in a folder, as for COCO:
``read_vqa(q, a, image_dir="val2014", image_pattern="COCO_val2014_{image_id:012d}.jpg")``.

Errors a user can cause name the file and the entry: a file that is not JSON, a missing key, a
question without an annotation, an image that is not there.

Questions are read by :func:`tokenize_question` (checkpoints name it by :data:`TOKENIZER_NAME`) and
batched by :func:`pad_questions`, here rather than in the datamodule so that the predictor
(captioning/vqa/predictor.py) imports no Lightning.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from data.core.parallel import DataError
from data.core.vocab import PAD, UNK

__all__ = ["TOKENIZER_NAME", "VQAItem", "normalize_answer", "pad_questions", "read_vqa", "tokenize_question"]

TOKENIZER_NAME = "vqa-words"  # goes into the checkpoint; see tokenize_question
_WORD = re.compile(r"[\w']+")

_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
            "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}  # fmt: skip
_ARTICLES = {"a", "an", "the"}
_PERIOD = re.compile(r"(?<!\d)\.(?!\d)")
_PUNCT = re.compile(r"[;/\[\]\"{}()=+\\_\-><@`,?!*#%^&$|~:']")


def normalize_answer(answer: str) -> str:
    """As the official VQA script compares answers: lower case, punctuation removed (a period only
    outside a decimal number), number words as digits, no articles, whitespace collapsed."""
    text = _PUNCT.sub("", _PERIOD.sub("", answer.replace("\n", " ").replace("\t", " ").strip().lower()))
    words = [_NUMBERS.get(w, w) for w in text.split() if w not in _ARTICLES]
    return " ".join(words)


def tokenize_question(question: str) -> list[str]:
    """Lower-cased words: "What colour is the star?" -> what, colour, is, the, star."""
    return _WORD.findall(question.lower())


def pad_questions(ids: list[list[int]]) -> tuple[Tensor, Tensor]:
    """Questions as ids -> (B, T) long padded with PAD, and lengths (B,); a question without a
    single word is read as one ``<unk>``."""
    ids = [row or [UNK] for row in ids]
    lengths = torch.tensor([len(row) for row in ids])
    question = torch.full((len(ids), int(lengths.max())), PAD, dtype=torch.long)
    for i, row in enumerate(ids):
        question[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return question, lengths


@dataclass
class VQAItem:
    question_id: int
    image_id: int
    question: str
    question_type: str
    answer: str  # multiple_choice_answer: the most common of the ten
    answers: list[str]  # the ten annotators' answers
    image_path: str


def _load(path: str | Path, key: str) -> list[dict]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror})") from None
    except ValueError as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise DataError(f"{path}: expected a JSON object with a {key!r} list (the VQA v2 layout)")
    return data[key]


def _need(entry: dict, keys: tuple[str, ...], path: Path, index: int) -> None:
    if not isinstance(entry, dict):
        raise DataError(f"{path}, entry {index}: expected an object, found {type(entry).__name__}")
    missing = [k for k in keys if k not in entry]
    if missing:
        which = f"question_id {entry['question_id']}" if "question_id" in entry else f"entry {index}"
        raise DataError(f"{path}, {which}: missing {', '.join(missing)}")


def read_vqa(
    questions: str | Path,
    annotations: str | Path,
    images: str | Path | None = None,
    image_dir: str | Path | None = None,
    image_pattern: str | None = None,
    check_images: bool = True,
) -> list[VQAItem]:
    """The questions of one split with their answers and image files, in the questions file's order.

    `images`: a JSON map {image_id: path}; or `image_dir` + `image_pattern` (``str.format`` with
    ``image_id``). `check_images`: every image file must exist."""
    questions, annotations = Path(questions), Path(annotations)
    if (images is None) == (image_pattern is None):
        raise ValueError("give images (a JSON map image_id -> path) or image_dir + image_pattern")
    paths: dict[str, str] = {}
    if images is not None:
        try:
            paths = json.loads(Path(images).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise DataError(f"{images}: cannot be read as a JSON map image_id -> path ({error})") from None
    by_id: dict[int, dict] = {}
    for i, ann in enumerate(_load(annotations, "annotations")):
        _need(ann, ("question_id", "image_id", "multiple_choice_answer", "answers"), annotations, i)
        by_id[ann["question_id"]] = ann
    items = []
    for i, q in enumerate(_load(questions, "questions")):
        _need(q, ("image_id", "question", "question_id"), questions, i)
        ann = by_id.get(q["question_id"])
        if ann is None:
            raise DataError(f"{questions}, question_id {q['question_id']}: no annotation in {annotations}")
        if images is not None:
            path = paths.get(str(q["image_id"]))
            if path is None:
                where = f"{questions}, question_id {q['question_id']}"
                raise DataError(f"{where}: image_id {q['image_id']} is not in {images}")
        else:
            path = str(Path(image_dir or ".") / image_pattern.format(image_id=q["image_id"]))
        if check_images and not Path(path).is_file():
            raise DataError(
                f"{questions}, question_id {q['question_id']}: its image {path} (image_id {q['image_id']}) "
                "does not exist; place the images there or fix the image folder/pattern"
            )
        answers = [a["answer"] if isinstance(a, dict) else str(a) for a in ann["answers"]]
        items.append(VQAItem(
            q["question_id"], q["image_id"], q["question"], ann.get("question_type", ""),
            ann["multiple_choice_answer"], answers, path,
        ))  # fmt: skip
    return items
